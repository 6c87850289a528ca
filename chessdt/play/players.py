"""Everything that moves is a Player: `play(board) -> chess.Move`.

* :class:`ModelPlayer`: a :class:`~chessdt.play.policy.Prompted` model (a rating for its own side
  and its opponent's, temperature / top-p and an optional classifier-free guidance weight), one
  cached step per ply.
* :class:`StockfishPlayer`: Stockfish at a UCI_Elo, Skill Level or softmax rung (restarts itself on a crash).
* :class:`RandomPlayer`: a uniformly random legal move.
* :class:`GreedyPlayer`: the move that wins the most material at one ply (the UCI engine's fallback).
* :class:`QuantilizerPlayer`: the best fraction of k moves drawn from a ModelPlayer, by Stockfish.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import chess
import chess.engine
import torch

from chessdt.game import Resourceless
from chessdt.rules import PIECE_VALUES, Strength, centipawns
from chessdt.stockfish.engine import Engine, EngineCommand, find_stockfish
from chessdt.stockfish.mover import strength_move
from chessdt.stockfish.softmax import DEFAULT_LINE_NODES
from chessdt.play.policy import ModelPolicy, MoveStats, Prompted, Sampling, Session


# -- simple players ----------------------------------------------------------------------------------
class RandomPlayer(Resourceless):
    """A uniformly random legal move (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self.name = "random"
        self.rng = random.Random(seed)

    def play(self, board: chess.Board) -> chess.Move:
        return self.rng.choice(list(board.legal_moves))


class GreedyPlayer(Resourceless):
    """One ply of material sense, in well under a millisecond: the move that wins the most by a crude
    exchange count (the captured piece, and a promotion, minus the mover when it lands where the
    opponent attacks it: all of it if the square is undefended, else what it exceeds its cheapest
    attacker by), ties drawn at random (seeded). The UCI engine's move when the model is late."""

    def __init__(self, seed: int = 0) -> None:
        self.name = "greedy"
        self.rng = random.Random(seed)

    @staticmethod
    def gain(board: chess.Board, move: chess.Move) -> int:
        """Pawns the move wins, by the crude count above.

        >>> GreedyPlayer.gain(chess.Board("4k3/8/8/3q4/8/8/8/3RK3 w - - 0 1"), chess.Move.from_uci("d1d5"))
        9
        """
        value = {**PIECE_VALUES, chess.KING: 0}
        moved = board.piece_type_at(move.from_square) or chess.PAWN
        taken = chess.PAWN if board.is_en_passant(move) else board.piece_type_at(move.to_square)
        gain = (value[taken] if taken else 0) + (value[move.promotion] - 1 if move.promotion else 0)
        after = board.copy(stack=False)
        after.push(move)
        attackers = after.attackers(after.turn, move.to_square)
        if attackers:
            mover = value[move.promotion or moved]
            cheapest = min(value[after.piece_type_at(sq) or chess.PAWN] for sq in attackers)
            gain -= max(0, mover - cheapest) if after.is_attacked_by(not after.turn, move.to_square) else mover
        return gain

    def play(self, board: chess.Board) -> chess.Move:
        moves = list(board.legal_moves)
        scores = [self.gain(board, m) for m in moves]
        best = max(scores)
        return self.rng.choice([m for m, s in zip(moves, scores) if s == best])


class StockfishPlayer:
    """Stockfish at a strength setting; use as a context manager (the engine is a resource).

    With `eps` > 0 it plays a uniformly random legal move with probability eps, else the engine's
    move: a strength that can be set continuously, from the random mover (eps = 1) to the engine
    itself (eps = 0). A softmax strength ('softmax=T[,gate=C]') samples from its exact policy
    (:mod:`chessdt.stockfish.softmax`), `nodes` per scored legal move. Those draws are a function of
    `seed` and the game so far, not of the games this instance served before: the arena shares a few
    instances among all games in whatever order its threads take them, and still replays the same
    games. With `command` any UCI engine plays instead of Stockfish.
    """

    def __init__(self, engine_path: str | Path | None = None, *, elo: int | None = None,
                 skill: int | None = None, nodes: int | None = None, movetime: float | None = 0.05,
                 timeout_s: float = 30.0, eps: float = 0.0, seed: int = 0,
                 command: Sequence[str] | None = None, strength: Strength | None = None) -> None:
        self.strength = strength if strength is not None else Strength(elo=elo, skill=skill, eps=eps)
        path: EngineCommand = list(command) if command else find_stockfish(engine_path)
        self.engine = Engine(path, strength=None if command else self.strength, timeout_s=timeout_s)
        self.limit = chess.engine.Limit(nodes=nodes, time=movetime if nodes is None else None)
        self.line_nodes = nodes or DEFAULT_LINE_NODES  # a softmax strength's budget per scored move
        self.eps = self.strength.eps
        self.seed = seed
        who = " ".join(command) if command else f"stockfish({self.strength.describe()})"
        self.name = who if self.strength.softmax is not None else who + (f" eps={self.eps:g}" if self.eps else "")

    def __enter__(self) -> Self:
        self.engine.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()

    def play(self, board: chess.Board) -> chess.Move:
        coin = random.Random(f"{self.seed}|{board.root().fen()}|{' '.join(m.uci() for m in board.move_stack)}")
        return strength_move(self.engine, board, self.strength, self.limit, coin, line_nodes=self.line_nodes).move

    @property
    def restarts(self) -> int:
        return self.engine.restarts


class ModelPlayer(Resourceless):
    """The model as a Player, prompted with its own rating and its opponent's.

    Keeps a one-game Session between calls, so a whole game costs one cached step per ply; if
    the board it is given does not continue the game it knows (new game, takeback, a position set
    up elsewhere), it re-encodes the board's move history from scratch.
    """

    def __init__(self, prompted: Prompted, seed: int = 0) -> None:
        self.prompted = prompted
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = MoveStats()
        self._session: Session | None = None
        self._color: chess.Color | None = None

    @property
    def name(self) -> str:
        return self.prompted.name

    @property
    def policy(self) -> ModelPolicy:
        return self.prompted.policy

    @property
    def sampling(self) -> Sampling:
        return self.prompted.sampling

    def set_rating(self, rating: int | None, opponent_rating: int | None = None) -> None:
        """Change the prompt; the next move re-encodes the game under the new prompt."""
        self.prompted = dataclasses.replace(self.prompted, rating=rating, opponent_rating=opponent_rating)
        self._session = None

    def _continue(self, board: chess.Board) -> Session | None:
        """The session advanced to board's move history if board continues its game, else None."""
        s = self._session
        if s is not None and s.boards[0].root() == board.root():
            known = s.boards[0].move_stack
            stack = board.move_stack
            if len(stack) >= len(known) and stack[: len(known)] == known:
                for m in stack[len(known):]:
                    s.push([m])
                return s
        return None

    def follow(self, board: chess.Board) -> None:
        """Feed the model the moves that lead to board (typically its own move just played), so that
        the next move, on the other side's time, costs one cached step; nothing if board is another game."""
        self._continue(board)

    def _sync(self, board: chess.Board) -> Session:
        """A session whose game equals board's move history (incremental when it continues)."""
        color = board.turn
        if self._color == color and (s := self._continue(board)) is not None:
            return s
        prompt = self.prompted.prompt(color)
        s = Session(self.policy, [prompt], self.sampling.guidance)
        if board.move_stack or board.root() != chess.Board():  # a history, or a set-up (FEN) start
            s.boards[0] = board.copy()
            s._encode_from_scratch()
        self._session, self._color = s, color
        return s

    def distribution(self, board: chess.Board, temperature: float | None = None) -> torch.Tensor:
        """Probabilities (1968,) over move tokens for the side to move, at this player's prompt.

        At the sampling temperature by default; ``temperature=1.0`` gives the model's own
        probabilities (guidance applied), which is what hints and UCI info lines report. No top-p
        and no mask: what the model thinks, not what it would play (that is :meth:`played`).
        """
        t = self.sampling.temperature if temperature is None else temperature
        return Sampling(temperature=t).probabilities(self._sync(board).logits)[0]

    def played(self, board: chess.Board, *, legal_only: bool = False) -> torch.Tensor:
        """Probabilities (1968,) with which this player plays each move on `board` (its sampling
        settings; `legal_only` samples among legal moves as mask_illegal does)."""
        sampling = dataclasses.replace(self.sampling, mask_illegal=True) if legal_only else self.sampling
        legal = self.policy.vocab.legal_mask(board)[None].to(self.policy.device)
        return sampling.played(self._sync(board).logits, legal)[0]

    def wdl(self, board: chess.Board) -> tuple[float, float, float] | None:
        """The value head's win/draw/loss probabilities for the side to move on `board`, under this
        player's prompt (the prompted ratings inform it); None for a model without a value head."""
        wdl = self._sync(board).wdl
        if wdl is None:
            return None
        win, draw, loss = (float(x) for x in wdl[0])
        return win, draw, loss

    def play(self, board: chess.Board) -> chess.Move:
        session = self._sync(board)
        return self.policy.choose(session.logits, [board], self.sampling, self.generator, self.stats)[0]


class QuantilizerPlayer:
    """An explicit quantilizer: draw k moves from the base model's legal-move distribution, keep
    the top fraction q of the draws by a Stockfish evaluation at a fixed node budget, play one of
    those uniformly at random. q = 1 is the base model; q -> 1/k approaches best-of-k.

    `engine` is a started chessdt.stockfish.engine.Engine (full strength; the caller owns its lifetime).
    """

    def __init__(self, base: ModelPlayer, engine: Engine, k: int = 8, q: float = 0.25, nodes: int = 2000,
                 seed: int = 0) -> None:
        if k < 1 or not 0 < q <= 1:
            raise ValueError(f"quantilizer needs k >= 1 and 0 < q <= 1 (got k={k}, q={q})")
        self.base, self.engine, self.k, self.q, self.nodes = base, engine, k, q, nodes
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def name(self) -> str:
        return f"quantilizer(k={self.k}, q={self.q}, nodes={self.nodes}, base={self.base.name})"

    def __enter__(self) -> Self:
        self.engine.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()

    def evaluate(self, board: chess.Board, move: chess.Move) -> int:
        """Centipawns for the mover after `move` (mates as +-MATE_SCORE)."""
        after = board.copy(stack=False)
        after.push(move)
        info = self.engine.analyse(after, chess.engine.Limit(nodes=self.nodes))
        return centipawns(info["score"], board.turn)

    def play(self, board: chess.Board) -> chess.Move:
        probs = self.base.played(board, legal_only=True).cpu()
        draws = torch.multinomial(probs, self.k, replacement=True, generator=self.generator).tolist()
        moves = [self.base.policy.vocab.decode_move(t) for t in draws]
        scores = {m: self.evaluate(board, m) for m in set(moves)}
        ranked = sorted(moves, key=lambda m: scores[m], reverse=True)
        keep = ranked[: max(1, math.ceil(self.q * self.k))]
        return self.rng.choice(keep)
