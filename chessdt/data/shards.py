"""On-disk format of a prepared data set: token shards, per-game offsets and meta.json.

A prepared directory holds, per split (``train``, ``val``):

* ``{split}.tokens``: uint16, every game's sequence back to back:
  ``<bos> <condition tokens...> move move ... <end>``;
* ``{split}.offsets``: int64, ``n_games + 1`` offsets into the tokens (game i is
  ``tokens[offsets[i]:offsets[i+1]]``);
* ``{split}.results`` (sets prepared since the value head, ``meta["results"]``): int8, one per game,
  its result from White's side: 0 White won, 1 draw, 2 Black won (:func:`chessdt.rules.white_class`),
  -1 unknown. Older sets lack it; they still load (``Split.results`` is None), and a model with a
  value head asks for the set to be prepared again;
* ``meta.json``: written last, so a directory without it is not a complete data set.

No boards are stored: the board after each token is a function of the moves before it, computed
when a batch is drawn (:mod:`chessdt.data.boards`), so a set costs about 2 bytes per token plus
9 bytes per game. Format 1 also wrote ``{split}.boards`` (64 bytes per token); such sets still
load (their tokens are the same) and the boards file is not read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chessdt.errors import UserError
from chessdt.tokenizer import Vocab

SPLITS = ("train", "val")
TOKEN_DTYPE = np.uint16
OFFSETS_PIECE = 1 << 20  # games whose offsets are summed at a time when a split is closed
FORMAT_VERSION = 2  # 2: no {split}.boards (boards computed from the moves); 1 still loads


class SplitWriter:
    """Appends games to one split's files, constant in memory: lengths go to a scratch file that
    becomes the offsets when the split is closed."""

    def __init__(self, directory: Path, split: str) -> None:
        self.tokens_f = open(directory / f"{split}.tokens", "wb")
        self.results_f = open(directory / f"{split}.results", "wb")  # per game, White's class; -1 unknown
        self.lengths_path = directory / f"{split}.lengths.partial"
        self.lengths_f = open(self.lengths_path, "wb")
        self.n_tokens = 0
        self.n_games = 0

    def write(self, tokens: np.ndarray, lengths: np.ndarray, results: np.ndarray | None = None) -> None:
        """Append games given as concatenated tokens and their lengths (and each game's result class
        from White's side; None = unknown)."""
        tokens.astype(TOKEN_DTYPE, copy=False).tofile(self.tokens_f)
        if results is None:
            results = np.full(len(lengths), -1, np.int8)
        assert len(results) == len(lengths)
        results.astype(np.int8, copy=False).tofile(self.results_f)
        lengths.astype(np.int64, copy=False).tofile(self.lengths_f)
        self.n_tokens += int(len(tokens))
        self.n_games += int(len(lengths))

    def close(self, directory: Path, split: str) -> None:
        for f in (self.tokens_f, self.results_f, self.lengths_f):
            f.close()
        with open(directory / f"{split}.offsets", "wb") as out:
            np.zeros(1, np.int64).tofile(out)
            total = 0
            if self.n_games:
                lengths = np.memmap(self.lengths_path, dtype=np.int64, mode="r")
                for i in range(0, len(lengths), OFFSETS_PIECE):
                    part = np.cumsum(lengths[i : i + OFFSETS_PIECE]) + total
                    part.tofile(out)
                    total = int(part[-1])
                del lengths
        self.lengths_path.unlink()


@dataclass(frozen=True)
class Split:
    """One split of a prepared data set, memory-mapped."""

    tokens: np.ndarray  # (N,) uint16
    offsets: np.ndarray  # (G+1,) int64
    results: np.ndarray | None = None  # (G,) int8 result class from White's side, -1 unknown; None: not stored

    @property
    def n_games(self) -> int:
        return len(self.offsets) - 1

    def game(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True)
class PreparedData:
    """A prepared data directory opened for reading (memory maps, nothing loaded whole)."""

    path: Path
    meta: dict[str, Any]
    vocab: Vocab
    splits: dict[str, Split]

    @property
    def prefix_len(self) -> int:
        """Tokens before the first move: <bos> plus the condition slots."""
        return 1 + len(self.meta["prefix"])

    @classmethod
    def open(cls, path: str | Path) -> "PreparedData":
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"{path} is not a complete prepared data set (no meta.json); "
                            "run `chessdt prepare` again")
        meta = json.loads(meta_path.read_text())
        version = int(meta.get("format_version", 1))
        if version > FORMAT_VERSION:
            raise UserError(f"{path} was prepared by a newer chessdt (format {version}, this one reads up to "
                            f"{FORMAT_VERSION}); run `chessdt prepare` again with this version")
        vocab = Vocab(rating_bucket=int(meta["rating_bucket"]))
        if vocab.hash != meta["vocab_hash"]:
            raise UserError(f"{path}: vocabulary hash {meta['vocab_hash']} does not match this "
                            f"chessdt's {vocab.hash} (size {meta['vocab_size']} vs {vocab.size})")
        splits = {}
        for split in SPLITS:
            offsets = np.fromfile(path / f"{split}.offsets", dtype=np.int64)
            n_tok = int(offsets[-1]) if len(offsets) else 0
            tokens = (np.memmap(path / f"{split}.tokens", dtype=TOKEN_DTYPE, mode="r", shape=(n_tok,))
                      if n_tok else np.zeros(0, TOKEN_DTYPE))
            results = None
            if (path / f"{split}.results").is_file():
                results = np.fromfile(path / f"{split}.results", dtype=np.int8)
                if len(results) != len(offsets) - 1:
                    raise UserError(f"{path / f'{split}.results'} holds {len(results)} results for "
                                    f"{len(offsets) - 1} games; run `chessdt prepare` again")
            splits[split] = Split(tokens=tokens, offsets=offsets, results=results)
        return cls(path=path, meta=meta, vocab=vocab, splits=splits)
