"""Notation for people: move parsing (SAN, UCI, forgiving spellings, reasons for refusals), boards drawn."""

from __future__ import annotations

import io

import chess
import pytest

from chessdt.play.notation import MoveError, draw_board, parse_move, supports_color

START = chess.STARTING_FEN
B_PAWN_OR_BISHOP = "4k3/8/8/8/8/2p5/1P1B4/4K3 w - - 0 1"  # b2xc3 and Bd2xc3 both legal
PROMOTE = "4k3/P7/8/8/8/8/8/4K3 w - - 0 1"
CASTLE = "4k3/8/8/8/8/8/8/R3K2R w KQ - 0 1"


# -- parsing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fen, text, san", [
    (START, "e4", "e4"), (START, "E4", "e4"), (START, "e2e4", "e4"), (START, "E2E4", "e4"),
    (START, "e2-e4", "e4"), (START, "nf3", "Nf3"), (START, "NF3", "Nf3"), (START, "Ng1-f3", "Nf3"),
    (START, "Nf3+", "Nf3"), (START, "Nf3!?", "Nf3"), (START, "  g1f3  ", "Nf3"), (START, "Pe4", "e4"),
    (B_PAWN_OR_BISHOP, "bxc3", "bxc3"), (B_PAWN_OR_BISHOP, "bc3", "bxc3"), (B_PAWN_OR_BISHOP, "Bxc3", "Bxc3"),
    (B_PAWN_OR_BISHOP, "BXC3", "Bxc3"), (B_PAWN_OR_BISHOP, "Bc3", "Bxc3"), (B_PAWN_OR_BISHOP, "B4", "b4"),
    (B_PAWN_OR_BISHOP, "B2B4", "b4"),
    (PROMOTE, "a8=Q", "a8=Q+"), (PROMOTE, "a8q", "a8=Q+"), (PROMOTE, "a7a8Q", "a8=Q+"), (PROMOTE, "A8=n", "a8=N"),
    (CASTLE, "O-O", "O-O"), (CASTLE, "0-0", "O-O"), (CASTLE, "o-o-o", "O-O-O"), (CASTLE, "e1g1", "O-O"),
    (CASTLE, "e1c1", "O-O-O"), (CASTLE, "rd1", "Rd1"),
    ("4k3/8/8/8/8/8/8/N3K2N w - - 0 1", "Nhg3", "Ng3"), ("4k3/8/8/8/8/8/8/2B1K3 w - - 0 1", "bb2", "Bb2"),
])
def test_parse_move(fen: str, text: str, san: str) -> None:
    board = chess.Board(fen)
    assert board.san(parse_move(board, text)) == san


@pytest.mark.parametrize("fen, text, why", [
    (START, "e5", "no white pawn can reach e5"),
    (START, "e7e5", "the piece on e7 is not yours"),
    (START, "e3e4", "there is no piece on e3"),
    (START, "d1h5", "the queen on d1 cannot go to h5"),
    (START, "O-O", "cannot castle short"),
    (START, "hello", "not a move or a command"),
    (START, "0000", "not a move or a command"),
    (START, "--", "not a move or a command"),
    (START, "   ", "empty move"),
    (PROMOTE, "a8", "say which piece to promote to"),
    (PROMOTE, "a7a8", "say which piece to promote to"),
    ("4k3/4r3/8/8/8/8/3B4/4K3 w - - 0 1", "d2c3", "your king would be in check"),
    ("4k3/4r3/8/8/8/8/3B4/4K3 w - - 0 1", "Bc3", "(you are in check)"),
    ("4k3/8/8/8/8/8/8/1N2KN2 w - - 0 1", "Nd2", "ambiguous: 'Nd2' could be Nbd2 or Nfd2"),
    ("4k3/8/8/8/8/8/8/1N2KN2 w - - 0 1", "n-d2", "ambiguous: 'n-d2' could be Nbd2 or Nfd2"),
])
def test_parse_move_refuses_with_reason(fen: str, text: str, why: str) -> None:
    with pytest.raises(MoveError) as e:
        parse_move(chess.Board(fen), text)
    assert why in str(e.value)


# -- drawing -------------------------------------------------------------------------------------------
def test_draw_board_orientation_and_last_move() -> None:
    board = chess.Board()
    board.push_san("e4")
    plain = draw_board(board).splitlines()
    assert plain[0].split() == list("abcdefgh") and plain[-1].split() == list("abcdefgh")
    assert plain[1].startswith(" 8 ") and plain[1].endswith(" 8") and plain[8].startswith(" 1 ")
    assert plain[1].split()[1:9] == list("♜♞♝♛♚♝♞♜")
    assert "[♙]" in plain[5] and "[·]" in plain[7]  # e4 and e2 highlighted
    assert sum(line.count("[") for line in plain) == 2
    flipped = draw_board(board, flipped=True).splitlines()
    assert flipped[0].split() == list("hgfedcba") and flipped[1].startswith(" 1 ")
    assert flipped[1].split()[1:9] == list("♖♘♗♔♕♗♘♖")


def test_draw_board_colour() -> None:
    board = chess.Board()
    assert "\x1b[" not in draw_board(board)
    board.push_san("e4")
    coloured = draw_board(board, color=True)
    assert coloured.count("\x1b[48;5;186m") + coloured.count("\x1b[48;5;143m") == 2  # e2, e4 highlighted
    assert "·" not in coloured and "[" not in coloured.replace("\x1b[", "")
    check = chess.Board("4k3/8/8/8/8/8/4Q3/4K3 b - - 0 1")
    assert "\x1b[48;5;167m" in draw_board(check, color=True)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_supports_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert supports_color(_Tty()) and not supports_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not supports_color(_Tty())
    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.setenv("TERM", "dumb")
    assert not supports_color(_Tty())
