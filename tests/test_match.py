"""Direct matches between settings of one model (chessdt.evals.match)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import chess
import chess.pgn
import pytest
from tiny_policy import tiny_policy

from chessdt import cli, cli_eval
from chessdt.config import EvalConfig
from chessdt.play.gamelog import GameRecord
from chessdt.play.policy import Prompted
from chessdt.errors import UserError
from chessdt.evals import match as match_mod
from chessdt.evals.match import (MatchResult, Setting, bradley_terry, match_pairs, pair_row, play_match,
                                 stalemate_giver_ahead)
from chessdt.metrics import elo_difference, paired_score, sprt_bounds, sprt_llr


def test_setting_grammar() -> None:
    s = Setting.parse("rating=2000, temperature=0.5,top_p=0.9,guidance=1,opponent=1500")
    assert (s.rating, s.opponent_rating, s.sampling.temperature, s.sampling.top_p, s.sampling.guidance) == \
        (2000, 1500, 0.5, 0.9, 1.0)
    assert s.label == "r2000 o1500 T0.5 p0.9 g1"
    assert Setting.parse("r=?").rating is None and Setting.parse("r=?").label == "r?"
    assert Setting.parse("1200,t=0").deterministic
    policy = tiny_policy()
    model = s.prompted(policy)  # the setting of a model: the value the arena plays, opponent rating included
    assert model == Prompted(policy, 2000, 1500, s.sampling) and Setting.of(model) == s
    for bad in ("", "rating=abc", "speed=3", "r=1500,t=-1", "r=1500,p=0"):
        with pytest.raises(UserError):
            Setting.parse(bad)


def test_paired_score_and_sprt_by_hand() -> None:
    pairs = [[1.0, 0.5], [0.5, 0.5], [1.0, 1.0], [0.0, 0.5]]
    p = paired_score(pairs)
    per_pair = [0.75, 0.5, 1.0, 0.25]
    mean = sum(per_pair) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in per_pair) / 3)
    assert p.score == pytest.approx(mean) and (p.wins, p.draws, p.losses) == (3, 4, 1)
    assert p.hi - p.score == pytest.approx(1.959964 * sd / 2, rel=1e-5)
    assert p.elo == pytest.approx(elo_difference(mean)) and p.elo_lo < p.elo < p.elo_hi
    assert p.pentanomial == (0, 1, 1, 1, 1)
    # identical pairs do not claim certainty: the widest spread a pair score can have is used
    drawn = paired_score([[0.5, 0.5]] * 4)
    assert drawn.score == 0.5 and drawn.hi - drawn.score == pytest.approx(1.959964 * 0.5 / 2, rel=1e-5)
    # a perfect score has an infinite Elo difference, not a crash
    assert paired_score([[1.0, 1.0]] * 3).elo == math.inf
    lower, upper = sprt_bounds(0.05, 0.05)
    assert sprt_llr([[1.0, 1.0], [1.0, 0.5]] * 30, 0, 20) > upper  # B clearly stronger: H1
    assert sprt_llr([[0.0, 0.5], [0.5, 0.0]] * 30, 0, 20) < lower  # B weaker: H0
    assert sprt_llr([[1.0, 0.5]], 0, 20) == 0.0  # too little data


def test_pairs_plan() -> None:
    assert match_pairs(2, "adjacent") == [(0, 1)]
    assert match_pairs(4, "all") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    with pytest.raises(UserError):
        match_pairs(3, "swiss")


def test_match_plays_paired_openings_and_resumes(tmp_path: Path, one_thread: None) -> None:
    policy = tiny_policy(context=256)
    settings = [Setting.parse("r=1200"), Setting.parse("r=2000"), Setting.parse("r=2000,t=0.5")]
    log = tmp_path / "m.jsonl"
    res = play_match(policy, settings, log, games=4, plan="all", max_plies=40, batch_size=16)
    assert res.games == 12 and res.aborted == 0 and len(res.pairs) == 3
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    records = [GameRecord.from_json(x) for x in lines[1:]]
    by_round: dict[tuple[str, str, int], list[GameRecord]] = {}
    for r in records:
        by_round.setdefault((r.tags["a"], r.tags["b"], r.tags["round"]), []).append(r)
    for (a, b, _), pair in by_round.items():  # each round: one opening, each side once with White
        assert len(pair) == 2 and {pair[0].white, pair[1].white} == {a, b}
        assert pair[0].tags["opening"] == pair[1].tags["opening"]
    for row in res.pairs:
        s = row.score
        assert s.wins + s.draws + s.losses == s.games == 4 and sum(row.terminations.values()) == 4
        b_points = sum(r.score_of(row.b) for r in records if (r.tags["a"], r.tags["b"]) == (row.a, row.b))
        assert s.score == pytest.approx(b_points / 4)
    assert [r.label for r in res.ratings] == [s.label for s in settings] and res.ratings[0].elo == 0.0
    assert "Bradley-Terry" in res.format() and "r2000 T0.5" in res.format()
    # a rerun plays nothing new and gives the same numbers
    again = play_match(policy, settings, log, games=4, plan="all", max_plies=40, batch_size=16)
    assert len(log.read_text().splitlines()) == len(lines)
    assert [p.score.score for p in again.pairs] == [p.score.score for p in res.pairs]
    with pytest.raises(UserError, match="other settings"):
        play_match(policy, settings[:2], log, games=4, max_plies=40)
    with pytest.raises(UserError):
        play_match(policy, settings[:1], None, games=4)
    with pytest.raises(UserError):
        play_match(policy, settings, None, games=3)


def _fake_record(a: str, b: str, rnd: int, colour: int, b_wins: bool) -> GameRecord:
    white, black = (a, b) if colour == 0 else (b, a)
    result = ("0-1" if colour == 0 else "1-0") if b_wins else "1/2-1/2"
    return GameRecord(id=f"{a}|{b}|{rnd}|{colour}", white=white, black=black, result=result, termination="checkmate",
                      plies=10, model_moves={"white": 5, "black": 5}, illegal={"white": 0, "black": 0}, masked=False,
                      engine_restarts=0, seconds=0.0, pgn="[Event \"x\"]\n\n1. e4 *", tags={"a": a, "b": b, "round": rnd})


def test_sprt_stops_as_soon_as_it_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    """B wins every game: the SPRT accepts H1 after a few chunks, far below the game limit."""
    calls = []

    def fake_run_games(specs, seats, out, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(specs))
        return [_fake_record(s.tags["a"], s.tags["b"], s.tags["round"], int(s.id[-1]), b_wins=(s.tags["round"] % 4 != 0))
                for s in specs]

    monkeypatch.setattr(match_mod, "run_games", fake_run_games)
    res = play_match(tiny_policy(), [Setting.parse("r=1200"), Setting.parse("r=2000")], None, games=2000,
                     batch_size=16, sprt=(0, 20))
    assert res.sprt is not None and res.sprt.decision == "H1" and res.sprt.llr >= res.sprt.upper
    assert calls == sorted(calls) and calls[-1] < 2000 and calls[0] == 16
    with pytest.raises(UserError, match="exactly two"):
        play_match(tiny_policy(), [Setting.parse(x) for x in ("1200", "1600", "2000")], None, sprt=(0, 20))


def test_bradley_terry_recovers_the_pair_scores() -> None:
    recs = [_fake_record("a", "b", r, c, b_wins=(r % 4 == 0)) for r in range(40) for c in (0, 1)]
    rows = {r.label: r for r in bradley_terry(recs, ["a", "b"], samples=50)}
    b_score = sum(x.score_of("b") for x in recs) / len(recs)
    assert rows["b"].elo == pytest.approx(elo_difference(b_score), abs=1e-3)
    assert rows["b"].lo < rows["b"].elo < rows["b"].hi and rows["a"].elo == 0.0
    row = pair_row(recs, "a", "b")
    assert row.score.score == pytest.approx(b_score) and row.distinct_games == 1  # all share one PGN


def test_stalemate_while_ahead_is_counted() -> None:
    board = chess.Board("7k/8/5QK1/8/8/8/8/8 w - - 0 1")
    board.push(chess.Move.from_uci("f6f7"))  # Qf7: black king on h8 has no move and is not in check
    assert board.is_stalemate()
    game = chess.pgn.Game.from_board(board)
    rec = GameRecord(id="x", white="w", black="b", result="1/2-1/2", termination="stalemate", plies=1,
                     model_moves={}, illegal={}, masked=False, engine_restarts=0, seconds=0.0, pgn=str(game))
    assert stalemate_giver_ahead(rec) == "w"
    # in a match: the game stays a draw, counted under its giver (the referee measures conversion)
    import dataclasses

    tags = {"a": "b", "b": "w", "round": 0}
    other = _fake_record("b", "w", 0, 1, b_wins=False)  # a plain draw, the other game of the pair
    stale = dataclasses.replace(rec, id="b|w|0|0", tags=tags)
    row = pair_row([stale, other], "b", "w")
    assert row.score.score == 0.5 and row.stalemates_ahead == {"w": 1}
    assert row.adjudicated is None and row.conversion is None  # no referee watched these games
    text = MatchResult(settings=("b", "w"), model="m", pairs=(row,), ratings=(), games=2, aborted=0,
                       seconds=0.0).format()
    assert "| 0 / 1 |" in text and "Referee" not in text


def test_cli_match(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", "r=2000", "--games", "4", "--max-plies", "30",
                     "--out", str(out), "-q"]) == 0
    assert (out / "match_r1400_vs_r2000.json").is_file() and "Elo B - A" in capsys.readouterr().out
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", "bogus=1", "--out", str(out)]) == 2
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", "r=2000", "--sprt", "x", "--out", str(out)]) == 2


def test_cli_match_defaults_come_from_the_eval_section(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Issue 20: `eval match` plays the [eval] section's match settings where no flag is given."""
    out = tmp_path / "ev"
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", "r=2000", "--set", "eval.match_games=2",
                     "--set", "eval.max_plies=6", "--set", "eval.opening_plies=2", "--out", str(out), "-q"]) == 0
    records = [json.loads(line) for line in (out / "match_r1400_vs_r2000.jsonl").read_text().splitlines()]
    games = [r for r in records if "white" in r]
    assert len(games) == 2 and all(g["plies"] <= 6 for g in games)
    assert json.loads((out / "match_r1400_vs_r2000.json").read_text())["games"] == 2
    # a flag still wins over the section
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", "r=2000", "--set", "eval.match_games=2",
                     "--games", "4", "--max-plies", "6", "--out", str(tmp_path / "ev4"), "-q"]) == 0
    assert json.loads((tmp_path / "ev4" / "match_r1400_vs_r2000.json").read_text())["games"] == 4
    # the section's sampling (eval.guidance, temperature, top_p) is every setting's default; a key still wins
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", "r=2000,g=0", "--set", "eval.guidance=2",
                     "--set", "eval.temperature=0.5", "--games", "2", "--max-plies", "6", "--out",
                     str(tmp_path / "evg"), "-q"]) == 0
    played = json.loads((tmp_path / "evg" / "match_r1400-T0.5-g2_vs_r2000-T0.5.json").read_text())
    assert played["settings"] == ["r1400 T0.5 g2", "r2000 T0.5"]


def test_cli_match_between_two_checkpoints(tiny_checkpoint: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A setting may name another checkpoint: one checkpoint's model against another's, e.g. an RL
    checkpoint against its base (each side's moves its own model's: tests/test_arena.py)."""
    import torch

    from chessdt.checkpoint import load_model, save_checkpoint

    model, cfg, vocab = load_model(tiny_checkpoint)
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    other = save_checkpoint(tmp_path / "other", model, cfg, vocab, step=1, tokens_seen=0)
    out = tmp_path / "ev"
    setting = f"r=1400,c={other}"
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", setting, "--games", "4", "--max-plies", "30",
                     "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"| r1400 | r1400 @{other} | 4 |" in printed
    (saved,) = out.glob("match_r1400_vs_r1400-@*.json")
    assert json.loads(saved.read_text())["settings"] == ["r1400", f"r1400 @{other}"]
    assert Setting.parse(setting).checkpoint == str(other)
    with pytest.raises(UserError, match="not loaded"):
        play_match(tiny_policy(), [Setting.parse("r=1400"), Setting.parse(setting)], games=2)
    assert cli.main(["eval", "match", str(tiny_checkpoint), "r=1400", f"r=1400,c={tmp_path / 'nowhere'}",
                     "--out", str(out)]) == 2


def test_a_checkpoint_never_chooses_a_program(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A checkpoint's own eval.engine and opponent lists are ignored (a list that names a program takes its
    default whole); the user's, given on the command line, are kept."""
    import argparse
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["config"]["eval"]["engine"] = "/tmp/evil-engine"
    meta["config"]["eval"]["ladder"] = ["random", "uci=/tmp/evil-engine@1500", "1350"]
    (ckpt / "meta.json").write_text(json.dumps(meta))
    args = argparse.Namespace(checkpoint=str(ckpt), device="cpu", set=[], config=None, engine=None, games=None,
                              out=str(tmp_path / "out"))
    _, ev, _, _ = cli_eval._eval_setup(args, "match")
    assert ev.engine == "" and ev.ladder == EvalConfig().ladder
    args.set = ["eval.engine=/usr/games/stockfish", "eval.ladder=random,uci=lc0@1500"]
    _, ev, _, _ = cli_eval._eval_setup(args, "match")
    assert ev.engine == "/usr/games/stockfish" and ev.ladder == ("random", "uci=lc0@1500")


def test_a_match_is_not_resumed_by_other_weights_under_the_same_name(tmp_path: Path, one_thread: None) -> None:
    """Issue 24, case 4: after train --resume moved `best`, the same match reported the old model's games."""
    settings = [Setting.parse("r=1200"), Setting.parse("r=2000")]
    log = tmp_path / "m.jsonl"
    before = tiny_policy(seed=0, context=128)
    play_match(before, settings, log, games=2, max_plies=12, batch_size=4)
    moved = tiny_policy(seed=1, context=128)
    moved.model_id = before.model_id  # the same name (tiny@best), other weights
    assert moved.weights_id != before.weights_id
    res = play_match(moved, settings, log, games=2, max_plies=12, batch_size=4)
    assert res.games == 2
    meta = json.loads(log.read_text().splitlines()[0])["meta"]
    assert set(meta["weights"].values()) == {moved.weights_id}  # the new log holds only the new weights' games
    aside = json.loads((tmp_path / "m.other-weights-1.jsonl").read_text().splitlines()[0])["meta"]
    assert set(aside["weights"].values()) == {before.weights_id}


def test_cli_match_after_best_moved_plays_afresh_and_says_so(tiny_checkpoint: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Issue 24, case 4 as reported: eval match, then `best` replaced by other weights, then the same
    eval match reported the old model's games in 0 s."""
    import torch

    from chessdt.checkpoint import load_model, save_checkpoint

    model, cfg, vocab = load_model(tiny_checkpoint)
    best = save_checkpoint(tmp_path / "best", model, cfg, vocab, step=4, tokens_seen=0)
    out = tmp_path / "ev"
    args = ["eval", "match", str(best), "r=1200", "r=2000", "--games", "2", "--max-plies", "12", "--out", str(out), "-q"]
    assert cli.main(args) == 0
    assert not caplog.records
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    save_checkpoint(best, model, cfg, vocab, step=8, tokens_seen=0)  # what train --resume does to best
    assert cli.main(args) == 0
    (said,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # one line, on stderr
    assert "played by other weights" in said and "match_r1200_vs_r2000.other-weights-1.jsonl" in said
    assert (out / "match_r1200_vs_r2000.other-weights-1.jsonl").is_file()
