"""The Players behind an :class:`~chessdt.rules.Opponent` spec: the arena's
:class:`~chessdt.play.arena.PlayerSeat` for the random mover, Stockfish at a strength, or any UCI engine."""

from __future__ import annotations

import shutil
from pathlib import Path

from chessdt.errors import UserError
from chessdt.play.arena import PlayerSeat
from chessdt.play.players import RandomPlayer, StockfishPlayer
from chessdt.rules import Opponent
from chessdt.stockfish.engine import check_engine, find_stockfish


def seat_for(opponent: Opponent, engine: str | Path | None = None, *, nodes: int = 1000,
             timeout_s: float = 30.0) -> PlayerSeat:
    """How to make this opponent: an engine at a node budget per move (its own '/N', else `nodes`:
    reproducible strength, unlike a time limit on a loaded machine), or the seeded random mover.
    The engine is found and checked now, not in the middle of a run."""
    if opponent.kind == "random":
        return PlayerSeat(make=lambda seed: RandomPlayer(seed), pooled=False)
    own = opponent.nodes or nodes
    if opponent.kind == "uci":
        command = opponent.command
        if shutil.which(command[0]) is None:
            raise UserError(f"opponent engine {command[0]!r} not found or not executable")
        check_engine(command)
        return PlayerSeat(make=lambda seed: StockfishPlayer(nodes=own, command=command, timeout_s=timeout_s),
                          pooled=True)
    if opponent.kind != "stockfish":
        raise UserError(f"opponent {opponent.spec!r} is a model: only RL plays it (rl.opponent)")
    path = find_stockfish(engine)
    check_engine(path)
    s = opponent.strength
    # One seed for every pooled instance: an eps or softmax draw is then a function of the game alone.
    return PlayerSeat(make=lambda _: StockfishPlayer(path, strength=s, nodes=own, timeout_s=timeout_s),
                      pooled=True)
