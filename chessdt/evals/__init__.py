"""Evaluators: move legality, strength by prompted rating, opening variety.

Each evaluator is a library function that returns a frozen result dataclass (with `to_dict`,
`save` and `format`) and never prints. What is evaluated is a :class:`Subject`: a policy prompted
at a rating (played in batches through the KV cache) or any :class:`~chessdt.play.players.Player`
(played one move at a time), so other experiments (RL fine-tuning, filtered imitation, a
quantilizer) can be measured with the same code.

Results go to ``<run_dir>/eval/{legality,strength,openings}.json`` by default, next to the game
logs (``*_games.jsonl``); ``chessdt report RUN_DIR`` turns them into ``report.md`` with plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chessdt.config import EvalConfig
from chessdt.play.arena import PlayerSeat, Seat
from chessdt.play.players import Player
from chessdt.play.policy import ModelPolicy, Prompted, Sampling

RESULT_FILES = {"legality": "legality.json", "strength": "strength.json", "openings": "openings.json"}


@dataclass(frozen=True, eq=False)
class Subject:
    """What an evaluator measures: the model prompted at a rating, or any Player."""

    label: str  # name in tables and game logs, e.g. 'model@1600'
    rating: int | None  # prompted rating (the x axis of strength plots); None when there is none
    prompted: Prompted | None = None  # set for a model: played batched through its KV cache
    make_player: Callable[[int], Player] | None = None  # set for any other Player: seed -> instance
    pooled: bool = False  # Player instances are costly (hold an engine): share a few across games

    @classmethod
    def model(cls, policy: ModelPolicy, rating: int | None, sampling: Sampling = Sampling(),
              label: str | None = None) -> Subject:
        return cls(label=label or f"model@{rating if rating is not None else '?'}", rating=rating,
                   prompted=Prompted(policy, rating, None, sampling))

    @property
    def policy(self) -> ModelPolicy | None:
        return None if self.prompted is None else self.prompted.policy

    @property
    def sampling(self) -> Sampling:
        return Sampling() if self.prompted is None else self.prompted.sampling

    @classmethod
    def player(cls, label: str, make: Callable[[int], Player], rating: int | None = None,
               pooled: bool = False) -> Subject:
        return cls(label=label, rating=rating, make_player=make, pooled=pooled)

    @contextlib.contextmanager
    def open_player(self, seed: int) -> Iterator[Player]:
        """A fresh Player of a non-model subject, started and closed like a resource."""
        if self.make_player is None:
            raise ValueError(f"subject {self.label} is a model: it plays through sessions, not a Player")
        player = self.make_player(seed)
        enter = getattr(player, "__enter__", None)
        if enter is not None:
            enter()
        try:
            yield player
        finally:
            leave = getattr(player, "__exit__", None)
            if leave is not None:
                leave(None, None, None)

    def seat(self) -> Seat:
        """The arena seat that plays this subject."""
        if self.prompted is not None:
            return self.prompted
        if self.make_player is None:
            raise ValueError(f"subject {self.label}: give a policy or a make_player")
        return PlayerSeat(make=self.make_player, pooled=self.pooled)


def sampling_of(cfg: EvalConfig) -> Sampling:
    """The play-time sampling settings of an eval config."""
    return Sampling(temperature=cfg.temperature, top_p=cfg.top_p, guidance=cfg.guidance,
                    mask_illegal=cfg.mask_illegal)


def model_subjects(policy: ModelPolicy, cfg: EvalConfig) -> list[Subject]:
    """One subject per prompted rating of the config."""
    return [Subject.model(policy, r, sampling_of(cfg)) for r in cfg.ratings]


def jsonable(obj: Any) -> Any:
    """Strict JSON data from dataclasses, tuples and dicts: nan becomes null, +-inf "inf"/"-inf"."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a result dataclass from what jsonable wrote (the inverse, nan and inf included)."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _coerce(hints[f.name], data.get(f.name)) for f in dataclasses.fields(cls) if f.name in data})


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value) if len(inner) == 1 else value
    if value is None:
        return math.nan if tp is float else None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    if origin is dict:
        return {k: _coerce(args[1], v) for k, v in value.items()}
    if tp is float:
        return float(value)
    return value


def save_json(data: Any, path: Path) -> Path:
    """Write `data` (a result dataclass or plain data) as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=1) + "\n")
    os.replace(tmp, path)
    return path


class JsonResult:
    """to_dict / save / load of a frozen result dataclass: strict JSON, written atomically."""

    def to_dict(self) -> dict:
        return jsonable(self)

    def save(self, path: Path) -> Path:
        return save_json(self, path)

    @classmethod
    def load(cls, path: Path) -> typing.Self:
        return from_dict(cls, json.loads(Path(path).read_text()))


def eval_dir(checkpoint: Path) -> Path:
    """Default output folder of evals: `<run_dir>/eval` for a checkpoint inside a run directory."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "eval"
    if (checkpoint / "checkpoints").is_dir():
        return checkpoint / "eval"
    return checkpoint.parent / "eval"


def fmt(x: float | None, digits: int = 1, pct: bool = False) -> str:
    """A number for a markdown table: '-' for missing, percent when asked."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{100.0 * x:.{digits}f}%" if pct else f"{x:.{digits}f}"
