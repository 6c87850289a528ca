"""Boards replayed from move tokens (chessdt.data.boards) against python-chess, position by position,
and prepared sets of the older format (with a stored boards file) against the replay."""

from __future__ import annotations

import json
from pathlib import Path

import chess
import chess.pgn
import numpy as np
import pytest
from conftest import FIXTURES, random_game
from tiny_data import game_arrays, write_dataset

from chessdt.data.batches import Batcher
from chessdt.data.boards import replay
from chessdt.data.shards import PreparedData
from chessdt.errors import UserError
from chessdt.tokenizer import Vocab, board_array

VOCAB = Vocab()

# lines with every move a board of piece codes could get wrong
TRICKY = [
    "e4 a6 e5 d5 exd6 Nf6 dxc7 Nbd7 cxd8=N Kxd8",  # en passant by White, promotion to a knight with capture
    "a3 e5 a4 e4 d4 exd3 Qxd3 Nf6 Qd1",  # en passant by Black
    "Nf3 Nf6 g3 g6 Bg2 Bg7 O-O O-O Re1 Re8 Kh1 Kh8 Rg1 Rg8",  # castling, then rooks step e1-g1 and e8-g8
    "d4 d5 Nc3 Nc6 Bf4 Bf5 Qd2 Qd7 O-O-O O-O-O Kb1 Kb8",  # long castling on both sides
    "e4 e5 Ke2 Ke7 Ke1 Ke8 Nf3 Nf6 Be2 Be7 Kf1 Kf8",  # kings that left and came back cannot castle
    "h4 g5 hxg5 h5 gxh6 Bg7 hxg7 Nf6 gxh8=Q Ng8 Qxg8",  # en passant, then on to a queen
]


def _python_chess(games: list[list[chess.Move]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move ids, offsets and python-chess's boards (start, then after each move) of games."""
    ids, offsets, boards = [], [0], []
    for moves in games:
        board = chess.Board()
        boards.append(board_array(board))
        for m in moves:
            board.push(m)
            ids.append(VOCAB.encode_move(m))
            boards.append(board_array(board))
        offsets.append(len(ids))
    return np.array(ids, np.int64), np.array(offsets, np.int64), np.stack(boards)


def _line(sans: str) -> list[chess.Move]:
    board = chess.Board()
    return [board.push_san(san) for san in sans.split()]


def test_tricky_lines_replay_as_python_chess_plays_them() -> None:
    moves, offsets, want = _python_chess([_line(t) for t in TRICKY])
    assert np.array_equal(replay(moves, offsets), want)
    # the rook's e1-g1 is not castling: h1 keeps nothing, f1 nothing, g1 a white rook
    rows = replay(*_python_chess([_line(TRICKY[2])])[:2])
    assert rows[-2][chess.G1] == chess.ROOK and rows[-2][chess.H1] == chess.KING


def test_every_position_of_the_fixture_games_is_python_chess_board() -> None:
    games = []
    with open(FIXTURES / "classics.pgn") as f:
        while (g := chess.pgn.read_game(f)) is not None:
            games.append(list(g.mainline_moves()))
    games += [list(random_game(seed, max_plies=300).mainline_moves()) for seed in range(120)]
    moves, offsets, want = _python_chess(games)
    got = replay(moves, offsets)
    assert got.shape == want.shape and len(want) > 10_000
    assert np.array_equal(got, want)
    # any cut of the games into batches gives the same boards
    half = len(games) // 2
    first = replay(moves[: offsets[half]], offsets[: half + 1])
    assert np.array_equal(first, want[: offsets[half] + half])
    assert replay(np.zeros(0, np.int64), np.zeros(1, np.int64)).shape == (0, 64)


def _old_format(directory: Path) -> Path:
    """A set as prepared before format 2: meta format_version 1 and {split}.boards, 64 bytes per token."""
    write_dataset(directory, n_train=30, n_val=4)
    meta = json.loads((directory / "meta.json").read_text())
    meta.update(format_version=1, boards=True)
    (directory / "meta.json").write_text(json.dumps(meta))
    for split, offset, n in (("train", 0, 30), ("val", 100_000, 4)):
        np.concatenate([game_arrays(offset + i, VOCAB)[1] for i in range(n)]).tofile(directory / f"{split}.boards")
    return directory


def test_an_old_prepared_set_loads_and_its_batches_show_its_stored_boards(tmp_path: Path) -> None:
    data = PreparedData.open(_old_format(tmp_path / "old"))
    stored = np.fromfile(tmp_path / "old" / "train.boards", np.uint8).reshape(-1, 64)
    b = Batcher(data, "train", context=24, batch_tokens=512, boards=True)
    P, off = data.prefix_len, data.splits["train"].offsets
    for ids in b.epoch_plan(0):
        batch = b.batch(ids)
        assert batch.boards is not None
        for row, (g, s, n) in enumerate(b.segs[ids]):
            body = int(off[g]) + P + s
            assert (batch.boards[row, P:n].numpy() == stored[body : body + n - P]).all()


def test_a_set_from_a_newer_format_is_refused_in_one_line(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "new", n_train=4, n_val=2)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(UserError, match="run `chessdt prepare` again") as e:
        PreparedData.open(path)
    assert "\n" not in str(e.value)
