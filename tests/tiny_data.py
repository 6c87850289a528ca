"""A tiny prepared data set for model/training tests, written with shards.SplitWriter directly.

Random legal games from conftest.random_game, tokenized like `chessdt prepare --label elo`
(``<bos> <white elo> <black elo> moves <end>``; game_arrays also gives python-chess's board after
every token, which batches must reproduce), so these tests do not depend on the PGN reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import chess
import numpy as np
from conftest import random_game

from chessdt.data.shards import SplitWriter
from chessdt.rules import white_class
from chessdt.tokenizer import board_array
from chessdt.tokenizer import Vocab


def game_arrays(seed: int, vocab: Vocab, max_plies: int = 60) -> tuple[np.ndarray, np.ndarray]:
    return game_arrays_and_result(seed, vocab, max_plies)[:2]


def game_arrays_and_result(seed: int, vocab: Vocab, max_plies: int = 60) -> tuple[np.ndarray, np.ndarray, str]:
    game = random_game(seed, max_plies=max_plies)
    board = chess.Board()
    start = board_array(board)
    tokens = [vocab.bos, vocab.rating_token(int(game.headers["WhiteElo"])),
              vocab.rating_token(int(game.headers["BlackElo"]))]
    boards = [start] * 3
    for move in game.mainline_moves():
        board.push(move)
        tokens.append(vocab.encode_move(move))
        boards.append(board_array(board))
    tokens.append(vocab.end)
    boards.append(boards[-1])
    return np.array(tokens, dtype=np.uint16), np.stack(boards), game.headers["Result"]


def write_dataset(directory: Path, n_train: int = 48, n_val: int = 8, seed: int = 0,
                  max_plies: int = 60, results: bool = True) -> Path:
    """The data set; without `results`, one as prepared before game results were stored."""
    vocab = Vocab()
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 100_000)):
        writer = SplitWriter(directory, split)
        for i in range(n):
            tokens, boards, result = game_arrays_and_result(seed + offset + i, vocab, max_plies)
            writer.write(tokens, np.array([len(tokens)]), np.array([white_class(result)]))
        writer.close(directory, split)
        if not results:
            (directory / f"{split}.results").unlink()
        counts[split] = writer.n_tokens
    meta = {"format_version": 2, "prefix": ["white_elo", "black_elo"], "rating_bucket": 100,
            "vocab_hash": vocab.hash, "vocab_size": vocab.size, "label": "elo",
            "tokens": counts}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory
