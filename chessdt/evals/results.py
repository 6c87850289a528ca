"""Evaluation results on disk: strict JSON written atomically, read back into their dataclasses."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

RESULT_FILES = {"legality": "legality.json", "strength": "strength.json", "openings": "openings.json",
                "value": "value.json", "fidelity": "fidelity.json", "prompt": "prompt.json"}


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

    def to_dict(self) -> dict[str, Any]:
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
