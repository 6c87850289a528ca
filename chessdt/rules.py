"""Chess facts every wing uses: when a game is over, its results, opening lines, centipawn scores,
the grammar of an engine's strength (:class:`Strength`) and of any opponent (:class:`Opponent`).

>>> game_over(chess.Board("7k/6Q1/6K1/8/8/8/8/8 b - - 0 1"))
('1-0', 'checkmate')
>>> game_over(chess.Board()) is None
True
>>> [m.uci() for m in parse_line("1. e4 c5 2. Nf3")]
['e2e4', 'c7c5', 'g1f3']
>>> parse_line("")
()
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import chess
import chess.engine

from chessdt.errors import UserError

RESULTS = ("1-0", "0-1", "1/2-1/2")  # a finished game's result
ABORTED = "*"  # no result: unfinished, or an engine failed for good
MATE_SCORE = 100_000  # centipawns a mate counts as (python-chess `score(mate_score=...)`)
CP_CAP = 1000  # evaluations are clipped to +-10 pawns before differences are taken (as Lichess does)
# UCI_Elo range of Stockfish 15.1 (`option name UCI_Elo type spin default 1350 min 1350 max 2850`).
UCI_ELO_MIN, UCI_ELO_MAX = 1350, 2850
PIECE_VALUES = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9}

_MOVE_NUMBER = re.compile(r"^\d+\.+")


def game_over(board: chess.Board, *, claim_draw: bool = False) -> tuple[str, str] | None:
    """(result, termination) if the game is over, else None.

    By default threefold repetition and the fifty-move rule end the game by themselves, as on
    Lichess and in engine matches (termination 'threefold_repetition', 'fifty_moves'). With
    `claim_draw` the side to move ends it as soon as it may claim such a draw (python-chess's
    claim rules: also a repetition its next move would make), as a human at the board or a
    rollout that stops at the first claimable draw.
    """
    outcome = board.outcome(claim_draw=claim_draw)
    if outcome is not None:
        return outcome.result(), outcome.termination.name.lower()
    if not claim_draw:
        if board.halfmove_clock >= 100:
            return "1/2-1/2", "fifty_moves"
        if board.is_repetition(3):
            return "1/2-1/2", "threefold_repetition"
    return None


def white_score(result: str) -> float:
    """White's points for a finished game's result.

    >>> white_score("1/2-1/2")
    0.5
    """
    return {"1-0": 1.0, "0-1": 0.0, "1/2-1/2": 0.5}[result]


# -- the value head's outcome classes -------------------------------------------------------------------
WDL = ("win", "draw", "loss")  # the value head's classes, from the side to move, in this order
_WHITE_CLASS = {"1-0": 0, "1/2-1/2": 1, "0-1": 2}  # a result's class from White's side
WHITE_RESULTS = {c: r for r, c in _WHITE_CLASS.items()}  # and back: the result of a class from White's side
# Expected score <-> centipawns: Lichess's win-chance curve, E = 1 / (1 + exp(-CP_SLOPE * cp)), so
# that a GUI or lichess-bot reads the value head's score on the scale it knows (+100 cp ~ E 0.59,
# +300 cp ~ E 0.75). The score is clipped to +-CP_CAP, as evaluations are elsewhere.
CP_SLOPE = 0.00368208


def result_class(result: str, mover: chess.Color) -> int:
    """The value head's class (0 win, 1 draw, 2 loss) of a finished game for the side `mover`.

    >>> result_class("1-0", chess.WHITE), result_class("1-0", chess.BLACK), result_class("1/2-1/2", chess.BLACK)
    (0, 2, 1)
    """
    c = _WHITE_CLASS[result]
    return c if mover == chess.WHITE else 2 - c


def white_class(result: str | None) -> int:
    """The class of a result from White's side (0 win, 1 draw, 2 loss), -1 for no result.

    >>> white_class("0-1"), white_class("*")
    (2, -1)
    """
    return _WHITE_CLASS.get(result or "", -1)


def wdl_score(wdl: tuple[float, float, float]) -> float:
    """Points expected from win/draw/loss probabilities: W + D / 2 (metrics.expected_score is Elo's).

    >>> wdl_score((0.5, 0.25, 0.25))
    0.625
    """
    return wdl[0] + wdl[1] / 2


def score_cp(expected: float) -> int:
    """Centipawns of an expected score on Lichess's win-chance curve (inverse logistic, slope
    CP_SLOPE), clipped to +-CP_CAP.

    >>> score_cp(0.5), score_cp(0.75), score_cp(1.0), score_cp(0.0)
    (0, 298, 1000, -1000)
    """
    e = min(max(expected, 1e-9), 1 - 1e-9)
    cp = math.log(e / (1 - e)) / CP_SLOPE
    return int(round(max(-CP_CAP, min(CP_CAP, cp))))


def parse_line(text: str) -> tuple[chess.Move, ...]:
    """Moves of a line written in UCI or SAN, space-separated, checked for legality from the start.

    Move numbers ('1.', '1...', '12.Nf3') and a result at the end are skipped, so a line copied
    from a PGN reads as it is.
    """
    board = chess.Board()
    for word in text.split():
        if word.rstrip(".").isdigit() or word in (*RESULTS, ABORTED):
            continue
        word = _MOVE_NUMBER.sub("", word)
        try:
            move = chess.Move.from_uci(word)
            if move not in board.legal_moves:
                raise ValueError
        except ValueError:
            try:
                move = board.parse_san(word)
            except ValueError:
                raise UserError(f"line {text!r}: {word!r} is not a legal move in {board.fen()}") from None
        board.push(move)
    return tuple(board.move_stack)


# Common openings (SAN), cut to `opening_plies` and deduplicated: paired start lines for the ladder.
START_LINES = (
    "e4 e5 Nf3 Nc6 Bb5 a6", "d4 d5 c4 e6 Nc3 Nf6", "e4 c5 Nf3 d6 d4 cxd4", "d4 Nf6 c4 g6 Nc3 Bg7",
    "e4 e6 d4 d5 Nc3 Nf6", "c4 e5 Nc3 Nf6 Nf3 Nc6", "e4 c6 d4 d5 Nc3 dxe4", "d4 Nf6 c4 e6 Nc3 Bb4",
    "e4 e5 Nf3 Nc6 Bc4 Bc5", "d4 d5 c4 c6 Nf3 Nf6", "Nf3 d5 g3 Nf6 Bg2 e6", "e4 c5 Nf3 Nc6 d4 cxd4",
    "e4 d5 exd5 Qxd5 Nc3 Qa5", "d4 f5 g3 Nf6 Bg2 e6", "e4 g6 d4 Bg7 Nc3 d6", "e4 e5 Nf3 Nf6 Nxe5 d6",
)


def opening_lines(plies: int) -> list[tuple[str, ...]]:
    """START_LINES cut to `plies` half-moves, as UCI, duplicates removed (order kept).

    >>> opening_lines(2)[:3]
    [('e2e4', 'e7e5'), ('d2d4', 'd7d5'), ('e2e4', 'c7c5')]
    >>> opening_lines(0)
    [()]
    """
    out: list[tuple[str, ...]] = []
    for line in START_LINES:
        moves = tuple(m.uci() for m in parse_line(line)[:plies])
        if moves not in out:
            out.append(moves)
    return out


def material(board: chess.Board, color: chess.Color) -> int:
    """Material of one side in pawns (P=1, N=B=3, R=5, Q=9)."""
    return sum(v * len(board.pieces(p, color)) for p, v in PIECE_VALUES.items())


def centipawns(score: chess.engine.PovScore, color: chess.Color) -> int:
    """An engine score from `color`'s side, mates as +-MATE_SCORE."""
    return int(score.pov(color).score(mate_score=MATE_SCORE))


def clipped_cp(score: chess.engine.PovScore, color: chess.Color) -> float:
    """An engine score from `color`'s side, clipped to +-CP_CAP."""
    return float(max(-CP_CAP, min(CP_CAP, centipawns(score, color))))


def final_cp(board: chess.Board, color: chess.Color) -> float | None:
    """The clipped score of a finished game from `color`'s side (0 drawn, +-CP_CAP decided); None
    while the game goes on (only checkmate, stalemate and the automatic draws end it here)."""
    outcome = board.outcome(claim_draw=False)
    if outcome is None:
        return None
    if outcome.winner is None:
        return 0.0
    return float(CP_CAP if outcome.winner == color else -CP_CAP)


# -- an engine opponent's strength ---------------------------------------------------------------------
class BadStrength(UserError):
    """A strength spec that does not follow the grammar (a setting out of range is a plain UserError)."""


@dataclass(frozen=True, kw_only=True)
class Strength:
    """How strong the engine plays: full strength, a UCI_Elo rating, a Skill Level (0-20), or a
    softmax over Stockfish's scores of every legal move (a known stochastic policy, see
    :mod:`chessdt.stockfish.softmax`), each optionally with a share `eps` of uniformly random
    legal moves instead of the engine's."""

    elo: int | None = None  # UCI_LimitStrength + UCI_Elo (1350-2850 in Stockfish 15.1); None = unlimited
    skill: int | None = None  # "Skill Level" 0-20, for settings below the UCI_Elo floor
    eps: float = 0.0  # probability of a random legal move (played by the caller; not an engine option)
    softmax: float | None = None  # temperature T in centipawns: P(move) ~ exp((score - best) / T)
    gate: int | None = None  # softmax rungs only: moves more than this many cp below the best get no softmax weight

    def __post_init__(self) -> None:
        if self.elo is not None and self.skill is not None:
            raise UserError("give a UCI_Elo or a Skill Level, not both")
        if self.softmax is not None and (self.elo is not None or self.skill is not None):
            raise UserError("a softmax rung scores moves at full strength: no UCI_Elo or Skill Level with it")
        if self.elo is not None and not UCI_ELO_MIN <= self.elo <= UCI_ELO_MAX:
            raise UserError(f"UCI_Elo {self.elo} outside Stockfish's range {UCI_ELO_MIN}-{UCI_ELO_MAX}; "
                            "use a Skill Level for weaker play")
        if self.skill is not None and not 0 <= self.skill <= 20:
            raise UserError(f"Skill Level {self.skill} outside 0-20")
        if not 0.0 <= self.eps <= 1.0:
            raise UserError(f"eps={self.eps:g}: a probability, from 0 to 1")
        if self.softmax is not None and not (math.isfinite(self.softmax) and 1.0 <= self.softmax <= 100_000):
            raise UserError(f"softmax={self.softmax:g}: a temperature in centipawns, from 1 to 100000")
        if self.gate is not None and (self.softmax is None or self.gate < 0):
            raise UserError("gate=C (centipawns, >= 0) goes with softmax=T")

    def options(self) -> dict[str, int | bool]:
        """The UCI options that set this strength (resetting the other mechanism)."""
        if self.elo is not None:
            return {"UCI_LimitStrength": True, "UCI_Elo": self.elo, "Skill Level": 20}
        if self.skill is not None:
            return {"UCI_LimitStrength": False, "Skill Level": self.skill}
        return {"UCI_LimitStrength": False, "Skill Level": 20}

    @classmethod
    def parse(cls, spec: str) -> Strength:
        """The one grammar of an engine opponent's strength: 'full', 'skill=N', 'elo=N', a UCI_Elo
        rating 'N', or 'softmax=T' with an optional ',gate=C', each optionally with ',eps=P' ('eps=P'
        alone: full strength). The ladder, the generator's rungs, move-matching references and RL all
        read it.

        >>> Strength.parse("1600").elo, Strength.parse("skill=3").skill, Strength.parse("full").spec
        (1600, 3, 'full')
        >>> Strength.parse("eps=0.25").eps, Strength.parse("skill=0,eps=0.5").spec
        (0.25, 'skill=0,eps=0.5')
        >>> s = Strength.parse("softmax=15,gate=100,eps=0.05"); s.softmax, s.gate, s.eps, s.spec
        (15.0, 100, 0.05, 'softmax=15,gate=100,eps=0.05')
        """
        base: dict[str, int] = {}
        eps = 0.0
        softmax: float | None = None
        gate: int | None = None
        parts = [p.strip() for p in spec.strip().lower().split(",")]
        for part in parts:
            key, sep, value = part.partition("=")
            number = value if sep else part
            if key == "eps" and sep and _is_number(value):
                eps = float(value)
            elif key == "softmax" and sep and _is_number(value) and softmax is None and not base:
                softmax = float(value)
            elif key == "gate" and sep and value.isdigit() and gate is None:
                gate = int(value)
            elif part == "full" and not base:
                base = {}
            elif number.lstrip("-").isdigit() and (not sep or key in ("skill", "elo")) and not base:
                base = {"skill" if key == "skill" else "elo": int(number)}
            else:
                raise BadStrength(f"strength {spec!r}: use 'full', 'skill=N', 'elo=N', a UCI_Elo rating such "
                                  "as '1350' or 'softmax=T[,gate=C]', optionally with ',eps=P'")
        return cls(**base, eps=eps, softmax=softmax, gate=gate)  # ranges checked here

    @property
    def spec(self) -> str:
        """The text :meth:`parse` reads back: 'full', 'skill=N', 'elo=N' or 'softmax=T[,gate=C]',
        then ',eps=P' if any."""
        if self.softmax is not None:
            base = f"softmax={self.softmax:g}" + (f",gate={self.gate}" if self.gate is not None else "")
        else:
            base = f"elo={self.elo}" if self.elo is not None else f"skill={self.skill}" if self.skill is not None else "full"
        return base + (f",eps={self.eps:g}" if self.eps else "")

    @property
    def deterministic(self) -> bool:
        """Full-strength Stockfish with no random moves: two such engines replay the same game."""
        return self.elo is None and self.skill in (None, 20) and self.eps == 0.0 and self.softmax is None

    def describe(self) -> str:
        """Short text for PGN headers, e.g. 'UCI_LimitStrength=true UCI_Elo=1600', 'full strength eps=0.5',
        'softmax T=15cp gate=100cp'."""
        if self.softmax is not None:
            text = f"softmax T={self.softmax:g}cp" + (f" gate={self.gate}cp" if self.gate is not None else "")
        elif self.elo is not None:
            text = f"UCI_LimitStrength=true UCI_Elo={self.elo}"
        elif self.skill is not None:
            text = f"Skill Level={self.skill}"
        else:
            text = "full strength"
        return text + (f" eps={self.eps:g}" if self.eps else "")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


OpponentKind = Literal["random", "stockfish", "uci", "self", "base"]
MODEL_OPPONENTS = ("self", "base")  # RL only: the policy itself, or the frozen base model at its prompt


@dataclass(frozen=True)
class Opponent:
    """Whoever sits across the board, written as a short spec; the one grammar of an opponent,
    parsed once (the ladder, the openings opponent, move-matching references, RL's opponent and the
    generator's rungs all read it):

    * 'random': a uniformly random legal move;
    * Stockfish at a :meth:`Strength.parse` strength: '1350' or 'elo=1350' (UCI_Elo 1350, whose
      nominal rating anchors the Elo fit), 'skill=N', 'full', 'softmax=T[,gate=C]', each optionally
      ',eps=P'; 'eps=P' alone is full-strength Stockfish that plays a uniformly random legal move
      with probability P;
    * 'uci=COMMAND@RATING': any UCI engine (e.g. lc0 with Maia weights), with a declared rating that
      anchors the fit like a UCI_Elo rung;
    * where a model may sit there (RL): 'self' (the policy itself) or 'base' (the frozen base model);

    each engine optionally with '/N', its own node budget per move (per scored move for softmax).

    >>> Opponent.parse("1350").elo, Opponent.parse("skill=0").skill, Opponent.parse("random").kind
    (1350, 0, 'random')
    >>> o = Opponent.parse("eps=0.25/500"); o.eps, o.nodes, o.label, o.spec
    (0.25, 500, 'sf-eps0.25', 'full,eps=0.25/500')
    >>> o = Opponent.parse("uci=lc0 --weights=maia-1500.pb.gz@1500/1"); o.command, o.elo, o.nodes, o.label
    (('lc0', '--weights=maia-1500.pb.gz'), 1500, 1, 'lc0@1500')
    >>> Opponent.parse("base", models=True).kind
    'base'
    """

    kind: OpponentKind
    strength: Strength = Strength()  # the Stockfish setting (kind 'stockfish')
    rating: int | None = None  # a UCI engine's declared rating (kind 'uci')
    command: tuple[str, ...] = ()  # a UCI engine's command line (kind 'uci')
    nodes: int | None = None  # its own node budget per move (None = the caller's)

    @classmethod
    def parse(cls, spec: str, *, models: bool = False) -> Opponent:
        """The opponent a spec names; `models` also allows 'self' and 'base'. BadStrength (a
        UserError) names the grammar when the spec does not follow it."""
        text = spec.strip()
        if text.lower().startswith("uci="):
            command, at, rating = text.partition("=")[2].rpartition("@")
            rating_s, _, nodes_s = rating.partition("/")
            try:
                words = tuple(shlex.split(command))
                if at and words:
                    return cls("uci", rating=int(rating_s), command=words, nodes=_nodes(nodes_s, spec))
            except ValueError:
                pass
            raise BadStrength(f"opponent {spec!r}: a UCI engine is 'uci=COMMAND@RATING[/NODES]'")
        lower = text.lower()
        if lower == "random" or (models and lower in MODEL_OPPONENTS):
            return cls("random" if lower == "random" else "self" if lower == "self" else "base")
        how, _, nodes_s = lower.partition("/")
        try:
            return cls("stockfish", Strength.parse(how), nodes=_nodes(nodes_s, spec))
        except BadStrength:
            extra = ", 'self', 'base'" if models else ""
            raise BadStrength(f"opponent {spec!r}: use 'random'{extra}, 'skill=N', 'full', a UCI_Elo rating such as "
                              "'1350', 'eps=P' (0..1), 'softmax=T[,gate=C][,eps=P]' or 'uci=COMMAND@RATING', "
                              "each engine optionally with '/NODES'") from None

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
    def spec(self) -> str:
        """The text :meth:`parse` reads back."""
        if self.kind == "uci":
            base = "uci=" + " ".join(shlex.quote(w) for w in self.command) + f"@{self.rating}"
        else:
            base = self.strength.spec if self.kind == "stockfish" else self.kind
        return base + (f"/{self.nodes}" if self.nodes is not None else "")

    @property
    def label(self) -> str:
        """Name in game tables and PGN: 'random', 'sf-skill0', 'sf-1350', 'sf-full', 'sf-eps0.25', 'lc0@1500'."""
        if self.kind != "stockfish":
            return f"{Path(self.command[0]).name}@{self.elo}" if self.kind == "uci" else self.kind
        if self.strength.softmax is not None:
            return "sf-" + self.strength.spec.replace("=", "").replace(",", "-")
        if self.eps:
            return f"sf-eps{self.eps:g}"
        if self.skill is not None:
            return f"sf-skill{self.skill}"
        return f"sf-{self.elo}" if self.elo is not None else "sf-full"


def _nodes(text: str, spec: str) -> int | None:
    """The '/N' node budget of an opponent spec (None when absent)."""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise BadStrength(f"opponent {spec!r}: the node budget after '/' must be a whole number >= 1")
    return int(text)
