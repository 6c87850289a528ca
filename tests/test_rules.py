"""Chess rules shared by every wing: game over (automatic and claimed draws), lines, scores."""

import chess
import chess.engine
import pytest

from chessdt.errors import UserError
from chessdt.rules import (CP_CAP, MATE_SCORE, Strength, centipawns, clipped_cp, final_cp, game_over, parse_line,
                           Opponent, white_score)


def _shuffle_knights(times: int) -> chess.Board:
    b = chess.Board()
    for m in ["g1f3", "g8f6", "f3g1", "f6g8"] * times:
        b.push_uci(m)
    return b


def test_game_over_rules() -> None:
    assert game_over(chess.Board()) is None
    assert game_over(chess.Board("7k/6Q1/6K1/8/8/8/8/8 b - - 0 1")) == ("1-0", "checkmate")
    assert game_over(chess.Board("7k/8/6Q1/8/8/8/8/K7 b - - 0 1")) == ("1/2-1/2", "stalemate")
    assert game_over(chess.Board("7k/8/8/8/8/8/8/K6R w - - 100 80")) == ("1/2-1/2", "fifty_moves")
    assert game_over(_shuffle_knights(2)) == ("1/2-1/2", "threefold_repetition")


def test_claimed_draws_end_a_move_earlier() -> None:
    """With claim_draw the side to move may claim a repetition its next move would make."""
    b = _shuffle_knights(1)
    for m in ["g1f3", "g8f6", "f3g1"]:
        b.push_uci(m)
    assert game_over(b) is None  # only twice so far: play goes on
    assert game_over(b, claim_draw=True) == ("1/2-1/2", "threefold_repetition")  # ...f6g8 would make three
    assert game_over(chess.Board("7k/6Q1/6K1/8/8/8/8/8 b - - 0 1"), claim_draw=True) == ("1-0", "checkmate")


def test_parse_line() -> None:
    assert [m.uci() for m in parse_line("e4 c5 Nf3")] == ["e2e4", "c7c5", "g1f3"]
    assert [m.uci() for m in parse_line("d2d4 Nf6")] == ["d2d4", "g8f6"]
    assert [m.uci() for m in parse_line("1. e4 c5 2.Nf3 d6 *")] == ["e2e4", "c7c5", "g1f3", "d7d6"]
    with pytest.raises(UserError, match="not a legal move"):
        parse_line("e4 e4")
    with pytest.raises(UserError, match="not a legal move"):
        parse_line("e2e5")  # UCI-shaped but illegal


def test_scores() -> None:
    assert white_score("1-0") == 1.0 and white_score("0-1") == 0.0 and white_score("1/2-1/2") == 0.5
    mate = chess.engine.PovScore(chess.engine.Mate(2), chess.WHITE)
    assert centipawns(mate, chess.WHITE) == MATE_SCORE - 2 and centipawns(mate, chess.BLACK) == -(MATE_SCORE - 2)
    assert clipped_cp(mate, chess.BLACK) == -CP_CAP
    small = chess.engine.PovScore(chess.engine.Cp(35), chess.BLACK)
    assert clipped_cp(small, chess.BLACK) == 35.0 and clipped_cp(small, chess.WHITE) == -35.0
    mated = chess.Board("7k/6Q1/6K1/8/8/8/8/8 b - - 0 1")
    assert final_cp(mated, chess.WHITE) == CP_CAP and final_cp(mated, chess.BLACK) == -CP_CAP
    assert final_cp(chess.Board("7k/8/6Q1/8/8/8/8/K7 b - - 0 1"), chess.WHITE) == 0.0
    assert final_cp(chess.Board(), chess.WHITE) is None


def test_one_grammar_for_an_opponents_strength() -> None:
    assert Strength.parse("1600") == Strength(elo=1600) == Strength.parse("elo=1600")
    assert Strength.parse(" Skill=3 ") == Strength(skill=3) and Strength.parse("full") == Strength()
    for s in (Strength(elo=1600), Strength(skill=0), Strength()):
        assert Strength.parse(s.spec) == s
    assert Opponent.parse("random").kind == "random" and Opponent.parse("self", models=True).kind == "self"
    with pytest.raises(UserError, match="opponent 'self': use 'random', 'skill=N'"):  # a model only where allowed
        Opponent.parse("self")
    with pytest.raises(UserError, match="UCI_Elo 1000 outside"):  # a range error says so, not "use ..."
        Opponent.parse("1000")
    for spec in ("random", "base", "1350/500", "skill=0,eps=0.5", "softmax=20,gate=50/150",
                 "uci=lc0 --weights=maia-1500.pb.gz@1500/1"):  # every kind reads its own spec back
        o = Opponent.parse(spec, models=True)
        assert Opponent.parse(o.spec, models=True) == o
    assert Opponent.parse("softmax=20,gate=50/150").nodes == 150
    for bad in ("1350/0", "1350/x", "uci=lc0", "uci=lc0@x"):
        with pytest.raises(UserError):
            Opponent.parse(bad)
    with pytest.raises(UserError, match="strength 'depth=3'"):
        Strength.parse("depth=3")
