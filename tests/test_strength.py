"""Strength: ladder specs and results, move matching, centipawn loss, the whole evaluator."""

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

from chessdt.rules import Opponent
from chessdt.play.gamelog import GameRecord, read_game_log
from chessdt.stockfish.engine import DEBIAN_STOCKFISH
from chessdt.errors import UserError
from chessdt.evals.subject import Subject, model_subjects
from chessdt.evals import heldout as heldout_mod
from chessdt.evals.heldout import HeldOutGame, scored_moves
from chessdt.rules import opening_lines
from chessdt.evals.strength import (StrengthResult, centipawn_loss, evaluate_strength, ladder_result,
                                    ladder_specs, move_matching, play_ladder)
from chessdt.play.players import RandomPlayer, StockfishPlayer
from chessdt.tokenizer import NUM_MOVES
from conftest import random_game, small_cfg
from fake_uci import script
from tiny_policy import tiny_policy

HAVE_STOCKFISH = shutil.which("stockfish") is not None or os.access(DEBIAN_STOCKFISH, os.X_OK)

pytestmark = pytest.mark.usefixtures("one_thread")


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
    monkeypatch.setattr(heldout_mod, "teacher_forced_logits", _rigged_matching)  # under move_matching's guided_logits
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


def test_reference_engine_is_scored_on_the_models_positions(tmp_path: Path, games: list[HeldOutGame]) -> None:
    """The fake engine plays the first legal move (sorted UCI): its agreement with the recorded move
    is computable by hand on exactly the positions move matching uses."""
    from chessdt.evals.strength import matched_positions, reference_matching

    policy = tiny_policy(context=64)
    ratings = [1200, 1600, 2000]
    max_moves = policy.context - policy.prompt_len + 1
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


def test_aborted_ladder_games_fail_the_eval_and_are_retried(tiny_checkpoint: Path, tmp_path: Path, pgn_file: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from chessdt import cli

    (tmp_path / "broken").mkdir()
    (tmp_path / "working").mkdir()
    broken = script(str(tmp_path / "broken"), "--crash-at", "1")  # every engine process dies at its first `go`
    working = script(str(tmp_path / "working"))
    out = tmp_path / "ev"
    args = ["eval", "strength", str(tiny_checkpoint), "--games", str(pgn_file), "--out", str(out), "--parts", "ladder",
            "-q", "--set", "eval.ratings=1200", "--set", "eval.ladder=1350", "--set", "eval.ladder_games=2",
            "--set", "eval.ladder_nodes=5", "--set", "eval.max_plies=20", "--set", "eval.workers=1"]
    assert cli.main([*args, "--engine", broken]) == 2
    err = capsys.readouterr().err
    assert "all 2 ladder games were aborted (engine_failure: 2)" in err and err.count("\n") == 1
    assert cli.main([*args, "--engine", working]) == 0  # the aborted games are played again
    _, recs = read_game_log(out / "strength_games.jsonl")
    assert len(recs) == 2 and all(r.decided for r in recs)
    assert json.loads((out / "strength.json").read_text())["ladder"]["games"] == 2


def test_engine_paths_and_engines_that_fail_at_start_up(tiny_checkpoint: Path, tmp_path: Path, pgn_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from chessdt import cli

    on_path = tmp_path / "bin"
    on_path.mkdir()
    script(str(on_path), "--crash-at", "1")  # a broken `fakefish` on PATH ...
    here = tmp_path / "cwd"
    here.mkdir()
    script(str(here))  # ... and a working one in the current folder
    garbage = tmp_path / "garbage"
    garbage.write_text("#!/bin/sh\nwhile true; do echo 'no uci here'; sleep 0.2; done\n")
    garbage.chmod(0o755)
    monkeypatch.setenv("PATH", f"{on_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(here)
    args = ["eval", "strength", str(tiny_checkpoint), "--games", str(pgn_file), "--parts", "ladder", "-q",
            "--set", "eval.ratings=1200", "--set", "eval.ladder=1350", "--set", "eval.ladder_games=2",
            "--set", "eval.ladder_nodes=5", "--set", "eval.max_plies=20", "--set", "eval.workers=1"]
    assert cli.main([*args, "--out", str(tmp_path / "ev"), "--engine", "./fakefish"]) == 0
    assert json.loads((tmp_path / "ev" / "strength.json").read_text())["ladder"]["games"] == 2
    capsys.readouterr()
    for engine, message in (("/bin/false", "exited during the UCI handshake"),
                            (str(garbage), "did not answer the UCI handshake within 10 s")):
        assert cli.main([*args, "--out", str(tmp_path / "ev2"), "--engine", engine]) == 2, engine
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_refereed_ladder_fits_elo_both_ways(tmp_path: Path) -> None:
    """With eval.adjudicate, ladder games keep the referee's scores and the fit is given adjudicated too."""
    policy = tiny_policy(context=256)
    cfg = small_cfg(ratings=(1200, 2000), ladder=("random", "1350"), engine=script(str(tmp_path)),
                    adjudicate=True, referee_cp=100, referee_plies=2, referee_from_ply=4, referee_nodes=5)
    log = tmp_path / "ladder.jsonl"
    res = play_ladder(model_subjects(policy, cfg), cfg, log, engine=cfg.engine)
    meta, recs = read_game_log(log)
    assert meta["referee"] == "cp=100,plies=2,from=4,nodes=5,playout=1"
    assert all(r.referee and r.played_out for r in recs if r.decided)
    assert all(not math.isnan(r.elo_adjudicated) for r in res.subjects)
    assert "adjudicated Elo" in StrengthResult(ladder=res, matching=None, cpl=None, notes=()).format()
    plain = play_ladder(model_subjects(policy, small_cfg(ratings=(1200, 2000), ladder=("random", "1350"),
                                                        engine=cfg.engine)), small_cfg(
        ratings=(1200, 2000), ladder=("random", "1350"), engine=cfg.engine), tmp_path / "plain.jsonl", engine=cfg.engine)
    assert all(math.isnan(r.elo_adjudicated) for r in plain.subjects)
