"""The softmax rung: a known stochastic policy over Stockfish's scores of every legal move.

A rung 'softmax=T[,gate=C][,eps=P]' plays as follows. Stockfish (one thread, hash and history cleared
before each position, so that the scores are a function of the position and its move history alone)
scores every legal move with multi-PV at a fixed budget of `nodes` per legal move. With `best` the
best score, the rung plays move m with probability

    P(m) = eps / n + (1 - eps) * w(m) / sum(w),   w(m) = exp((score(m) - best) / T) if score(m) >= best - C else 0

over the n legal moves. Strength comes from the shape of this distribution (T, C, eps), which a small
model can imitate, rather than from search depth; every rung keeps a choice among good moves.

:func:`rung_policy` returns that exact distribution for a position: the generator samples from it,
the fidelity evaluator compares a model against it, and the arena's softmax opponents play it.

Mates are scored far outside the centipawn range and 200 cp apart per move (mate in 1 = 20,000 - 200,
mate in 2 = 20,000 - 400, ...), so a rung prefers the quickest mate it sees and never shuffles
between a mate and a slower one as if they were equal; other scores are kept as Stockfish gives them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import chess
import chess.engine

from chessdt.metrics import entropy_bits
from chessdt.rules import Strength
from chessdt.stockfish.engine import Engine, EngineFailure

MATE_CP = 20_000  # a mate's score before the per-move discount
MATE_STEP = 200  # centipawns a mate loses per move it takes
DEFAULT_LINE_NODES = 250  # nodes per legal move when scoring a position
RETRIES = 4  # searches with 4x the budget each when the first leaves legal moves unscored


def mate_aware_cp(score: chess.engine.PovScore, color: chess.Color) -> int:
    """A score from `color`'s side in centipawns, mates as +-(MATE_CP - MATE_STEP * moves).

    >>> mate_aware_cp(chess.engine.PovScore(chess.engine.Mate(2), chess.WHITE), chess.WHITE)
    19600
    >>> mate_aware_cp(chess.engine.PovScore(chess.engine.Cp(35), chess.WHITE), chess.BLACK)
    -35
    """
    s = score.pov(color)
    mate = s.mate()
    if mate is None:
        cp = s.score()
        assert cp is not None
        return cp
    if mate > 0:
        return MATE_CP - MATE_STEP * mate
    return -MATE_CP + MATE_STEP * -mate  # mated in |mate| (0 = already mated: not a legal-move score)


@dataclass(frozen=True)
class MoveScores:
    """Every legal move of a position with its score for the side to move, in UCI order."""

    moves: tuple[chess.Move, ...]
    cp: tuple[int, ...]

    @property
    def best(self) -> int:
        return max(self.cp)


def score_moves(engine: Engine, board: chess.Board, nodes: int = DEFAULT_LINE_NODES) -> MoveScores:
    """Stockfish's score of every legal move of `board` (multi-PV, `nodes` per legal move, hash and
    history cleared first), from the side to move. The engine must be at full strength."""
    legal = sorted(board.legal_moves, key=chess.Move.uci)
    if not legal:
        raise ValueError(f"no legal moves in {board.fen()}")
    budget = nodes * len(legal)
    for _ in range(RETRIES):
        by_move = {m: mate_aware_cp(score, board.turn) for m, score in
                   engine.root_scores(board, budget, len(legal)).items()}
        missing = [m.uci() for m in legal if m not in by_move]
        if not missing:
            return MoveScores(tuple(legal), tuple(by_move[m] for m in legal))
        # Stockfish reports a line only once its first iteration has searched it; in a sharp position
        # the quiescence search of some moves can spend the budget before every move is reached.
        # A larger budget (a fixed rule, so still a function of the position) completes it.
        budget *= 4
    raise EngineFailure(f"multi-PV left {len(missing)} legal moves unscored in {board.fen()} even at "
                        f"{budget // 4:,} nodes: {missing[:5]}")


def softmax_weights(scores: MoveScores, strength: Strength) -> list[float]:
    """The rung's probability of each move of `scores` (aligned with `scores.moves`); sums to 1.

    >>> s = MoveScores((chess.Move.from_uci("e2e4"), chess.Move.from_uci("d2d4"), chess.Move.from_uci("a2a3")),
    ...                (30, 30 - 15, -200))
    >>> [round(p, 3) for p in softmax_weights(s, Strength(softmax=15))]
    [0.731, 0.269, 0.0]
    >>> [round(p, 3) for p in softmax_weights(s, Strength(softmax=15, gate=10, eps=0.3))]
    [0.8, 0.1, 0.1]
    """
    if strength.softmax is None:
        raise ValueError(f"not a softmax strength: {strength.spec}")
    best = scores.best
    floor = best - strength.gate if strength.gate is not None else -math.inf
    w = [math.exp((s - best) / strength.softmax) if s >= floor else 0.0 for s in scores.cp]
    total = sum(w)  # >= 1: the best move has weight exp(0)
    n = len(w)
    return [strength.eps / n + (1.0 - strength.eps) * x / total for x in w]


def rung_policy(engine: Engine, board: chess.Board, strength: Strength,
                nodes: int = DEFAULT_LINE_NODES) -> dict[chess.Move, float]:
    """The exact distribution over legal moves that a softmax rung samples from in `board`."""
    return policy_of(score_moves(engine, board, nodes), strength)


def policy_of(scores: MoveScores, strength: Strength) -> dict[chess.Move, float]:
    """The rung's distribution over the scored moves, as {move: probability} in UCI order."""
    return dict(zip(scores.moves, softmax_weights(scores, strength)))


def sample(policy: dict[chess.Move, float], rng: random.Random) -> chess.Move:
    """One move drawn from `policy` (in its own order: UCI order from :func:`rung_policy`)."""
    u = rng.random()
    acc = 0.0
    last = next(iter(policy))
    for move, p in policy.items():
        acc += p
        last = move if p > 0 else last
        if u < acc:
            return move
    return last  # u fell past the sum's rounding: the last move with weight


def good_entropy(cp: Sequence[int], probs: Sequence[float], good_cp: int) -> float:
    """Entropy in bits of a policy restricted to the moves within `good_cp` of the best, renormalised:
    how much a rung chooses among good moves.

    >>> good_entropy([0, -10, -300], [0.45, 0.45, 0.1], 50)
    1.0
    """
    best = max(cp)
    return entropy_bits([p for c, p in zip(cp, probs) if c >= best - good_cp])
