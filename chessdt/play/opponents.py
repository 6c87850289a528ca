"""Non-model opponents written as short specs ('random', a Stockfish strength, 'uci=COMMAND@RATING'):
parsed once into an :class:`Opponent`, which makes the arena's :class:`~chessdt.play.arena.PlayerSeat`."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chessdt.errors import UserError
from chessdt.play.arena import PlayerSeat
from chessdt.play.players import RandomPlayer, StockfishPlayer
from chessdt.rules import BadStrength, Strength, parse_opponent
from chessdt.stockfish.engine import check_engine, find_stockfish


@dataclass(frozen=True)
class Opponent:
    """A non-model opponent written as a short spec:

    * 'random': a uniformly random legal move;
    * Stockfish at a :meth:`chessdt.rules.Strength.parse` strength: '1350' or 'elo=1350' (UCI_Elo
      1350, whose nominal rating anchors the Elo fit), 'skill=N' (Skill Level N), 'full', each
      optionally ',eps=P'; 'eps=P' alone is full-strength Stockfish that plays a uniformly random
      legal move with probability P, a strength anywhere between the random mover and the engine;
    * 'uci=COMMAND@RATING': any UCI engine (e.g. lc0 with Maia weights, `go nodes 1` by appending
      '/1' to the rating), with a declared rating that anchors the fit like a UCI_Elo rung.

    >>> Opponent.parse("1350").elo, Opponent.parse("skill=0").skill, Opponent.parse("random").kind
    (1350, 0, 'random')
    >>> o = Opponent.parse("eps=0.25"); o.eps, o.label
    (0.25, 'sf-eps0.25')
    >>> o = Opponent.parse("uci=lc0 --weights=maia-1500.pb.gz@1500/1"); o.command, o.elo, o.nodes, o.label
    (('lc0', '--weights=maia-1500.pb.gz'), 1500, 1, 'lc0@1500')
    """

    kind: Literal["random", "stockfish", "uci"]
    strength: Strength = Strength()  # the Stockfish setting (kind 'stockfish')
    rating: int | None = None  # a UCI engine's declared rating (kind 'uci')
    command: tuple[str, ...] = ()  # a UCI engine's command line (kind 'uci')
    nodes: int | None = None  # its own node budget per move (None = the ladder's)

    @classmethod
    def parse(cls, spec: str) -> Opponent:
        text = spec.strip()
        if text.lower().startswith("uci="):
            command, at, rating = text.partition("=")[2].rpartition("@")
            rating_s, _, nodes_s = rating.partition("/")
            try:
                words = tuple(shlex.split(command))
                if at and words:
                    return cls("uci", rating=int(rating_s), command=words, nodes=int(nodes_s) if nodes_s else None)
            except ValueError:
                pass
            raise UserError(f"opponent {spec!r}: a UCI engine is 'uci=COMMAND@RATING[/NODES]'")
        try:
            parsed = parse_opponent(text)
        except BadStrength as e:  # the grammar, not a setting out of range
            raise UserError(f"{e} or 'uci=COMMAND@RATING[/NODES]'") from None
        return cls("stockfish", parsed) if isinstance(parsed, Strength) else cls("random")

    @property
    def elo(self) -> int | None:
        """UCI_Elo setting (the rung's nominal rating), or a UCI engine's declared rating."""
        return self.rating if self.kind == "uci" else self.strength.elo

    @property
    def skill(self) -> int | None:
        return self.strength.skill

    @property
    def eps(self) -> float:
        return self.strength.eps

    @property
    def anchored(self) -> bool:
        """Its rating is known (a UCI_Elo setting or a declared engine rating) and fixes the scale."""
        return self.elo is not None

    @property
    def label(self) -> str:
        """Name in game tables and PGN: 'random', 'sf-skill0', 'sf-1350', 'sf-full', 'sf-eps0.25', 'lc0@1500'."""
        if self.kind == "random":
            return "random"
        if self.kind == "uci":
            return f"{Path(self.command[0]).name}@{self.elo}"
        if self.strength.softmax is not None:
            return "sf-" + self.strength.spec.replace("=", "").replace(",", "-")
        if self.eps:
            return f"sf-eps{self.eps:g}"
        if self.skill is not None:
            return f"sf-skill{self.skill}"
        return f"sf-{self.elo}" if self.elo is not None else "sf-full"

    def seat(self, engine: str | Path | None = None, *, nodes: int = 1000, timeout_s: float = 30.0) -> PlayerSeat:
        """How to make this opponent: an engine at a node budget per move (reproducible strength,
        unlike a time limit on a loaded machine), or the seeded random mover."""
        if self.kind == "random":
            return PlayerSeat(make=lambda seed: RandomPlayer(seed), pooled=False)
        if self.kind == "uci":
            command, own = self.command, self.nodes or nodes
            if shutil.which(command[0]) is None:
                raise UserError(f"opponent engine {command[0]!r} not found or not executable")
            check_engine(command)
            return PlayerSeat(make=lambda seed: StockfishPlayer(nodes=own, command=command, timeout_s=timeout_s),
                              pooled=True)
        path = find_stockfish(engine)  # fail now, not in the middle of a run
        check_engine(path)
        s = self.strength
        own = self.nodes or nodes
        return PlayerSeat(make=lambda seed: StockfishPlayer(path, strength=s, nodes=own, timeout_s=timeout_s,
                                                            seed=seed), pooled=True)
