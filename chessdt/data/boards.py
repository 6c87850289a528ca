"""Boards from moves, for a whole batch at once: the board before and after every move of games
that start from the standard position, computed with array operations instead of stored.

A prepared data set holds only move tokens (2 bytes each); the model's state input (the board
after each token, :func:`chessdt.tokenizer.board_array` codes) is rebuilt here when a batch is
drawn. The loop runs over plies, not games: ply k of every game in the batch is one set of array
operations on a (games, 64) board, so a batch of B segments costs about as many numpy calls as its
longest game has plies, whatever B is. A move needs no more than the board it is played on: the
king's two-square step from e1/e8 is castling (its rook comes along), a promotion names its piece,
and a pawn's diagonal step onto an empty square is en passant (the pawn beside it goes).

>>> import chess
>>> b = chess.Board(); moves = [chess.Move.from_uci(u) for u in ("e2e4", "d7d5", "e4d5")]
>>> rows = replay(np.array([MOVE_IDS[m.uci()] for m in moves]), np.array([0, 3]))
>>> rows.shape, int(rows[3][chess.D5]), int(rows[3][chess.E4])  # a white pawn took on d5
((4, 64), 1, 0)
"""

from __future__ import annotations

import functools

import chess
import numpy as np

from chessdt.tokenizer import NUM_MOVES, all_moves, board_array

MOVE_IDS = {m.uci(): i for i, m in enumerate(all_moves())}  # for doctests and tests
KING_HOMES = (chess.E1, chess.E8)
# castling as the king's move -> the rook's from- and to-square
_CASTLE_ROOK = {(chess.E1, chess.G1): (chess.H1, chess.F1), (chess.E1, chess.C1): (chess.A1, chess.D1),
                (chess.E8, chess.G8): (chess.H8, chess.F8), (chess.E8, chess.C8): (chess.A8, chess.D8)}


@functools.cache
def _move_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per move id: from-square, to-square, promotion piece type (0 none), rook from and to (-1 when
    the move cannot be castling)."""
    moves = all_moves()
    fr = np.array([m.from_square for m in moves], np.int64)
    to = np.array([m.to_square for m in moves], np.int64)
    promo = np.array([m.promotion or 0 for m in moves], np.int64)
    rook_fr = np.full(NUM_MOVES, -1, np.int64)
    rook_to = np.full(NUM_MOVES, -1, np.int64)
    for i, m in enumerate(moves):
        if (m.from_square, m.to_square) in _CASTLE_ROOK and m.promotion is None:
            rook_fr[i], rook_to[i] = _CASTLE_ROOK[(m.from_square, m.to_square)]
    return fr, to, promo, rook_fr, rook_to


START = board_array(chess.Board())  # (64,) uint8


def replay(moves: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(M + G, 64) uint8 boards of G games given as move ids back to back (game g is
    ``moves[offsets[g]:offsets[g+1]]``, legal, from the standard start): each game's start position,
    then the board after each of its moves (game g's rows start at ``offsets[g] + g``)."""
    moves = np.asarray(moves, np.int64)
    offsets = np.asarray(offsets, np.int64)
    G, M = len(offsets) - 1, len(moves)
    if G == 0:
        return np.zeros((0, 64), np.uint8)
    fr_t, to_t, promo_t, rook_fr_t, rook_to_t = _move_tables()
    lengths = np.diff(offsets)
    L = int(lengths.max())
    # (G, L) move ids, padded with a move from a1 to a1: it empties a1, then puts its piece back
    pad = np.full((G, L), MOVE_IDS["a1b1"], np.int64)
    game = np.repeat(np.arange(G), lengths)
    ply = np.arange(M) - offsets[game]
    pad[game, ply] = moves
    real = np.zeros((G, L), bool)
    real[game, ply] = True
    fr = np.where(real, fr_t[pad], 0)
    to = np.where(real, to_t[pad], 0)
    promo = np.where(real, promo_t[pad], 0)
    rook_fr, rook_to = rook_fr_t[pad], rook_to_t[pad]
    diagonal = (np.abs(fr % 8 - to % 8) == 1) & (np.abs(fr // 8 - to // 8) == 1)
    # plies where some game may castle, promote or take en passant (the rest skip those steps)
    can_castle, can_promote, can_ep = (np.asarray(x.any(axis=0), bool) for x in (rook_fr >= 0, promo > 0, diagonal))
    out = np.empty((G, L + 1, 64), np.uint8)
    board = np.tile(START, (G, 1))
    out[:, 0] = board
    rows = np.arange(G)
    for k in range(L):  # one ply of every game at once
        f, t = fr[:, k], to[:, k]
        piece = board[rows, f]
        board[rows, f] = 0
        colour = 6 * (k % 2)  # black moves on odd plies
        if can_promote[k]:
            piece = np.where(promo[:, k] > 0, promo[:, k] + colour, piece).astype(np.uint8)
        if can_ep[k]:  # a pawn's diagonal step onto an empty square takes the pawn beside it
            ep = np.flatnonzero(diagonal[:, k] & (piece == chess.PAWN + colour) & (board[rows, t] == 0))
            board[ep, t[ep] + (8 if colour else -8)] = 0
        board[rows, t] = piece
        if can_castle[k]:  # the king's two-square step brings its rook along
            c = np.flatnonzero((rook_fr[:, k] >= 0) & (piece == chess.KING + colour))
            board[c, rook_fr[c, k]] = 0
            board[c, rook_to[c, k]] = chess.ROOK + colour
        out[:, k + 1] = board
    keep = np.zeros((G, L + 1), bool)
    keep[:, 0] = True
    keep[:, 1:] = real
    return out[keep]
