"""Referee adjudication: a fixed-node Stockfish judges every position of a game in play.

Our models are far weaker than engines, and most games between two of their settings are decided by
who can finish, not by who plays better. The engine-testing answer (cutechess-cli `-resign`, TCEC's
win rule) is to let a referee judge: a game is adjudicated a win for the side the referee scores at
or beyond `cp` centipawns on `plies` consecutive plies, from ply `from_ply` on. Draw adjudication is
off: draws come from the rules and the move limit.

The rule is validated, not trusted: a seeded share `playout` of the games it would adjudicate are
played on to the end, and the share of those the leader then failed to win is the false-adjudication
rate. Every game's referee scores are stored in its record (:attr:`GameRecord.referee`), so any other
rule can be replayed over the same games afterwards (:func:`verdict_of`).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import chess
import chess.engine

from chessdt.config import EvalConfig
from chessdt.errors import UserError
from chessdt.rules import CP_CAP, centipawns
from chessdt.stockfish.engine import Engine, EngineCommand, EngineFailure, find_stockfish

REFEREE_CAP = 10 * CP_CAP  # referee scores are stored clipped to +-100 pawns (a mate counts as that)


@dataclass(frozen=True, kw_only=True)
class RefereeRule:
    """When a referee ends a game, and how often it lets the game go on to check itself."""

    # defaults: those of the [eval] section (one home for the numbers)
    cp: int = EvalConfig.referee_cp  # the leader's score, from its side, at or beyond this ...
    plies: int = EvalConfig.referee_plies  # ... on this many consecutive plies ...
    from_ply: int = EvalConfig.referee_from_ply  # ... ending at this ply or later
    nodes: int = EvalConfig.referee_nodes  # the referee's node budget per position (one thread)
    playout: float = EvalConfig.referee_playout  # share of would-be-adjudicated games played to the end

    def __post_init__(self) -> None:
        if self.cp <= 0 or self.plies < 1 or self.from_ply < 0 or self.nodes < 1:
            raise UserError("referee: cp and nodes must be positive, plies >= 1, from_ply >= 0")
        if not 0.0 <= self.playout <= 1.0:
            raise UserError(f"referee: playout={self.playout:g} is a share, from 0 to 1")

    @classmethod
    def parse(cls, spec: str) -> RefereeRule:
        """'cp=400,plies=8,from=20,nodes=1000,playout=0.2' (any subset; the rest default).

        >>> r = RefereeRule.parse("cp=600, plies=6"); (r.cp, r.plies, r.from_ply, r.playout)
        (600, 6, 20, 1.0)
        """
        values: dict[str, float] = {}
        keys = {"cp": "cp", "plies": "plies", "from": "from_ply", "nodes": "nodes", "playout": "playout"}
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            key, sep, value = part.partition("=")
            try:
                values[keys[key.strip().lower()]] = float(value)
            except (KeyError, ValueError):
                raise UserError(f"referee {spec!r}: use e.g. 'cp=400,plies=8,from=20,nodes=1000,playout=1'") from None
        d = cls()
        return cls(cp=int(values.get("cp", d.cp)), plies=int(values.get("plies", d.plies)),
                   from_ply=int(values.get("from_ply", d.from_ply)), nodes=int(values.get("nodes", d.nodes)),
                   playout=values.get("playout", d.playout))

    @property
    def spec(self) -> str:
        return f"cp={self.cp},plies={self.plies},from={self.from_ply},nodes={self.nodes},playout={self.playout:g}"

    def plays_out(self, seed: int, game_id: str) -> bool:
        """Whether the game `game_id` goes on after a verdict: a seeded draw with probability `playout`."""
        return zlib.crc32(f"playout:{seed}:{game_id}".encode()) / 2**32 < self.playout


def referee_rule(cfg: EvalConfig) -> RefereeRule | None:
    """The rule of an [eval] section, or None when adjudication is off."""
    if not cfg.adjudicate:
        return None
    return RefereeRule(cp=cfg.referee_cp, plies=cfg.referee_plies, from_ply=cfg.referee_from_ply,
                       nodes=cfg.referee_nodes, playout=cfg.referee_playout)


def open_referee(cfg: EvalConfig) -> contextlib.AbstractContextManager[Referee | None]:
    """A started referee for the games an [eval] section plays, or a null context when it is off."""
    rule = referee_rule(cfg)
    if rule is None:
        return contextlib.nullcontext()
    return Referee(find_stockfish(cfg.engine or None), rule)


def verdict_of(scores: Sequence[int], rule: RefereeRule, start_ply: int = 1) -> tuple[str, int] | None:
    """(result, ply) of the first adjudication `rule` makes over a game's referee scores (White's
    side, scores[i] after ply start_ply + i), or None.

    >>> rule = RefereeRule(cp=300, plies=3, from_ply=4)
    >>> verdict_of([0, 350, 400, 500, 600], rule), verdict_of([-400, -400, 0, -400, -400, -400], rule)
    (('1-0', 4), ('0-1', 6))
    >>> verdict_of([400, 400, -400, 400], rule) is None
    True
    """
    sign, run = 0, 0
    for i, cp in enumerate(scores):
        s = 1 if cp >= rule.cp else -1 if cp <= -rule.cp else 0
        run = run + 1 if s and s == sign else (1 if s else 0)
        sign = s
        ply = start_ply + i
        if s and run >= rule.plies and ply >= rule.from_ply:
            return ("1-0" if s > 0 else "0-1"), ply
    return None


class Referee:
    """A full-strength Stockfish at a fixed node budget that scores positions from White's side."""

    def __init__(self, engine_path: EngineCommand, rule: RefereeRule, timeout_s: float = 30.0) -> None:
        self.rule = rule
        self.engine = Engine(engine_path, timeout_s=timeout_s)

    def __enter__(self) -> Referee:
        self.engine.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()

    def white_cp(self, board: chess.Board) -> int:
        """The referee's score of `board` from White's side, clipped to +-REFEREE_CAP (mates at the cap).
        Raises EngineFailure when the engine keeps failing."""
        info = self.engine.analyse(board, chess.engine.Limit(nodes=self.rule.nodes))
        score = info.get("score")
        if score is None:
            raise EngineFailure(f"referee gave no score in {board.fen()}")
        return max(-REFEREE_CAP, min(REFEREE_CAP, centipawns(score, chess.WHITE)))


class Judge:
    """The referee's view of one game in play: its scores so far and its verdict."""

    def __init__(self, referee: Referee, seed: int, game_id: str) -> None:
        self.referee = referee
        self.seed, self.game_id = seed, game_id
        self.scores: list[int] = []  # White's side, after ply 1, 2, ...
        self.verdict: tuple[str, int] | None = None  # (result, ply) of the rule's first adjudication
        self.played_out = True  # False when the game stopped at the verdict

    def after_move(self, board: chess.Board) -> str | None:
        """Score the position after the move just played (every ply from the first: the record keeps
        them all); the adjudicated result when the game ends here, else None."""
        if len(self.scores) != board.ply() - 1:
            raise ValueError(f"referee out of step: {len(self.scores)} scores before ply {board.ply()}")
        self.scores.append(self.referee.white_cp(board))
        if self.verdict is None:
            self.verdict = verdict_of(self.scores, self.referee.rule)
            if self.verdict is not None and not self.referee.rule.plays_out(self.seed, self.game_id):
                self.played_out = False
                return self.verdict[0]
        return None

