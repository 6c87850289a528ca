"""Referee adjudication: the rule, the played-out share, records, resume, a failing referee, match output."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import chess
import pytest
from tiny_policy import tiny_policy

import fake_uci
from chessdt import cli
from chessdt.errors import UserError
from chessdt.evals.match import Setting, play_match, rejudge
from chessdt.play.arena import GameSpec, PlayerSeat, run_games
from chessdt.play.gamelog import GameRecord
from chessdt.play.players import RandomPlayer
from chessdt.stockfish.engine import EngineFailure
from chessdt.stockfish.referee import Referee, RefereeRule, verdict_of


class ScriptedReferee(Referee):
    """A referee whose score is a function of the board (no engine), counting its calls."""

    def __init__(self, rule: RefereeRule, score: Callable[[chess.Board], int]) -> None:
        super().__init__(fake_uci.command(), rule)
        self.score = score
        self.calls = 0

    def __enter__(self) -> ScriptedReferee:
        return self

    def white_cp(self, board: chess.Board) -> int:
        self.calls += 1
        return self.score(board)


def white_wins_from(ply: int) -> Callable[[chess.Board], int]:
    return lambda board: 900 if board.ply() >= ply else 0


def test_the_rule() -> None:
    rule = RefereeRule(cp=400, plies=4, from_ply=10)
    assert verdict_of([0] * 5 + [500] * 4, rule) is None  # 4 plies at +5, but ending at ply 9 < 10
    assert verdict_of([0] * 5 + [500] * 5, rule) == ("1-0", 10)
    assert verdict_of([-400] * 3 + [-399] + [-400] * 3, rule) is None  # the run must be unbroken
    assert verdict_of([0] * 10 + [-1000] * 4, rule) == ("0-1", 14)
    assert verdict_of([500, 500, -500, -500, -500, -500] + [0] * 10, RefereeRule(cp=400, plies=4, from_ply=0)) \
        == ("0-1", 6)
    assert RefereeRule.parse("cp=300,plies=2,from=0,nodes=50,playout=0.25") == \
        RefereeRule(cp=300, plies=2, from_ply=0, nodes=50, playout=0.25)
    for bad in ("cp=abc", "speed=3", "cp=0", "playout=1.5", "plies=0"):
        with pytest.raises(UserError):
            RefereeRule.parse(bad)


def test_played_out_share_is_seeded_and_near_its_setting() -> None:
    rule = RefereeRule(playout=0.2)
    picks = [rule.plays_out(0, f"g{i}") for i in range(2000)]
    assert picks == [rule.plays_out(0, f"g{i}") for i in range(2000)]
    assert 0.2 - 0.04 < sum(picks) / 2000 < 0.2 + 0.04  # 4.5 binomial standard deviations
    assert all(RefereeRule(playout=1.0).plays_out(3, f"g{i}") for i in range(100))
    assert not any(RefereeRule(playout=0.0).plays_out(3, f"g{i}") for i in range(100))


def _random_seats() -> dict[str, PlayerSeat]:
    return {"a": PlayerSeat(make=lambda seed: RandomPlayer(seed)), "b": PlayerSeat(make=lambda seed: RandomPlayer(seed + 1))}


def test_plain_games_stop_at_the_verdict_or_play_on(tmp_path: Path) -> None:
    specs = [GameSpec(id=f"g{i}", white="a", black="b", seed=1, opening=("e2e4", "e7e5")) for i in range(6)]
    stop = ScriptedReferee(RefereeRule(cp=400, plies=3, from_ply=0, playout=0.0), white_wins_from(7))
    records = run_games(specs, _random_seats(), tmp_path / "stop.jsonl", max_plies=60, referee=stop)
    for r in records:
        # a random game may end on its own before ply 9; otherwise the referee stops it there
        if r.termination == "adjudication":
            assert (r.result, r.plies, r.adjudication, r.adjudication_ply, r.played_out) == ("1-0", 9, "1-0", 9, False)
            assert r.referee == [0] * 6 + [900] * 3  # scored from the first ply, opening included
    assert sum(r.termination == "adjudication" for r in records) >= 4
    # resume: adjudicated games are decided, nothing is replayed and the referee is not asked again
    calls = stop.calls
    again = run_games(specs, _random_seats(), tmp_path / "stop.jsonl", max_plies=60, referee=stop)
    assert again == records and stop.calls == calls
    # playout = 1: the same verdicts, but every game goes on to the end
    on = ScriptedReferee(RefereeRule(cp=400, plies=3, from_ply=0, playout=1.0), white_wins_from(7))
    played = run_games(specs, _random_seats(), None, max_plies=60, referee=on)
    for r in played:
        assert r.played_out and r.termination != "adjudication"
        if r.adjudication:
            assert r.adjudication_ply == 9 and r.adjudicated_result == "1-0"
            assert r.false_adjudication == (r.result != "1-0")
            assert len(r.referee) == r.plies - (r.termination not in ("move_limit",))  # no score after the end


def test_a_failing_referee_aborts_the_game_and_a_rerun_replays_it(tmp_path: Path) -> None:
    def broken(board: chess.Board) -> int:
        if board.ply() == 5:
            raise EngineFailure("referee gone")
        return 0

    specs = [GameSpec(id="g0", white="a", black="b", seed=1)]
    log = tmp_path / "g.jsonl"
    first = run_games(specs, _random_seats(), log, max_plies=30, referee=ScriptedReferee(RefereeRule(), broken))
    assert (first[0].result, first[0].termination, first[0].decided) == ("*", "referee_failure", False)
    second = run_games(specs, _random_seats(), log, max_plies=30,
                       referee=ScriptedReferee(RefereeRule(), lambda b: 0))
    assert second[0].decided and second[0].termination != "referee_failure"


def test_match_reports_both_elos_and_conversion(tmp_path: Path, one_thread: None) -> None:
    """White always 'wins' by the referee: conversion and false adjudications follow the board."""
    policy = tiny_policy(context=256)
    settings = [Setting.parse("r=1200"), Setting.parse("r=2000")]
    ref = ScriptedReferee(RefereeRule(cp=400, plies=2, from_ply=6, playout=1.0), white_wins_from(5))
    res = play_match(policy, settings, tmp_path / "m.jsonl", games=8, max_plies=40, batch_size=8, referee=ref)
    row = res.pairs[0]
    assert row.adjudicated is not None and row.played_out is not None and row.conversion is not None
    records = [GameRecord.from_json(json.loads(x)) for x in (tmp_path / "m.jsonl").read_text().splitlines()[1:]]
    judged = [r for r in records if r.adjudication]
    assert judged and all(r.adjudication == "1-0" and r.adjudication_ply == 6 for r in judged)
    # every setting had White in half the games: the adjudicated score is 50% exactly
    assert row.adjudicated.score == pytest.approx(0.5)
    assert row.played_out.score == row.score.score  # all played out: on the board = as played
    for label in ("r1200", "r2000"):
        c = row.conversion[label]
        mine = [r for r in judged if r.white == label]
        assert c.verdicts == c.played_out == len(mine) and c.won == sum(r.result == "1-0" for r in mine)
    # any other rule can be replayed over the stored scores of played-out games
    assert [rejudge(r, ref.rule) for r in records] == records
    assert not any(rejudge(r, RefereeRule(cp=1000)).adjudication for r in records)
    assert all(rejudge(r, RefereeRule(cp=400, plies=2, from_ply=10)).adjudication_ply in (0, 10) for r in records)
    text = res.format()
    assert "Referee adjudication (cp=400,plies=2,from=6,nodes=1000,playout=1)" in text and "false adjudications" in text
    # playout 0: verdicts stop games; the played-out Elo is then not claimed
    ref0 = ScriptedReferee(RefereeRule(cp=400, plies=2, from_ply=6, playout=0.0), white_wins_from(5))
    res0 = play_match(policy, settings, None, games=8, max_plies=40, batch_size=8, referee=ref0)
    assert res0.pairs[0].played_out is None and res0.pairs[0].adjudicated is not None
    assert "verdicts not all played out" in res0.format()
    stopped = GameRecord.from_json(json.loads((tmp_path / "m.jsonl").read_text().splitlines()[1]))
    with pytest.raises(ValueError, match="cannot be rejudged"):
        rejudge(dataclasses.replace(stopped, played_out=False), ref.rule)


def test_cli_referee_errors_are_one_line(tiny_checkpoint: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["eval", "match", str(tiny_checkpoint), "r=1200", "r=2000", "--games", "2", "--referee", "cp=oops",
                   "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "referee" in err and len(err.splitlines()) == 1
    rc = cli.main(["eval", "match", str(tiny_checkpoint), "r=1200", "r=2000", "--games", "2", "--referee",
                   "--engine", str(tmp_path / "no-such-engine"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1
    rc = cli.main(["eval", "match", str(tiny_checkpoint), "r=1200", "r=2000", "--games", "2", "--max-plies", "30",
                   "--referee", "cp=100,plies=2,from=4,nodes=20", "--engine", fake_uci.script(str(tmp_path)),
                   "--out", str(tmp_path / "ok"), "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and "Referee adjudication" in out
