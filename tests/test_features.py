"""The tensor chess geometry must agree with python-chess on real-looking positions."""

from __future__ import annotations

import random

import chess
import numpy as np
import pytest
import torch

from chessdt.features import MOVE_FACTS, Geometry, code_facts
from chessdt.tokenizer import board_array
from chessdt.tokenizer import all_moves

MOVES = all_moves()


def positions(n: int, seed: int) -> list[chess.Board]:
    """Positions from random games, plus hand-picked checks, pins and castling cases."""
    rng = random.Random(seed)
    out = [chess.Board(fen) for fen in (
        "4k3/8/8/8/8/8/4r3/R3K2R w KQ - 0 1",  # rook check along the e-file
        "4k3/8/8/b7/8/8/3P4/4K3 w - - 0 1",  # pawn d2 pinned by the bishop
        "4k3/8/8/8/8/5n2/8/R3K2R w KQ - 0 1",  # knight check: castling out of check
        "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 0 1",
        "4k3/8/8/8/1b6/8/8/R3K2R w KQ - 0 1",  # long castle fine, b4 bishop hits e1? no: d2
        "4k3/8/8/8/8/2q5/8/R3K2R w KQ - 0 1",  # queen covers c1..e1 diagonal / d2
        "3qk3/8/8/8/8/8/3PP3/3K4 w - - 0 1",
        "8/8/8/3k4/8/8/2n1r3/4K3 w - - 0 1",  # double-ish: knight and rook
    )]
    while len(out) < n:
        b = chess.Board()
        for _ in range(rng.randrange(1, 120)):
            moves = list(b.legal_moves)
            if not moves or b.is_game_over():
                break
            b.push(rng.choice(moves))
        if not b.is_game_over():
            out.append(b)
    return out


def run(geo: Geometry, boards: list[chess.Board]):
    """(square features, in_check, facts (N, moves, len(MOVE_FACTS)) 0/1) of the boards."""
    arr = torch.from_numpy(np.stack([board_array(b) for b in boards]))
    turn = torch.tensor([0 if b.turn == chess.WHITE else 1 for b in boards])
    squares, in_check, code, castle_bad = geo(arr, turn)
    assert int(code.min()) >= 0 and int(code.max()) < len(code_facts())
    table = code_facts()
    facts = torch.zeros(len(boards), len(MOVES), len(MOVE_FACTS))
    others = [i for i, f in enumerate(MOVE_FACTS) if f != "castle_bad"]
    facts[..., others] = table[code.long()]
    facts[:, geo.castle_moves, MOVE_FACTS.index("castle_bad")] = castle_bad
    return squares, in_check, facts


@pytest.fixture(scope="module")
def geo() -> Geometry:
    return Geometry()


def test_square_features_match_python_chess(geo):
    boards = positions(300, seed=1)
    squares, in_check, _ = run(geo, boards)
    for i, b in enumerate(boards):
        me, them = b.turn, not b.turn
        no_king = b.copy(stack=False)
        no_king.remove_piece_at(b.king(me))
        for sq in range(64):
            assert bool(squares[i, sq, 0]) == no_king.is_attacked_by(them, sq), (b.fen(), sq, "attacked")
            assert bool(squares[i, sq, 1]) == b.is_attacked_by(me, sq), (b.fen(), sq, "defended")
            piece = b.piece_at(sq)
            pinned = piece is not None and piece.color == me and piece.piece_type != chess.KING and b.is_pinned(me, sq)
            assert bool(squares[i, sq, 2]) == pinned, (b.fen(), sq, "pinned")
        assert bool(in_check[i]) == b.is_check(), b.fen()


def test_no_fact_means_legal_for_every_pseudo_legal_move(geo):
    """With castling rights and en passant out of the picture (the facts cannot see them), a
    move of a piece that can travel that way is legal exactly when no fact is set."""
    boards = positions(300, seed=2)
    _, _, facts = run(geo, boards)
    checked = 0
    for i, b in enumerate(boards):
        legal = set(b.legal_moves)
        for j, m in enumerate(MOVES):
            piece = b.piece_at(m.from_square)
            if piece is None or piece.color != b.turn:
                continue
            target = b.piece_at(m.to_square)
            if target is not None and target.color == b.turn:
                continue
            if b.is_castling(m) or b.is_en_passant(m):
                continue
            # can this piece make this move on an empty board (pawns: either push or capture)?
            empty = chess.Board(None)
            empty.set_piece_at(m.from_square, piece)
            empty.turn = b.turn
            probe = chess.Board(None)
            probe.set_piece_at(m.from_square, piece)
            probe.set_piece_at(m.to_square, chess.Piece(chess.KNIGHT, not b.turn))
            probe.turn = b.turn
            if m not in empty.pseudo_legal_moves and m not in probe.pseudo_legal_moves:
                continue
            if piece.piece_type == chess.PAWN and chess.square_rank(m.to_square) in (0, 7) and m.promotion is None:
                continue
            checked += 1
            assert (not facts[i, j].any()) == (m in legal), (b.fen(), m.uci(), facts[i, j].tolist())
    assert checked > 5000


@pytest.mark.parametrize("fen,move,fact", [
    ("4k3/8/8/8/8/8/4r3/R3K2R w KQ - 0 1", "e1g1", "castle_bad"),
    ("4k3/8/8/8/8/8/4r3/R3K2R w KQ - 0 1", "a1a2", "check_unresolved"),
    ("4k3/8/8/b7/8/8/3P4/4K3 w - - 0 1", "d2d3", "pin_broken"),
    ("4k3/8/8/8/8/8/8/RN2K3 w Q - 0 1", "e1c1", "blocked"),
    ("4k3/8/8/8/8/8/8/R3K2r w Q - 0 1", "e1f1", "king_into_attack"),
    ("4k3/8/8/8/8/4n3/4P3/4K3 w - - 0 1", "e2e3", "pawn_push_onto_piece"),
    ("4k3/8/8/8/8/8/4P3/4K3 w - - 0 1", "e2d3", "pawn_capture_empty"),
    ("4k3/8/8/8/8/8/8/R1n1K3 w - - 0 1", "a1d1", "blocked"),
])
def test_named_fact(geo, fen, move, fact):
    b = chess.Board(fen)
    _, _, facts = run(geo, [b])
    j = MOVES.index(chess.Move.from_uci(move))
    assert facts[0, j, MOVE_FACTS.index(fact)] == 1, (fen, move, fact, facts[0, j].tolist())
    assert facts[0, j].sum() == 1, (fen, move, facts[0, j].tolist())  # and no other fact


def test_black_to_move_and_batch_shapes(geo):
    b = chess.Board("4k3/8/8/8/8/8/8/4K2R b K - 0 1")
    arr = torch.from_numpy(board_array(b)).expand(2, 3, 64)
    turn = torch.ones(2, 3, dtype=torch.long)
    squares, in_check, code, castle_bad = geo(arr, turn)
    assert squares.shape == (2, 3, 64, 3) and in_check.shape == (2, 3) and code.shape == (2, 3, len(MOVES))
    assert castle_bad.shape == (2, 3, 4)
    assert not bool(in_check.any())
    assert bool(squares[0, 0, chess.H8, 0])  # the rook on h1 attacks h8 for black's king


def test_castling_facts(geo):
    """Castling with rights: legal iff neither castle_bad nor blocked (the facts see no rights)."""
    for fen in ("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1", "r3k2r/8/8/8/8/8/8/RN2K1NR w KQkq - 0 1",
                "r3k2r/8/8/8/8/5q2/8/R3K2R w KQkq - 0 1", "r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 0 1",
                "r3k2r/8/8/8/8/8/8/R3K1q1 w Q - 0 1", "r3k2r/8/8/8/8/8/1r6/R3K2R w KQkq - 0 1"):
        b = chess.Board(fen)
        _, _, facts = run(geo, [b])
        for uci in (("e1g1", "e1c1") if b.turn == chess.WHITE else ("e8g8", "e8c8")):
            m = chess.Move.from_uci(uci)
            j = MOVES.index(m)
            assert (not facts[0, j].any()) == b.is_legal(m), (fen, uci, facts[0, j].tolist())


def test_board_without_king(geo):
    b = chess.Board("8/8/8/8/8/8/8/R7 w - - 0 1")
    squares, in_check, _ = run(geo, [b])
    assert not bool(in_check[0]) and not bool(squares[0, :, 2].any())
