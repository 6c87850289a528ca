"""Training batches from a prepared data set: length-bucketed, deterministic, resumable.

A game ``<bos> cond... m1 ... mn <end>`` longer than the context is cut into *segments*: each is
the condition prefix followed by the next stretch of moves, and its prefix positions carry the
board reached before that stretch, so the model always sees the state (decision-transformer
style) and every move is a target exactly once. Loss is on moves and ``<end>``, never on
``<bos>`` or condition tokens. For a value head, every position with a loss also gets the game's
result as seen by the side to move there (:func:`chessdt.rules.result_class`: win, draw, loss).
Boards are not stored: each batch replays its segments' games from the start
(:func:`chessdt.data.boards.replay`, every segment at once).

Segments are sorted by length (ties in a seeded random order) and cut into micro-batches of about
``batch_tokens`` padded positions, so almost every position is a real token
(:func:`packing_efficiency`). The batch order of epoch ``e`` is a pure function of
``(seed, e)``; the micro-batch counter is the whole sampler state, so resuming is exact. With
several ranks, rank r takes batches r, r + world, ... of every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from chessdt.data.boards import replay
from chessdt.data.mix import EpochRepeats
from chessdt.data.shards import PreparedData, Split
from chessdt.errors import UserError
from chessdt.tokenizer import Vocab

IGNORE = -100  # target id that cross-entropy skips
PAD_MULTIPLE = 8  # batch widths are rounded up to this, so compiled kernels see few shapes


@dataclass(frozen=True)
class Batch:
    """Model inputs and targets for one micro-batch (CPU tensors)."""

    tokens: torch.Tensor  # (B, T) long input ids, padded with <pad>
    targets: torch.Tensor  # (B, T) long next-token ids, IGNORE where there is no loss
    boards: torch.Tensor | None  # (B, T, 64) uint8 board after each input token, or None
    plies: torch.Tensor  # (B, T) long moves played on that board
    n_real: int  # input positions that hold a real token (not padding)
    values: torch.Tensor | None = None  # (B, T) long W/D/L class for the side to move, IGNORE where none

    def to(self, device: torch.device | str) -> "Batch":
        nb = device != "cpu" and str(device) != "cpu"
        return Batch(tokens=self.tokens.to(device, non_blocking=nb), targets=self.targets.to(device, non_blocking=nb),
                     boards=None if self.boards is None else self.boards.to(device, non_blocking=nb),
                     plies=self.plies.to(device, non_blocking=nb), n_real=self.n_real,
                     values=None if self.values is None else self.values.to(device, non_blocking=nb))


def segments(split: Split, prefix_len: int, context: int) -> np.ndarray:
    """(S, 3) int64 rows (game, first body index, input length) covering every game's moves.

    The body of a game is its moves plus ``<end>``; a segment holds ``context + 1 - prefix_len``
    body tokens at most, so with its prefix it has at most ``context`` inputs.
    """
    chunk = context + 1 - prefix_len
    if chunk < 1:
        raise ValueError(f"context {context} leaves no room for moves after a {prefix_len}-token prefix")
    body = np.diff(split.offsets) - prefix_len  # (G,)
    n_seg = np.maximum((body + chunk - 1) // chunk, 0)
    game = np.repeat(np.arange(len(body)), n_seg)
    first_seg = np.repeat(np.cumsum(n_seg) - n_seg, n_seg)
    start = (np.arange(len(game)) - first_seg) * chunk
    n_body = np.minimum(body[game] - start, chunk)
    return np.stack([game, start, prefix_len + n_body - 1], axis=1).astype(np.int64)


def rating_token_ids(vocab: Vocab) -> np.ndarray:
    """Ids of every <rating:R> token (not <rating:?>), the ones condition dropout hides."""
    return np.array([vocab.rating_token(r) for r in vocab.rating_levels()], dtype=np.int64)


class Batcher:
    """Builds micro-batches of one split; stateless apart from the arrays it memory-maps."""

    def __init__(self, data: PreparedData, split: str, context: int, batch_tokens: int,
                 boards: bool, cond_dropout: float = 0.0, seed: int = 0, values: bool = False,
                 game_repeats: EpochRepeats | None = None) -> None:
        self.split = data.splits[split]
        self.vocab = data.vocab
        self.prefix_len = data.prefix_len
        self.context = context
        self.batch_tokens = batch_tokens
        self.cond_dropout = cond_dropout
        self.seed = seed
        self.use_boards = boards
        if values and self.split.results is None:
            raise UserError(f"{data.path} was prepared before game results were stored, and a value head "
                            "trains on them: run `chessdt prepare` again (or delete the run's data/ folder)")
        self.use_values = values
        self.segs = segments(self.split, self.prefix_len, context)
        if len(self.segs) == 0:
            raise ValueError(f"{data.path}: split {split!r} has no games")
        self.game_repeats = game_repeats  # chessdt.data.mix: each game's segments drawn that many times per epoch
        self._ratings = rating_token_ids(self.vocab)
        self._plans: dict[int, list[np.ndarray]] = {}
        if game_repeats is not None and not self.epoch_plan(0):  # the first epoch's plan, kept for the stream
            raise UserError(f"{data.path}: no {split} game is left to draw (train.rating_bands keeps none)")

    # -- planning --------------------------------------------------------------------------
    def width(self, longest: int) -> int:
        """Padded width of a batch whose longest segment has `longest` inputs: rounded up to
        PAD_MULTIPLE, but never past the context (the model has no position beyond it)."""
        return min(-(-longest // PAD_MULTIPLE) * PAD_MULTIPLE, self.context)

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        """Cut segment ids, sorted by length, into batches of at most batch_tokens padded positions."""
        lengths = self.segs[order, 2]
        batches, i = [], 0
        while i < len(order):
            j = i + 1
            while j < len(order):
                if (j - i + 1) * self.width(int(lengths[j])) > self.batch_tokens:
                    break
                j += 1
            batches.append(order[i:j])
            i = j
        return batches

    def epoch_plan(self, epoch: int) -> list[np.ndarray]:
        """Every batch (arrays of segment ids) of one epoch, in the order they are drawn."""
        if epoch not in self._plans:
            ids = np.arange(len(self.segs))
            if self.game_repeats is not None:
                ids = np.repeat(ids, self.game_repeats(epoch)[self.segs[:, 0]])
            rng = np.random.default_rng([self.seed, 0, epoch])
            shuffled = ids[rng.permutation(len(ids))]
            order = shuffled[np.argsort(self.segs[shuffled, 2], kind="stable")]
            batches = self._cut(order)
            self._plans = {epoch: [batches[k] for k in rng.permutation(len(batches))]}
        return self._plans[epoch]

    def fixed_plan(self, max_tokens: int) -> list[np.ndarray]:
        """Batches over the first segments (file order) totalling about max_tokens: the eval set."""
        cum = np.cumsum(self.segs[:, 2])
        n = max(1, int(np.searchsorted(cum, max_tokens)))
        order = np.argsort(self.segs[:n, 2], kind="stable")
        return self._cut(order)

    # -- drawing ---------------------------------------------------------------------------
    def batch(self, seg_ids: np.ndarray, dropout_key: tuple[int, ...] | None = None) -> Batch:
        """Assemble the batch of the given segments; dropout_key seeds condition dropout."""
        segs = self.segs[seg_ids]
        P = self.prefix_len
        width = self.width(int(segs[:, 2].max()))
        B = len(segs)
        seq = np.full((B, width + 1), self.vocab.pad, dtype=np.int64)
        plies = np.zeros((B, width), dtype=np.int64)
        boards = np.zeros((B, width, 64), dtype=np.uint8) if self.use_boards else None
        targets = np.full((B, width), IGNORE, dtype=np.int64)
        values = np.full((B, width), IGNORE, dtype=np.int64) if self.use_values else None
        tok, off = self.split.tokens, self.split.offsets
        if boards is not None:
            # each segment's game replayed up to the last move the segment shows
            n_moves = off[segs[:, 0] + 1] - off[segs[:, 0]] - P - 1  # (B,) moves of the game (body less <end>)
            upto = np.minimum(segs[:, 1] + segs[:, 2] - P, n_moves)  # (B,) moves to replay
            moves = np.concatenate([tok[int(off[g]) + P : int(off[g]) + P + int(m)] for g, m in zip(segs[:, 0], upto)])
            starts = np.zeros(B + 1, np.int64)
            np.cumsum(upto, out=starts[1:])
            rows = replay(moves, starts)  # (sum(upto) + B, 64): per segment, the start then each move
            first_row = starts[:-1] + np.arange(B)
        for r, (g, s, n_in) in enumerate(segs):
            base = int(off[g])
            n_body = n_in + 1 - P
            seq[r, :P] = tok[base : base + P]
            seq[r, P : P + n_body] = tok[base + P + s : base + P + s + n_body]
            plies[r, :P] = s
            plies[r, P:n_in] = np.arange(s + 1, s + n_in - P + 1)
            targets[r, P - 1 : n_in] = seq[r, P : n_in + 1]
            if values is not None:
                assert self.split.results is not None  # checked in __init__ when use_values
                white = int(self.split.results[g])  # 0 White won, 1 draw, 2 Black won, -1 unknown
                if white >= 0:
                    black_moves = plies[r, P - 1 : n_in] % 2 == 1  # the side to move at each loss position
                    values[r, P - 1 : n_in] = np.where(black_moves, 2 - white, white)
            if boards is not None:  # the prefix sees the board before move s+1, body token j the one after it
                boards[r, :P] = rows[first_row[r] + s]
                boards[r, P:n_in] = rows[first_row[r] + np.minimum(np.arange(s + 1, s + n_in - P + 1), n_moves[r])]
        if dropout_key is not None and self.cond_dropout > 0:
            rng = np.random.default_rng([self.seed, 1, *dropout_key])
            hide = rng.random(B) < self.cond_dropout  # hide all ratings of a game: the unconditioned prompt
            cond = seq[:, 1:P]
            cond[hide[:, None] & np.isin(cond, self._ratings)] = self.vocab.unknown_rating
        return Batch(tokens=torch.from_numpy(seq[:, :-1].copy()), targets=torch.from_numpy(targets),
                     boards=None if boards is None else torch.from_numpy(boards),
                     plies=torch.from_numpy(plies), n_real=int(segs[:, 2].sum()),
                     values=None if values is None else torch.from_numpy(values))

    def stream(self, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        """Training batches of one rank forever, from micro-batch number `start` of that rank."""
        epoch, index = 0, start
        while True:
            plan = self.epoch_plan(epoch)
            mine = plan[rank : len(plan) - len(plan) % world : world]
            if not mine:
                raise ValueError("fewer batches in an epoch than ranks: lower batch_tokens")
            if index >= len(mine):
                index -= len(mine)
                epoch += 1
                continue
            yield self.batch(mine[index], dropout_key=(epoch, rank, index))
            index += 1


def packing_efficiency(batcher: Batcher, epoch: int = 0) -> float:
    """Share of batch positions that hold real tokens over one epoch's plan."""
    real = padded = 0
    for ids in batcher.epoch_plan(epoch):
        lengths = batcher.segs[ids, 2]
        real += int(lengths.sum())
        padded += len(ids) * batcher.width(int(lengths.max()))
    return real / padded

