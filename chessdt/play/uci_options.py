"""The UCI options of the model engine: names, parsers, the `option` lines, and what each one sets.

UCI has no float type: floats are strings, as in Lc0. Sampling values are checked by the one
home of those checks (:func:`chessdt.checks.check_temperature` and friends).

Besides the model's own options, the engine declares the conventional ones that GUIs and bots send
unasked (lichess-bot's default ``uci_options``: Move Overhead, Threads, Hash, SyzygyPath,
UCI_ShowWDL), so that setting them is never an error: python-chess refuses to set an option the
engine does not declare, and lichess-bot then restarts the engine instead of playing. Those
chessdt has no use for (Hash, SyzygyPath; UCI_ShowWDL without a value head) are accepted and do
nothing (:data:`NO_OPS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from chessdt.checks import check_guidance, check_temperature, check_top_p
from chessdt.play.policy import Prompted, Sampling
from chessdt.play.uci_time import DEFAULT_MOVE_OVERHEAD
from chessdt.tokenizer import RATING_MAX, RATING_MIN, check_rating

SEED_MAX = 2**31 - 1
DEFAULT_RATING = 1500  # the Rating option's default, as `chessdt play` and `chessdt uci` use


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(v: str) -> int:
        x = int(v)
        if not lo <= x <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return x
    return parse


def _rating(v: str) -> int:
    return check_rating(int(v))


def _check(v: str) -> int:
    if v.lower() not in ("true", "false"):
        raise ValueError("must be true or false")
    return int(v.lower() == "true")


def _text(v: str) -> str:
    return v


Value = int | float | str  # a parsed option value

# UCI name -> (what it sets: a Prompted field, a Sampling field or an engine setting; parser; the
# `option` line's type and range). UCI has no float type: floats are strings, as in Lc0.
OPTIONS: dict[str, tuple[str, Callable[[str], Value], str]] = {
    "Rating": ("rating", _rating, f"type spin default {DEFAULT_RATING} min {RATING_MIN} max {RATING_MAX - 1}"),
    "OpponentRating": ("opponent_rating", _int_in(0, RATING_MAX - 1),  # 0 = the same as Rating
                       f"type spin default 0 min 0 max {RATING_MAX - 1}"),
    "Temperature": ("temperature", lambda v: check_temperature(float(v)), f"type string default {Sampling().temperature}"),
    "TopP": ("top_p", lambda v: check_top_p(float(v)), f"type string default {Sampling().top_p}"),
    "Guidance": ("guidance", lambda v: check_guidance(float(v)), f"type string default {Sampling().guidance}"),
    "Seed": ("seed", _int_in(0, SEED_MAX), f"type spin default 0 min 0 max {SEED_MAX}"),
    # The conventional options (lichess-bot's defaults send Move Overhead, Threads, Hash, SyzygyPath, UCI_ShowWDL).
    "Threads": ("threads", _int_in(1, 256), "type spin default 1 min 1 max 256"),  # torch threads
    "Hash": ("hash", _int_in(1, 1 << 20), "type spin default 16 min 1 max 1048576"),  # no-op: no search tree
    "Move Overhead": ("move_overhead", _int_in(0, 10_000),
                      f"type spin default {DEFAULT_MOVE_OVERHEAD} min 0 max 10000"),
    "Ponder": ("ponder", _check, "type check default false"),  # tells GUIs we answer `go ponder`
    # UCI_Elo is the prompted rating while UCI_LimitStrength is on; Rating is, while it is off.
    "UCI_LimitStrength": ("limit_strength", _check, "type check default false"),
    "UCI_Elo": ("uci_elo", _rating, f"type spin default {DEFAULT_RATING} min {RATING_MIN} max {RATING_MAX - 1}"),
    # With a value head: W/D/L beside the score; without one there is no score, and it does nothing.
    "UCI_ShowWDL": ("show_wdl", _check, "type check default true"),
    "SyzygyPath": ("syzygy_path", _text, "type string default <empty>"),  # no-op: no tablebase probing
}
# Accepted and ignored (said in the README): one forward pass has no search tree to size and probes no
# tablebase; UCI_ShowWDL only does something for a model with a value head (UciEngine._apply).
NO_OPS = ("Hash", "SyzygyPath")


def set_option(model: Prompted, field: str, value: int | float) -> Prompted:
    """The prompted model with one of its UCI options changed (the rating is the engine's: see UciEngine._apply)."""
    if field == "opponent_rating":
        return dataclasses.replace(model, opponent_rating=int(value) or None)
    s = model.sampling
    if field == "temperature":
        s = dataclasses.replace(s, temperature=float(value))
    elif field == "top_p":
        s = dataclasses.replace(s, top_p=float(value))
    elif field == "guidance":
        s = dataclasses.replace(s, guidance=float(value))
    else:
        raise ValueError(f"no option sets {field!r}")
    return dataclasses.replace(model, sampling=s)
