"""Variety where it matters, with intervals: opening lines, per-position diversity, good-move diversity.

Three views of how varied a player is, each with a 95% bootstrap interval:

* **opening lines**: entropy (bits) and distinct count of first-k-ply lines over many self-play
  openings (k = 2, 4, 8), resampling games. Plug-in entropies grow with the sample size, so only
  equal numbers of games compare; the distinct count saturates at the number of games.
* **per-position diversity** (the "per-input" diversity of Kirk et al. 2023): the entropy of the
  distribution the player chooses from in one fixed position, averaged over held-out positions,
  resampling positions. For a prompted model the distribution is exact (temperature, top-p,
  guidance applied, legal moves only); for the quantilizer it is estimated from many simulated
  draws over engine scores of every legal move.
* **diversity among good moves** (arXiv 2504.12522): in each position the good moves are those
  within `good_cp` centipawns of the engine's best (Stockfish, all legal moves scored by one
  multi-PV search); reported are the mass the player puts on good moves, the entropy of its
  choice renormalised to the good moves, and its expected centipawn loss.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import chess
import chess.engine
import numpy as np
import torch

from chessdt.evals.heldout import HeldOutGame
from chessdt.evals.openings import Line, entropy_rows, line_stats
from chessdt.metrics import normal_interval, percentile_interval, resample
from chessdt.play.policy import Prompted
from chessdt.rules import CP_CAP, centipawns
from chessdt.stockfish.engine import Engine
from chessdt.tokenizer import unconditional


@dataclass(frozen=True)
class Estimate:
    """A mean or a statistic with its 95% bootstrap interval."""

    value: float
    lo: float
    hi: float

    @classmethod
    def of(cls, value: float, draws: np.ndarray) -> Estimate:
        """The percentile interval of the finite bootstrap draws (for means and Elo differences)."""
        return cls(float(value), *percentile_interval(draws[np.isfinite(draws)]))

    @classmethod
    def normal(cls, value: float, draws: np.ndarray) -> Estimate:
        """value +- 1.96 standard errors of the finite draws: for plug-in statistics that resampling
        biases, such as the entropy and the distinct count of lines (see metrics.normal_interval)."""
        return cls(float(value), *normal_interval(value, draws[np.isfinite(draws)]))


# -- opening lines ---------------------------------------------------------------------------------------
def line_bootstrap(lines: Sequence[Line], k: int, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap draws (entropy bits, distinct count) of first-k-ply lines, resampling whole games."""
    keyed = [tuple(x[:k]) for x in lines if len(x) >= k]
    if not keyed:
        return np.full(samples, np.nan), np.full(samples, np.nan)
    index = {line: i for i, line in enumerate(dict.fromkeys(keyed))}
    codes = np.array([index[x] for x in keyed])
    entropy, distinct = np.empty(samples), np.empty(samples)
    for s, rows in enumerate(resample(len(codes), samples, seed)):
        counts = np.bincount(codes[rows])
        p = counts[counts > 0] / len(codes)
        entropy[s], distinct[s] = float(-(p * np.log2(p)).sum()), len(p)
    return entropy, distinct


@dataclass(frozen=True)
class LineVariety:
    k: int
    games: int
    entropy: Estimate  # bits
    distinct: Estimate
    top_share: float


def line_variety(lines: Sequence[Line], k: int, samples: int, seed: int = 0) -> tuple[LineVariety, np.ndarray]:
    """Line statistics with intervals, and the entropy's bootstrap draws (for matched comparisons)."""
    stats = line_stats(lines, k)
    entropy, distinct = line_bootstrap(lines, k, samples, seed)
    return LineVariety(k, stats.games, Estimate.normal(stats.entropy, entropy), Estimate.normal(stats.distinct, distinct),
                       stats.top_share), entropy


# -- positions -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoredPosition:
    """A held-out position (with its move history, which the model reads) and every legal move's
    engine score from the mover's side, in centipawns clipped to +-CP_CAP."""

    board: chess.Board
    scores: dict[chess.Move, float]

    @property
    def best(self) -> float:
        return max(self.scores.values())

    def good(self, within_cp: float) -> set[chess.Move]:
        best = self.best
        return {m for m, s in self.scores.items() if s >= best - within_cp}


def sample_positions(games: Sequence[HeldOutGame], n: int, seed: int = 0, min_ply: int = 8,
                     max_ply: int = 80) -> list[chess.Board]:
    """Up to n positions, one per game, at a uniformly chosen ply in [min_ply, max_ply) (not a finished one)."""
    rng = random.Random(seed)
    out: list[chess.Board] = []
    for g in games:
        if len(out) >= n:
            break
        hi = min(max_ply, len(g.moves))
        if hi <= min_ply:
            continue
        board = g.board(rng.randrange(min_ply, hi))
        if not board.is_game_over():
            out.append(board)
    return out


def score_position(engine: Engine, board: chess.Board, nodes: int) -> ScoredPosition:
    """Every legal move scored by one multi-PV search of `nodes` nodes."""
    legal = list(board.legal_moves)
    infos = engine.analyse_lines(board, chess.engine.Limit(nodes=nodes), len(legal))
    scores: dict[chess.Move, float] = {}
    for info in infos:
        pv = info.get("pv")
        if pv and "score" in info:
            scores[pv[0]] = float(max(-CP_CAP, min(CP_CAP, centipawns(info["score"], board.turn))))
    worst = min(scores.values(), default=0.0)
    for m in legal:  # a move the search did not report is scored as the worst reported one
        scores.setdefault(m, worst)
    return ScoredPosition(board, scores)


@torch.no_grad()
def model_distribution(model: Prompted, board: chess.Board) -> dict[chess.Move, float]:
    """The exact distribution `model` plays from in `board` (guidance, temperature, top-p, legality handling)."""
    policy, prompt = model.policy, model.prompt(board.turn)
    logits = policy.logits_full(board, prompt)
    w = model.sampling.guidance
    if w:
        logits = policy.combine(logits, policy.logits_full(board, unconditional(policy.vocab, prompt)), w)
    legal = policy.vocab.legal_mask(board).to(logits.device)
    probs = model.sampling.played(logits[None], legal[None])[0]
    return {policy.vocab.decode_move(int(i)): float(probs[i]) for i in torch.nonzero(probs > 0).flatten()}


def quantilizer_distribution(base: dict[chess.Move, float], scores: dict[chess.Move, float], k: int, q: float,
                             draws: int = 4000, seed: int = 0) -> dict[chess.Move, float]:
    """The quantilizer's distribution, simulated: k moves drawn from `base`, the top ceil(q k) by
    score kept (ties in draw order, as QuantilizerPlayer sorts), one of those uniformly."""
    moves = [m for m, p in base.items() if p > 0]
    p = np.array([base[m] for m in moves])
    p = p / p.sum()
    s = np.array([scores.get(m, -CP_CAP) for m in moves])
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(moves), size=(draws, k), p=p)
    order = np.argsort(-s[drawn], axis=1, kind="stable")
    keep = max(1, math.ceil(q * k))
    pick = order[np.arange(draws), rng.integers(0, keep, draws)]
    counts = np.bincount(drawn[np.arange(draws), pick], minlength=len(moves))
    return {m: c / draws for m, c in zip(moves, counts) if c}


@dataclass(frozen=True)
class PositionVariety:
    positions: int
    good_cp: float
    entropy: Estimate  # mean bits of the move distribution per position
    good_mass: Estimate  # mean probability of a good move
    good_entropy: Estimate  # mean bits of the distribution renormalised to the good moves
    good_moves: float  # mean number of good moves per position (a property of the positions)
    cp_loss: Estimate  # mean expected centipawn loss against the best move


def position_values(dists: Sequence[dict[chess.Move, float]], positions: Sequence[ScoredPosition],
                    good_cp: float) -> np.ndarray:
    """(positions, 4): entropy bits, good mass, good-move entropy bits, expected cp loss."""
    rows = []
    for dist, pos in zip(dists, positions):
        good, best = pos.good(good_cp), pos.best
        p = torch.tensor(list(dist.values()), dtype=torch.float64)
        mass = sum(v for m, v in dist.items() if m in good)
        g = torch.tensor([v for m, v in dist.items() if m in good], dtype=torch.float64)
        good_entropy = float(entropy_rows((g / g.sum())[None])[0]) if mass > 0 else 0.0
        loss = sum(v * (best - pos.scores.get(m, -CP_CAP)) for m, v in dist.items())
        rows.append((float(entropy_rows(p[None])[0]), mass, good_entropy, loss))
    return np.array(rows, dtype=float)


def position_variety(values: np.ndarray, positions: Sequence[ScoredPosition], good_cp: float, samples: int,
                     seed: int = 0) -> tuple[PositionVariety, np.ndarray]:
    """Means over positions with bootstrap intervals (resampling positions); also the (samples, 4) draws."""
    n = len(values)
    draws = np.array([values[rows].mean(0) for rows in resample(n, samples, seed)]) if n else np.full((samples, 4), np.nan)
    mean = values.mean(0) if n else np.full(4, np.nan)
    est = [Estimate.of(float(mean[j]), draws[:, j]) for j in range(4)]
    good = float(np.mean([len(p.good(good_cp)) for p in positions])) if positions else math.nan
    return PositionVariety(n, good_cp, est[0], est[1], est[2], good, est[3]), draws
