"""One game between two Players: the :class:`Player` protocol and :func:`play_out`, the one
sequential game loop (the arena's games between two Players, its convenience :func:`play_game`, and
the generator's ladder games). Games with a model seat are played batched by the arena instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, Self, runtime_checkable

import chess
import chess.engine

from chessdt.rules import ABORTED, game_over
from chessdt.stockfish.engine import EngineFailure

log = logging.getLogger(__name__)

# Called after every move with the board; (result, termination) ends the game there, None plays on.
Adjudicate = Callable[[chess.Board], tuple[str, str] | None]


@runtime_checkable
class Player(Protocol):
    """Anything that chooses a move for the side to move, with a lifetime: used as a context
    manager, it starts what it holds (an engine process) on entry and stops it on exit."""

    @property
    def name(self) -> str: ...

    def play(self, board: chess.Board) -> chess.Move: ...

    def __enter__(self) -> Player: ...

    def __exit__(self, *exc: object) -> None: ...


class Resourceless:
    """The lifetime of a Player that holds nothing to start or stop."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def play_out(board: chess.Board, white: Player, black: Player, *, max_plies: int,
             opening: Sequence[chess.Move] = (), adjudicate: Adjudicate | None = None) -> tuple[str, str]:
    """Play `board` on to the end: the forced `opening` moves, then the Players' (started by the
    caller) until the rules end the game, `adjudicate` ends it after a move, or it reaches
    `max_plies` half-moves (a draw, termination ``move_limit``). A Player whose engine kept failing
    ends it as ``*``, ``engine_failure``. Returns (result, termination); `board` holds the game."""
    for move in opening:
        board.push(move)
        if adjudicate is not None and (ended := adjudicate(board)) is not None:
            return ended
    while True:
        if (over := game_over(board)) is not None:
            return over
        if board.ply() >= max_plies:
            return "1/2-1/2", "move_limit"
        player = white if board.turn == chess.WHITE else black
        try:
            move = player.play(board.copy())
        except (EngineFailure, chess.engine.EngineError) as e:
            log.warning("%s failed: %s", player.name, e)
            return ABORTED, "engine_failure"
        if move not in board.legal_moves:
            raise ValueError(f"{player.name} played illegal {move} in {board.fen()}")
        board.push(move)
        if adjudicate is not None and (ended := adjudicate(board)) is not None:
            return ended
