"""Evaluators: held-out scoring, legality, strength (ladder, matching, centipawn loss), openings, CLI."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import chess
import pytest
import torch

from chessdt import cli
from chessdt.arena import GameRecord, Opponent, read_game_log
from chessdt.config import DataConfig, EvalConfig
from chessdt.engine import DEBIAN_STOCKFISH
from chessdt.errors import UserError
from chessdt.evals import Subject, from_dict, jsonable, model_subjects
from chessdt.evals import legality as legality_mod
from chessdt.evals import strength as strength_mod
from chessdt.evals.heldout import (HeldOutGame, band_label, band_of, default_source, load_games, scored_moves,
                                   teacher_forced_logits)
from chessdt.evals.legality import evaluate_legality, played_legality, score_legality
from chessdt.evals.openings import (OpeningsResult, evaluate_openings, line_stats, played_distribution,
                                    repeated_prompt)
from chessdt.evals.strength import (StrengthResult, centipawn_loss, evaluate_strength, ladder_result,
                                    ladder_specs, move_matching, opening_lines, play_ladder)
from chessdt.players import MoveStats, RandomPlayer, Sampling, StockfishPlayer
from chessdt.prepare import prepare
from chessdt.tokenizer import NUM_MOVES, Vocab

VOCAB_FOR_REASONS = Vocab()
from conftest import random_game, random_pgn
from fake_uci import script
from tiny_policy import tiny_policy

HAVE_STOCKFISH = shutil.which("stockfish") is not None or os.access(DEBIAN_STOCKFISH, os.X_OK)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pgn_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("heldout") / "games.pgn"
    path.write_text(random_pgn(40, seed=100, max_plies=90))
    return path


@pytest.fixture(scope="module")
def games(pgn_file: Path) -> list[HeldOutGame]:
    return load_games(pgn_file, 40)


def small_cfg(**kw: object) -> EvalConfig:
    base: dict[str, object] = dict(ratings=(1200, 1600, 2000), legality_positions=300, legality_selfplay=2,
                                   max_plies=40, ladder=("random", "1350"), ladder_games=2, calibration_games=2,
                                   matching_games=20, cpl_positions=4, cpl_nodes=10, ladder_nodes=5,
                                   openings_games=6, openings_vs_games=4, openings_opponent="random",
                                   repeat_samples=20, batch_size=8, workers=1, match_games=4)
    base.update(kw)
    return EvalConfig(**base)  # type: ignore[arg-type]


# -- held-out games ---------------------------------------------------------------------------------------
def test_load_games_from_pgn_and_prepared(tmp_path: Path, pgn_file: Path, games: list[HeldOutGame]) -> None:
    assert len(games) == 40
    first = random_game(100, max_plies=90)
    assert games[0].moves == tuple(first.mainline_moves())
    assert games[0].white == int(first.headers["WhiteElo"]) and games[0].result == first.headers["Result"]
    prepare([str(pgn_file)], tmp_path / "data", DataConfig(val_fraction=0.5, min_plies=2), workers=1, progress=False)
    val = load_games(tmp_path / "data", 1000)
    assert 5 <= len(val) < 40
    by_moves = {g.moves: g for g in games}
    for g in val:
        original = by_moves[g.moves]  # every val game is one of the PGN games, moves intact
        assert original.white is not None and g.white == original.white // 100 * 100 + 50  # bucket middle
    assert band_of(1550, 1600, 200) and not band_of(1700, 1600, 200) and band_label(1600, 200) == "1500-1699"


def test_default_source_prefers_eval_games(tmp_path: Path) -> None:
    from chessdt.config import Config

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text("{}")
    cfg = Config(data=DataConfig(prepared=str(tmp_path / "data")))
    ckpt = tmp_path / "run" / "checkpoints" / "best"
    assert default_source(cfg, ckpt) == tmp_path / "data"
    assert default_source(Config(eval=EvalConfig(games="x.pgn")), ckpt) == Path("x.pgn")
    assert default_source(Config(), ckpt) is None


def test_teacher_forcing_matches_full_recompute(games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=32)
    prompts = [policy.prompt(g.white, g.black, g.result) for g in games[:3]]
    for i, logits in teacher_forced_logits(policy, games[:3], prompts, batch_size=2):
        g = games[i]
        assert logits.shape == (scored_moves(policy, g), NUM_MOVES) == (min(len(g.moves), 30), NUM_MOVES)
        for j in (0, 1, len(logits) - 1):
            ref = policy.logits_full(g.board(j), prompts[i])
            assert torch.allclose(logits[j], ref, atol=1e-4)


# -- legality -------------------------------------------------------------------------------------------------
def _rigged_logits(legal_value: float, illegal_value: float):  # noqa: ANN202
    def fake(policy, games, prompts, batch_size=16):  # noqa: ANN001, ANN202
        for i, g in enumerate(games):
            n = scored_moves(policy, g)
            logits = torch.full((n, NUM_MOVES), illegal_value)
            board = chess.Board()
            for j in range(n):
                logits[j, [policy.vocab.encode_move(m) for m in board.legal_moves]] = legal_value
                board.push(g.moves[j])
            yield i, logits
    return fake


def test_legality_accounting_on_rigged_models(monkeypatch: pytest.MonkeyPatch, games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    monkeypatch.setattr(legality_mod, "teacher_forced_logits", _rigged_logits(0.0, -40.0))
    overall, by_ply, by_band, used, reasons = score_legality(policy, games, positions=250)
    assert reasons == {}  # every top-1 pick legal: nothing to explain
    assert overall.positions == 250 and sum(c.positions for c in by_ply) == sum(c.positions for c in by_band) == 250
    assert overall.top1_legal == overall.sampled_legal == 1.0 and overall.illegal_mass < 1e-9
    assert used == len({i for i in range(len(games)) if sum(min(len(g.moves), 256) for g in games[:i]) < 250})
    monkeypatch.setattr(legality_mod, "teacher_forced_logits", _rigged_logits(-40.0, 0.0))
    overall, _, _, _, reasons = score_legality(policy, games, positions=100)
    assert overall.top1_legal == overall.sampled_legal == 0.0 and overall.illegal_mass > 0.999
    assert sum(reasons.values()) == 100  # every position's illegal pick has one reason


def test_legality_on_a_tiny_model(games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    result = evaluate_legality(policy, games, small_cfg())
    assert result.overall.positions == 300 and 0 <= result.overall.top1_legal <= 1
    assert sum(result.illegal_top1.values()) == round(300 * (1 - result.overall.top1_legal))
    assert "why the top-1 move was illegal" in result.format() or result.overall.top1_legal == 1
    assert [c.group for c in result.by_ply][:2] == ["0-9", "10-19"]
    for p in result.played:
        assert p.games == 2 and p.per_game == p.illegal / 2 and 0 <= p.illegal <= p.moves
    # by hand on one game: full recomputation at every position
    g = games[0]
    prompt = policy.prompt(g.white, g.black, g.result)
    top1, mass, close = [], [], 0
    for j in range(len(g.moves)):
        board = g.board(j)
        probs = torch.softmax(policy.logits_full(board, prompt), -1)
        legal = [policy.vocab.encode_move(m) for m in board.legal_moves]
        top1.append(int(probs.argmax()) in legal)
        mass.append(1.0 - float(probs[legal].sum()))
        best2 = probs.topk(2).values
        close += float(best2[0] - best2[1]) < 1e-5  # a near-tie: the batched path may pick the other one
    overall, _, _, used, _ = score_legality(policy, [g], positions=1000)
    assert used == 1 and overall.positions == len(g.moves)
    # the two paths differ by float rounding (~1e-6 in probability); only near-ties may flip the top-1 pick
    assert abs(overall.top1_legal - sum(top1) / len(top1)) <= close / len(top1) + 1e-9
    assert overall.illegal_mass == pytest.approx(sum(mass) / len(mass), abs=1e-5)


def test_played_legality_counts_match_records() -> None:
    policy = tiny_policy(context=256)
    (row,) = played_legality(policy, [1500], games=3, sampling=Sampling(mask_illegal=True), max_plies=30)
    assert row.games == 3 and row.moves == 3 * 30 and row.max_per_game <= 30  # mask is forced off: raw counts
    assert row.illegal > 0  # an untrained model samples illegal moves


# -- strength ---------------------------------------------------------------------------------------------------
def test_ladder_specs_pair_openings_and_colours() -> None:
    policy = tiny_policy()
    cfg = small_cfg(ladder=("random", "skill=0", "1350"), ladder_games=4, calibration_games=2, opening_plies=2)
    subjects = model_subjects(policy, cfg)
    specs = ladder_specs(subjects, [Opponent.parse(s) for s in cfg.ladder], cfg)
    assert len(specs) == 3 * 3 * 4 + 2 * 2
    for s in subjects:
        for o in ("random", "sf-skill0", "sf-1350"):
            mine = [x for x in specs if x.tags.get("subject") == s.label and x.tags["opponent"] == o]
            by_opening = Counter((x.opening, x.white == s.label) for x in mine)
            assert len(mine) == 4 and set(by_opening.values()) == {1}
            assert {x.opening for x in mine if x.white == s.label} == {x.opening for x in mine if x.black == s.label}
    assert opening_lines(2)[0] == ("e2e4", "e7e5")


def _record(white: str, black: str, result: str, opponent: str) -> GameRecord:
    return GameRecord(id=f"{white}-{black}-{random.random()}", white=white, black=black, result=result,
                      termination="checkmate", plies=10, model_moves={"white": 5, "black": 0},
                      illegal={"white": 1, "black": 0}, masked=False, engine_restarts=0, seconds=0.0, pgn="",
                      tags={"opponent": opponent})


def test_ladder_result_on_a_known_table() -> None:
    policy = tiny_policy()
    subjects = [Subject.model(policy, 1000), Subject.model(policy, 2000)]
    opp = [Opponent.parse("1350")]
    # model@1000 scores 1/4 against the 1350 anchor, model@2000 scores 3/4
    recs = [_record("model@1000", "sf-1350", r, "sf-1350") for r in ("1-0", "0-1", "0-1", "0-1")]
    recs += [_record("model@2000", "sf-1350", r, "sf-1350") for r in ("1-0", "1-0", "1-0", "0-1")]
    recs.append(_record("model@2000", "sf-1350", "*", "sf-1350"))  # aborted: left out
    res = ladder_result(recs, subjects, opp, virtual_draws=0.0, nodes=1)
    low, high = res.subjects
    assert low.elo == pytest.approx(1350 - 400 * math.log10(3)) and high.elo == pytest.approx(1350 + 400 * math.log10(3))
    assert low.lo < low.elo < low.hi and high.games == 4 and high.score == 0.75
    assert res.spearman == pytest.approx(1.0) and res.slope == pytest.approx(2 * 400 * math.log10(3) / 1000)
    assert res.aborted == 1 and res.games == 8 and high.scores == {"sf-1350": 0.75}
    assert low.illegal_per_game == 1.0


def test_play_ladder_with_fake_engine_resumes(tmp_path: Path) -> None:
    policy = tiny_policy(context=256)
    cfg = small_cfg(ratings=(1200, 2000), ladder=("random", "skill=0", "1350"), engine=script(str(tmp_path)))
    subjects = model_subjects(policy, cfg)
    log = tmp_path / "ladder.jsonl"
    res = play_ladder(subjects, cfg, log, engine=cfg.engine)
    _, recs = read_game_log(log)
    assert len(recs) == 2 * 3 * 2 + 2 * 2 == res.games + res.aborted
    assert {o.label: o.anchored for o in res.opponents} == {"random": False, "sf-skill0": False, "sf-1350": True}
    assert next(o for o in res.opponents if o.anchored).elo == 1350
    assert all(r.games == 6 for r in res.subjects)
    again = play_ladder(subjects, cfg, log, engine=cfg.engine)  # everything is in the log: nothing replayed
    assert again == res and len(read_game_log(log)[1]) == len(recs)


def _rigged_matching(policy, games, prompts, batch_size=16):  # noqa: ANN001, ANN202
    """Predicts the human move exactly when the mover's rating slot holds the mover's own bucket."""
    for i, (g, p) in enumerate(zip(games, prompts)):
        n = scored_moves(policy, g)
        logits = torch.zeros(n, NUM_MOVES)
        for j in range(n):
            actual = g.white if j % 2 == 0 else g.black
            right = p[1 + j % 2] == policy.vocab.rating_token(actual)
            token = policy.vocab.encode_move(g.moves[j])
            logits[j, token if right else (token + 1) % NUM_MOVES] = 5.0
        yield i, logits


def test_move_matching_diagonal_on_a_rigged_model(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tiny_policy(context=256)
    rng = random.Random(0)
    ratings = (1200, 1600, 2000)
    games = []
    for k in range(12):
        g = random_game(k, max_plies=40)
        games.append(HeldOutGame(moves=tuple(g.mainline_moves()), white=rng.choice(ratings) + 50,
                                 black=rng.choice(ratings) + 50))
    monkeypatch.setattr(strength_mod, "teacher_forced_logits", _rigged_matching)
    m = move_matching(policy, games, ratings, band_width=200, skip_plies=10)
    expected_n = [0, 0, 0]
    for g in games:
        for color in (chess.WHITE, chess.BLACK):
            moves = sum(1 for p in range(10, len(g.moves)) if (p % 2 == 0) == (color == chess.WHITE))
            expected_n[ratings.index(g.rating(color) - 50)] += moves  # type: ignore[operator]
    for ri in range(3):
        assert list(m.n[ri]) == expected_n
        for ci in range(3):
            if expected_n[ci]:
                assert m.accuracy[ri][ci] == (1.0 if ri == ci else 0.0)
    assert m.diagonal_peaks == m.bands_with_data == sum(1 for x in expected_n if x) and m.row_peaks == 3
    assert m.best_prompt == tuple(r if expected_n[i] else None for i, r in enumerate(ratings))


def test_move_matching_ties_are_not_peaks(games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256, label="none")  # no rating slots: every prompt is the same
    m = move_matching(policy, games, (1200, 1600, 2000), skip_plies=4)
    assert m.diagonal_peaks == 0 and m.row_peaks == 0
    assert all(row == m.accuracy[0] for row in m.accuracy)


def test_centipawn_loss_plumbing_with_fake_engine(tmp_path: Path, games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    subjects = [Subject.model(policy, 1200), Subject.player("random", lambda seed: RandomPlayer(seed))]
    res = centipawn_loss(subjects, games, positions=6, nodes=5, engine=script(str(tmp_path)))
    assert [r.positions for r in res.rows] == [6, 6] and res.failed == 0
    for r in res.rows:
        assert r.mean >= 0 and r.median >= 0 and 0 <= r.blunder_rate <= 1 and 0 <= r.accuracy <= 1
    assert res.rows[1].vs_first == pytest.approx(res.rows[1].mean - res.rows[0].mean)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_STOCKFISH, reason="needs Stockfish (CI installs it)")
def test_centipawn_loss_separates_stockfish_from_random(games: list[HeldOutGame]) -> None:
    def stockfish(seed: int) -> StockfishPlayer:
        return StockfishPlayer(nodes=3000)

    subjects = [Subject.player("random", lambda seed: RandomPlayer(seed)), Subject.player("sf", stockfish)]
    res = centipawn_loss(subjects, games, positions=15, nodes=3000)
    rnd, sf = res.rows
    assert sf.mean < rnd.mean and sf.median <= 30
    assert sf.accuracy >= 0.5 > rnd.accuracy  # Stockfish at the same nodes mostly picks its own best move
    assert rnd.vs_first == 0.0 and sf.vs_first < 0 and sf.vs_first_hi < 0  # paired: clearly less loss


def test_evaluate_strength_writes_json_and_notes(tmp_path: Path, games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    cfg = small_cfg(ratings=(1200, 2000), engine=script(str(tmp_path)))
    res = evaluate_strength(model_subjects(policy, cfg), games, cfg, tmp_path / "eval")
    assert res.ladder is not None and res.matching is not None and res.cpl is not None and not res.notes
    assert res.match is not None and [(p.a, p.b) for p in res.match.pairs] == [("r1200", "r2000")]
    assert res.match.pairs[0].score.games == cfg.match_games and "Direct matches" in res.format()
    loaded = StrengthResult.load(tmp_path / "eval" / "strength.json")
    assert loaded.format() == res.format() and "Spearman" in res.format()
    res2 = evaluate_strength(model_subjects(policy, cfg), [], cfg, None, parts=("matching", "cpl"))
    assert res2.ladder is None and len(res2.notes) == 2


# -- openings --------------------------------------------------------------------------------------------------
def test_line_stats_by_hand() -> None:
    lines = [("e2e4", "e7e5"), ("e2e4", "e7e5"), ("e2e4", "c7c5"), ("d2d4", "d7d5"), ("d2d4",)]
    s = line_stats(lines, 2, reference=[("e2e4", "e7e5")])
    assert s.games == 4 and s.distinct == 3 and s.top_share == 0.5 and s.top_line == "1. e4 e5"
    assert s.entropy == pytest.approx(1.5)
    # p = (1/2, 1/4, 1/4) vs q = (1, 0, 0)
    assert s.js_to_data == pytest.approx(0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * 1) + 0.5 * math.log2(1 / 0.75))
    assert line_stats(lines, 1).entropy == pytest.approx(-(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4)))


def test_played_distribution_matches_choose() -> None:
    policy = tiny_policy(context=256)
    board = chess.Board()
    logits = policy.logits_full(board, policy.prompt(1500, 1500))[None] * 30  # sharpen: some legal mass
    legal = torch.zeros(1, NUM_MOVES, dtype=torch.bool)
    legal[0, [policy.vocab.encode_move(m) for m in board.legal_moves]] = True
    for sampling in (Sampling(), Sampling(temperature=0.7, top_p=0.9), Sampling(mask_illegal=True),
                     Sampling(temperature=0.0)):
        probs = played_distribution(logits, legal, sampling)[0]
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-5) and probs[~legal[0]].sum() == 0
        gen = torch.Generator().manual_seed(1)
        n = 3000
        counts = Counter(policy.choose(logits.expand(n, -1), [board] * n, sampling, gen, MoveStats()))
        for move, k in counts.items():
            assert k / n == pytest.approx(probs[policy.vocab.encode_move(move)].item(), abs=0.04)


def test_repeated_prompt_and_openings_eval(tmp_path: Path, games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    rep = repeated_prompt(Subject.model(policy, 1500, Sampling(temperature=0.0)), ("e2e4",), 25)
    assert rep.samples == 25 and rep.distinct == 1 and rep.top_share == 1.0 and rep.line == "1. e4"
    rep = repeated_prompt(Subject.player("random", lambda s: RandomPlayer(s)), (), 40)
    assert rep.distinct > 5
    # held-out games with mean ratings inside the 1600 band, so the data rows exist
    rated = [HeldOutGame(moves=g.moves, white=1600, black=1650) for g in games]
    cfg = small_cfg(ratings=(1600, 2400))
    res = evaluate_openings(model_subjects(policy, cfg), rated, cfg, tmp_path)
    sources = [(r.source, r.label) for r in res.rows]
    assert sources == [("self-play", "model@1600"), ("vs random", "model@1600"), ("data", "data 1500-1699"),
                       ("self-play", "model@2400"), ("vs random", "model@2400")]
    for r in res.rows:
        assert [s.k for s in r.lines] == [2, 4, 8, 12]
        assert r.games == (6 if r.source in ("self-play", "data") else 4)
        for s in r.lines:
            assert 0 <= s.entropy <= math.log2(r.games) + 1e-9 and 1 <= s.distinct <= r.games
            if r.source != "data" and r.rating == 1600:
                assert 0 <= s.js_to_data <= 1  # type: ignore[operator]
    assert res.rows[0].policy_entropy is not None and res.rows[0].policy_entropy >= 0
    assert len(res.rows[0].repeat) == 3 and res.rows[1].repeat == ()  # the repeat test once per subject
    assert any("no held-out human games" in n for n in res.notes)
    assert OpeningsResult.load(tmp_path / "openings.json") == res


def test_result_json_round_trip_keeps_inf_and_nan() -> None:
    from chessdt.evals.strength import OpponentRow

    row = OpponentRow(label="x", spec="x", anchored=False, elo=math.inf, lo=math.nan, hi=math.inf)
    data = json.loads(json.dumps(jsonable(row)))
    assert data["elo"] == "inf" and data["lo"] is None
    back = from_dict(OpponentRow, data)
    assert back.elo == math.inf and math.isnan(back.lo)


# -- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_evals_and_report(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = script(str(tmp_path))
    out = tmp_path / "run"
    sets = ["eval.ratings=1200,1800", "eval.legality_positions=100", "eval.legality_games=20",
            "eval.legality_selfplay=1", "eval.max_plies=30", "eval.ladder=random,1350", "eval.ladder_games=2",
            "eval.calibration_games=2", "eval.ladder_nodes=5", "eval.matching_games=10", "eval.cpl_positions=3",
            "eval.cpl_nodes=5", "eval.openings_games=4", "eval.openings_vs_games=2", "eval.openings_opponent=random",
            "eval.repeat_samples=10", "eval.workers=1"]
    args = [x for s in sets for x in ("--set", s)]
    eval_dir = out / "eval"
    assert cli.main(["eval", "legality", str(tiny_checkpoint), "--out", str(eval_dir), *args]) == 0
    assert "top-1 legal" in capsys.readouterr().out
    assert cli.main(["eval", "strength", str(tiny_checkpoint), "--out", str(eval_dir), "--engine", fake, "-q",
                     *args]) == 0
    printed = capsys.readouterr().out
    assert "measured Elo" in printed and "Move matching" in printed and "Centipawn loss" in printed
    assert cli.main(["eval", "openings", str(tiny_checkpoint), "--out", str(eval_dir), *args]) == 0
    assert json.loads((eval_dir / "openings.json").read_text())["rows"]
    assert cli.main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    for section in ("## Move legality", "## Strength by prompted rating", "## Opening variety"):
        assert section in text
    assert (out / "report" / "legality.png").read_bytes()[:4] == b"\x89PNG"
    # a bad override is a one-line error, not a traceback
    assert cli.main(["eval", "openings", str(tiny_checkpoint), "--set", "eval.ladder_games=3"]) == 2
    assert "must be even" in capsys.readouterr().err


@pytest.mark.parametrize("fen,uci,reason", [
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "f1c4", "path blocked"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "e7e5", "no piece of the mover on the from-square"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "d1d2", "onto the mover's own piece"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "g1g3", "piece cannot move so"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "e2d3", "pawn cannot move so"),
    ("4k3/8/8/8/8/8/4r3/R3K2R w KQ - 0 1", "a1a2", "does not answer the check"),
    ("4k3/8/8/8/8/8/8/R3K2r w Q - 0 1", "e1f1", "does not answer the check"),
    ("4k3/8/8/b7/8/8/3P4/4K3 w - - 0 1", "d2d3", "pinned piece leaves its line"),
    ("4k3/8/8/8/8/8/5r2/4K3 w - - 0 1", "e1f1", "king steps into an attack"),
    ("4k3/8/8/8/8/8/8/R3K2R w Q - 0 1", "e1g1", "castling without the right"),
    ("4k3/8/8/8/8/8/8/RN2K2R w KQ - 0 1", "e1c1", "path blocked"),
    ("4k3/8/8/8/8/8/6r1/R3K2R w KQ - 0 1", "e1g1", "castling out of, through or into check"),
])
def test_illegal_reason(fen: str, uci: str, reason: str) -> None:
    from chessdt.evals.legality import illegal_reason

    board = chess.Board(fen)
    move = chess.Move.from_uci(uci)
    assert not board.is_legal(move)
    assert illegal_reason(board, VOCAB_FOR_REASONS.encode_move(move), VOCAB_FOR_REASONS) == reason


def test_illegal_reason_for_a_non_move_token() -> None:
    from chessdt.evals.legality import illegal_reason

    assert illegal_reason(chess.Board(), VOCAB_FOR_REASONS.end, VOCAB_FOR_REASONS) == "not a move: <end>"



def test_reference_engine_is_scored_on_the_models_positions(tmp_path: Path, games: list[HeldOutGame]) -> None:
    """The fake engine plays the first legal move (sorted UCI): its agreement with the recorded move
    is computable by hand on exactly the positions move matching uses."""
    from chessdt.evals.strength import matched_positions, reference_matching

    policy = tiny_policy(context=64)
    ratings = [1200, 1600, 2000]
    max_moves = policy.context - len(policy.prompt(None, None)) + 1
    spec = f"uci={script(str(tmp_path))}@1500"
    row = reference_matching(spec, games[:10], ratings, band_width=400, skip_plies=10, max_moves=max_moves, nodes=5)
    hits, n = [0, 0, 0], [0, 0, 0]
    for gi, _, ply, cols in matched_positions(games[:10], ratings, 400, 10, max_moves):
        board = games[gi].board(ply)
        first = min(board.legal_moves, key=lambda m: m.uci())
        for ci in cols:
            hits[ci] += first == games[gi].moves[ply]
            n[ci] += 1
    assert row.n == tuple(n) and sum(n) > 0 and row.failed == 0 and row.label == "fakefish@1500"
    assert row.accuracy == tuple(h / k if k else pytest.approx(math.nan, nan_ok=True) for h, k in zip(hits, n))
    m = move_matching(policy, games[:10], ratings, band_width=400, skip_plies=10)
    assert [m.n[0][ci] for ci in range(3)] == n  # the model's positions are the same ones
    with pytest.raises(UserError):
        reference_matching("random", games[:2], ratings, band_width=400, skip_plies=10, max_moves=max_moves, nodes=5)
