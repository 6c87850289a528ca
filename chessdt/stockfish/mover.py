"""How Stockfish plays at a :class:`~chessdt.rules.Strength`: the one move chooser behind the arena's
StockfishPlayer and the generator's rungs. A softmax strength samples its exact policy over the
scores of every legal move; otherwise a share `eps` of moves is uniformly random and the rest are
the engine's own (UCI_Elo, Skill Level or full strength, set on the engine by its owner)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import chess
import chess.engine

from chessdt.rules import Strength, centipawns
from chessdt.stockfish.engine import Engine, EngineFailure
from chessdt.stockfish.softmax import policy_of, sample, score_moves


@dataclass(frozen=True)
class Chosen:
    move: chess.Move
    score: int | None  # the engine's score for the mover, in centipawns (None: not asked for, or none)
    random: bool = False  # an eps move: uniformly random, no engine score


def strength_move(engine: Engine, board: chess.Board, strength: Strength, limit: chess.engine.Limit,
                  rng: random.Random, *, line_nodes: int, game: object = None, score: bool = False) -> Chosen:
    """The move of Stockfish at `strength` in `board`: a softmax rung's draw from its exact policy
    (`line_nodes` per scored legal move; its score is the best move's), an eps share of uniformly
    random moves drawn from `rng`, else the engine's move at `limit` (with its score when `score`)."""
    if strength.softmax is not None:  # eps is part of the softmax policy
        scores = score_moves(engine, board, line_nodes)
        return Chosen(sample(policy_of(scores, strength), rng), scores.best)
    if strength.eps and rng.random() < strength.eps:
        return Chosen(rng.choice(list(board.legal_moves)), None, random=True)
    played = engine.play(board, limit, game=game, info=chess.engine.INFO_SCORE if score else chess.engine.INFO_NONE)
    if played.move is None:
        raise EngineFailure(f"engine returned no move in {board.fen()}")
    # With UCI_LimitStrength, Stockfish searches several lines and python-chess keeps the last
    # one's score, a lower bound on the best line: ">= threshold" is then safe to trust.
    pov = played.info.get("score")
    return Chosen(played.move, centipawns(pov, board.turn) if pov is not None else None)
