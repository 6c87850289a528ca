"""Time management of the UCI front end: the `go` command, the move's budget, the deadline's margin.

The model answers in one forward pass, so there is no search to stop early: the clock only decides
when the deadline fires and the fallback move goes out instead (:mod:`chessdt.play.uci`). A move's
budget is the GUI's limit less Move Overhead, the overhead capped at half the limit (:func:`kept_back_ms`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import chess

GO_VALUE_KEYS = ("wtime", "btime", "winc", "binc", "movestogo", "depth", "nodes", "mate", "movetime")
GO_FLAG_KEYS = ("infinite", "ponder")
MOVES_TO_GO = 30  # a sudden-death clock is spread as if this many moves were left (Stockfish-like)
MAX_BUDGET_MS = 7 * 24 * 3600 * 1000  # a longer budget is a week: the timer cannot wait 1e20 ms (the model
# answers in milliseconds anyway)
DEFAULT_MOVE_OVERHEAD = 30  # ms kept back from every budget for the GUI's and the pipe's latency
# Move Overhead never keeps back more than this share of a move's time: a GUI's `go movetime 100` with
# Move Overhead 100 (lichess-bot's default) left the model 0 ms, and every move was the fallback (issue 25)
OVERHEAD_SHARE = 0.5
MIN_MARGIN_MS = 5.0  # the deadline fires at least this long before the budget ends
LATENESS_WINDOW = 32  # deadlines remembered for the margin (their worst lateness)
# The margin is this many times that worst lateness: what we measure is only our side of the delay
# (timer wake-up, the GIL, the write); the GUI's process wakes up on the same busy cores.
LATENESS_FACTOR = 2.0
MAX_MARGIN_SHARE = 0.8  # the margin never takes more than this share of a budget


@dataclass(frozen=True, kw_only=True)
class Go:
    """One parsed `go` command (times in milliseconds, as UCI sends them)."""

    wtime: int | None = None
    btime: int | None = None
    winc: int = 0
    binc: int = 0
    movestogo: int | None = None
    movetime: int | None = None
    hold: bool = False  # infinite or ponder: the bestmove waits for stop / ponderhit
    ponder: bool = False  # go ponder: a stop before ponderhit means the GUI discards the bestmove
    searchmoves: tuple[chess.Move, ...] = ()


def parse_go(args: list[str], board: chess.Board | None) -> tuple[Go, list[str]]:
    """The `go` command's settings and a complaint for each part ignored."""
    values: dict[str, int] = {}
    hold = ponder = False
    searchmoves: list[chess.Move] = []
    complaints: list[str] = []
    i = 0
    while i < len(args):
        key = args[i]
        if key in GO_FLAG_KEYS:
            hold = True
            ponder = ponder or key == "ponder"
        elif key in GO_VALUE_KEYS:
            value = args[i + 1] if i + 1 < len(args) else None
            if value is None or not value.lstrip("-").isdigit():
                complaints.append(f"go: {key} needs a whole number; ignored")
            else:
                values[key] = int(value)
            if value is not None and value not in GO_VALUE_KEYS + GO_FLAG_KEYS + ("searchmoves",):
                i += 1
        elif key == "searchmoves":
            while i + 1 < len(args) and args[i + 1] not in GO_VALUE_KEYS + GO_FLAG_KEYS:
                i += 1
                try:
                    if board is None:
                        raise ValueError("no position")
                    searchmoves.append(board.parse_uci(args[i]))
                except ValueError:
                    complaints.append(f"go: searchmoves {args[i]!r} is not legal here; ignored")
        else:
            complaints.append(f"go: {key!r} ignored")
        i += 1
    go = Go(wtime=values.get("wtime"), btime=values.get("btime"), winc=max(0, values.get("winc", 0)),
            binc=max(0, values.get("binc", 0)), movestogo=values.get("movestogo"),
            movetime=values.get("movetime"), hold=hold, ponder=ponder,
            searchmoves=tuple(searchmoves))
    return go, complaints


def limit_ms(go: Go, turn: chess.Color) -> float | None:
    """Milliseconds the GUI gives this move: the movetime or this move's share of the clock, whichever
    is tighter; None when nothing limits it (depth, nodes, infinite or a bare go).

    >>> limit_ms(Go(wtime=60_000, btime=1, winc=1000), chess.WHITE)
    3000.0
    """
    limits: list[float] = []
    if go.movetime is not None:
        limits.append(go.movetime)
    clock, inc = (go.wtime, go.winc) if turn == chess.WHITE else (go.btime, go.binc)
    if clock is not None:
        moves = go.movestogo if go.movestogo and go.movestogo > 0 else MOVES_TO_GO
        # This move's share, but never more than half of what is left (the increment comes after).
        limits.append(min(clock / moves + inc, clock / 2))
    if not limits:
        return None
    return max(0.0, min(*limits, MAX_BUDGET_MS))


def kept_back_ms(limit: float, overhead_ms: int) -> float:
    """What Move Overhead keeps back of a move's `limit`: the overhead, at most OVERHEAD_SHARE of the
    limit, so that no setting leaves the model 0 ms (`go movetime 100` with Move Overhead 100 keeps 50).

    >>> kept_back_ms(1000, 30), kept_back_ms(100, 100), kept_back_ms(100, 30)
    (30, 50.0, 30)
    """
    return min(overhead_ms, OVERHEAD_SHARE * limit)


def budget_ms(go: Go, turn: chess.Color, overhead_ms: int) -> float | None:
    """Milliseconds the answer may take: the move's limit (:func:`limit_ms`) less what Move Overhead
    keeps back (:func:`kept_back_ms`); None when nothing limits it.

    >>> budget_ms(Go(movetime=100), chess.WHITE, 30), budget_ms(Go(movetime=100), chess.WHITE, 100)
    (70, 50.0)
    >>> budget_ms(Go(wtime=60_000, btime=1, winc=1000), chess.WHITE, 30)
    2970.0
    """
    limit = limit_ms(go, turn)
    return None if limit is None else limit - kept_back_ms(limit, overhead_ms)


def deadline_margin(lateness_ms: Iterable[float], budget_ms: float, kept_back_ms: float = 0.0) -> float:
    """Milliseconds before the budget's end at which the deadline fires: MIN_MARGIN_MS, plus the part
    of LATENESS_FACTOR times the worst lateness of the recent timed answers (how long after its time
    the deadline's bestmove went out) that Move Overhead's `kept_back_ms` does not already cover, at
    most MAX_MARGIN_SHARE of the budget. (Counting the lateness on top of an overhead that absorbs
    it fired a 100 ms move's deadline at 10 ms on a busy machine: every answer was the fallback.)

    >>> deadline_margin([], 1000.0), deadline_margin([3.0, 10.0], 1000.0), deadline_margin([900.0], 100.0)
    (5.0, 25.0, 80.0)
    >>> deadline_margin([20.0], 50.0, kept_back_ms=50.0), deadline_margin([40.0], 50.0, kept_back_ms=50.0)
    (5.0, 35.0)
    """
    worst = max(lateness_ms, default=0.0)
    extra = max(0.0, LATENESS_FACTOR * max(0.0, worst) - kept_back_ms)
    return min(MIN_MARGIN_MS + extra, MAX_MARGIN_SHARE * budget_ms)
