"""Chess notation for people: moves typed in SAN or UCI, boards drawn in Unicode, move lists.

:func:`parse_move` is forgiving about case, check marks and castling spelled with zeros, and says
in one line why a move it cannot play is wrong; :func:`draw_board` draws coordinates, flips for
Black and highlights the last move (ANSI colours only where the stream supports them).
"""

from __future__ import annotations

import os
import re
from typing import TextIO

import chess


# 256-colour backgrounds: light/dark squares, the same squares when part of the last move, check.
_BG = {(True, False): 180, (False, False): 137, (True, True): 186, (False, True): 143}
_BG_CHECK = 167
_FG = {chess.WHITE: 231, chess.BLACK: 16}
_RESET = "\x1b[0m"


# -- input ------------------------------------------------------------------------------------------
class MoveError(ValueError):
    """Input that is not a legal move here; the message says why, in one line."""


_UCI_SHAPE = re.compile(r"^([a-h][1-8])([a-h][1-8])([qrbn])?$")
_SAN_SHAPE = re.compile(r"^([nbrqk])?([a-h])?([1-8])?([a-h][1-8])([qrbn])?$|^o{2,3}$")


def _key(text: str) -> str:
    """A move written without case, capture/check/promotion marks or dashes: 'Nxf3+' -> 'nf3'."""
    t = text.strip().lower().replace("0", "o")
    t = re.sub(r"(?<=[1-8])\s*e\.?p\.?$", "", t)  # 'exd6 e.p.'
    return re.sub(r"[\s+#!?x:=\-]", "", t)


def _keys(board: chess.Board, move: chess.Move) -> set[str]:
    uci = move.uci()
    keys = {_key(board.san(move)), uci}
    piece = board.piece_type_at(move.from_square)
    if piece is not None:
        keys.add(chess.piece_symbol(piece) + uci)  # long algebraic: Ng1-f3, Pe2-e4
    if piece is not None and piece != chess.PAWN:
        keys.add(chess.piece_symbol(piece) + uci[2:])  # under-disambiguated: 'Nd2' when two knights can
    if piece == chess.PAWN:
        keys.add("p" + _key(board.san(move)))  # Pe4
    return keys


def parse_move(board: chess.Board, text: str) -> chess.Move:
    """The legal move that `text` names, in SAN or UCI, any case, with or without check marks.

    Raises MoveError saying why when it names none, or several (a lower-case 'b' that reads as
    both a b-pawn capture and a bishop move is ambiguous unless only one of them is legal).

    >>> board = chess.Board()
    >>> [board.san(parse_move(board, t)) for t in ("e4", "NF3", "g1h3", "E2E4+", "Nc3!")]
    ['e4', 'Nf3', 'Nh3', 'e4', 'Nc3']
    >>> parse_move(board, "e5")
    Traceback (most recent call last):
    ...
    chessdt.play.notation.MoveError: illegal move: no white pawn can reach e5
    """
    raw = text.strip().rstrip("+#!? ")
    if not raw:
        raise MoveError("empty move")
    legal = list(board.legal_moves)
    # Exact SAN (case as written) first: 'bxc3' is the pawn and 'Bxc3' the bishop, as in PGN.
    try:
        move = board.parse_san(raw)
        if move in legal:
            return move
    except ValueError:
        pass
    key = _key(raw)
    matches = [m for m in legal if key in _keys(board, m)]
    # An upper-case piece letter names the piece ('Bc3' is never the b-pawn), unless what follows
    # is no destination ('B4' is b4 typed with caps lock) or the whole is UCI ('B2B4').
    if raw[0] in "NBRQK" and re.search(r"[a-h][1-8]$", key[1:]) and not _UCI_SHAPE.match(key):
        piece = chess.PIECE_SYMBOLS.index(raw[0].lower())
        matches = [m for m in matches if board.piece_type_at(m.from_square) == piece]
    if len(matches) == 1:
        return matches[0]
    if matches:
        sans = sorted(board.san(m) for m in matches)
        raise MoveError(f"ambiguous: {text.strip()!r} could be {' or '.join(sans)}")
    raise MoveError(_why_illegal(board, raw, key, legal))


def _why_illegal(board: chess.Board, raw: str, key: str, legal: list[chess.Move]) -> str:
    """A one-line reason why an input that names no legal move was refused."""
    side = "white" if board.turn == chess.WHITE else "black"
    if any(key + p in _keys(board, m) for m in legal for p in "qrbn"):
        return f"say which piece to promote to, e.g. {raw}=Q or {raw}q"
    if board.is_game_over():
        return "the game is over"
    uci = _UCI_SHAPE.match(key)
    if uci:
        src, dst = chess.parse_square(uci.group(1)), chess.parse_square(uci.group(2))
        piece = board.piece_at(src)
        if piece is None:
            return f"illegal move: there is no piece on {uci.group(1)}"
        if piece.color != board.turn:
            return f"illegal move: the piece on {uci.group(1)} is not yours ({side} to move)"
        move = chess.Move(src, dst, chess.PIECE_SYMBOLS.index(uci.group(3)) if uci.group(3) else None)
        if board.is_pseudo_legal(move):
            return "illegal move: your king would be in check"
        name = chess.piece_name(piece.piece_type)
        return f"illegal move: the {name} on {uci.group(1)} cannot go to {uci.group(2)}"
    san = _SAN_SHAPE.match(key)
    if san:
        check = " (you are in check)" if board.is_check() else ""
        if san.group(0).startswith("o"):
            return f"illegal move: you cannot castle {'long' if len(key) == 3 else 'short'} now{check}"
        name = chess.piece_name(chess.PIECE_SYMBOLS.index(san.group(1))) if san.group(1) else "pawn"
        if san.group(1) == "b" and raw[0] == "b":  # lower case: the b-pawn or, loosely written, a bishop
            name = "bishop or b-pawn"
        return f"illegal move: no {side} {name} can reach {san.group(4)}{check}"
    return f"not a move or a command: {raw!r} (type help)"


# -- output ------------------------------------------------------------------------------------------
def supports_color(stream: TextIO) -> bool:
    """Colour only on a terminal that is not 'dumb', and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR", ""):
        return False
    if os.environ.get("TERM", "") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def draw_board(board: chess.Board, *, flipped: bool = False, color: bool = False) -> str:
    """The position in Unicode with coordinates, white at the bottom unless `flipped`.

    The last move's squares are highlighted: by background colour, or in plain text by
    brackets around the square. A king in check gets a red square in colour.

    >>> print(draw_board(chess.Board("8/8/8/8/8/8/8/K6k w - - 0 1")))
        a  b  c  d  e  f  g  h
     8  ·  ·  ·  ·  ·  ·  ·  ·  8
     7  ·  ·  ·  ·  ·  ·  ·  ·  7
     6  ·  ·  ·  ·  ·  ·  ·  ·  6
     5  ·  ·  ·  ·  ·  ·  ·  ·  5
     4  ·  ·  ·  ·  ·  ·  ·  ·  4
     3  ·  ·  ·  ·  ·  ·  ·  ·  3
     2  ·  ·  ·  ·  ·  ·  ·  ·  2
     1  ♔  ·  ·  ·  ·  ·  ·  ♚  1
        a  b  c  d  e  f  g  h
    """
    last = board.peek() if board.move_stack else None
    marked = {last.from_square, last.to_square} if last else set()
    checked = board.king(board.turn) if board.is_check() else None
    files = range(7, -1, -1) if flipped else range(8)
    ranks = range(8) if flipped else range(7, -1, -1)
    header = "    " + "".join(f"{chess.FILE_NAMES[f]}  " for f in files).rstrip()
    lines = [header]
    for r in ranks:
        cells = []
        for f in files:
            sq = chess.square(f, r)
            piece = board.piece_at(sq)
            if color:
                bg = _BG_CHECK if sq == checked else _BG[(chess.square_file(sq) + r) % 2 == 1, sq in marked]
                glyph = " "
                fg = ""
                if piece is not None:
                    # Solid glyphs for both sides, told apart by colour: outlines vanish on a tan square.
                    glyph = chess.UNICODE_PIECE_SYMBOLS[piece.symbol().lower()]
                    fg = f"\x1b[38;5;{_FG[piece.color]}m"
                cells.append(f"\x1b[48;5;{bg}m{fg} {glyph} {_RESET}")
            else:
                glyph = piece.unicode_symbol() if piece is not None else "·"
                cells.append(f"[{glyph}]" if sq in marked else f" {glyph} ")
        lines.append(f" {r + 1} " + "".join(cells) + f" {r + 1}")
    lines.append(header)
    return "\n".join(lines)


def move_list(board: chess.Board) -> str:
    """The game's moves in SAN with move numbers ('1. e4 e5 2. Nf3'), from its start position."""
    if not board.move_stack:
        return ""
    return board.root().variation_san(board.move_stack)
