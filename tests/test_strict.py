"""Strict rules (an illegal move loses) read off replacement play: records by hand, a real match log."""

from __future__ import annotations

from pathlib import Path

import pytest

from chessdt import cli
from chessdt.errors import UserError
from chessdt.evals.strict import ILLEGAL_MOVE, strict_match, strict_pairs, strict_record
from chessdt.play.gamelog import GameLog, GameRecord


def _rec(rnd: int, colour: int, result: str, first: int | None, *, masked: bool = False) -> GameRecord:
    """Game `colour` of pair `rnd` between settings a and b (colour 0: a has White)."""
    white, black = ("a", "b") if colour == 0 else ("b", "a")
    return GameRecord(id=f"a|b|{rnd}|{colour}", white=white, black=black, result=result, termination="checkmate",
                      plies=60, model_moves={"white": 30, "black": 30},
                      illegal={"white": int(first is not None), "black": 0}, masked=masked, engine_restarts=0,
                      seconds=0.0, pgn="", tags={"a": "a", "b": "b", "round": rnd}, first_illegal_ply=first)


def test_strict_record_cuts_the_game_and_the_offender_loses() -> None:
    white_slips = strict_record(_rec(0, 0, "1-0", 10))
    assert (white_slips.result, white_slips.termination, white_slips.plies) == ("0-1", ILLEGAL_MOVE, 10)
    black_slips = strict_record(_rec(0, 0, "0-1", 7))
    assert black_slips.result == "1-0"
    clean = _rec(0, 0, "1/2-1/2", None)
    assert strict_record(clean) == clean
    with pytest.raises(ValueError, match="masked"):
        strict_record(_rec(0, 0, "1-0", None, masked=True))
    unrecorded = GameRecord(**{**clean.to_json(), "illegal": {"white": 2, "black": 0}})
    with pytest.raises(ValueError, match="first_illegal_ply"):
        strict_record(unrecorded)


def test_strict_pairs_score_the_same_games_both_ways() -> None:
    # pair 0: a (White) wins on the board, but slipped at ply 4; b wins the return game cleanly
    # pair 1: two draws, b (Black in game 0) slipped at ply 9 in game 0
    records = [_rec(0, 0, "1-0", 4), _rec(0, 1, "1-0", None), _rec(1, 0, "1/2-1/2", 9), _rec(1, 1, "1/2-1/2", None)]
    (row,) = strict_pairs(records)
    assert (row.a, row.b, row.fully_legal) == ("a", "b", 2)
    assert row.replaced.score == pytest.approx((0 + 1 + 0.5 + 0.5) / 4)  # b's score as played
    assert row.strict.score == pytest.approx((1 + 1 + 0 + 0.5) / 4)  # a's slip loses, b's slip loses
    assert row.lost_to_illegal == {"a": 1, "b": 1}
    assert row.replaced.pairs == row.strict.pairs == 2


def test_cli_legality_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = GameLog(tmp_path / "match_r1000_vs_r2000.jsonl", {"settings": ["a", "b"]})
    for r in [_rec(0, 0, "1-0", 4), _rec(0, 1, "1-0", None)]:
        log.add(r)
    assert cli.main(["legality-strict", str(log.path)]) == 0
    out = capsys.readouterr().out
    assert "| a | b | 2 | 1 = 50% [" in out and (tmp_path / "match_r1000_vs_r2000.strict.json").is_file()
    assert out.startswith("**Model inputs: not recorded")  # no run directory with a config.json around the log
    with pytest.raises(UserError, match="no such match log"):
        strict_match(tmp_path / "missing.jsonl")
