"""Typed, frozen dataclasses from TOML tables and back: each value converted by its field's declared
type (so `--set train.lr=3e-4` overrides work as strings), unknown keys refused with the valid ones
listed, and a dataclass turned back into plain JSON/TOML-ready data. chessdt.config holds the sections.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from typing import Any, Literal

from chessdt.errors import ConfigError


def section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a TOML value or an override string to the declared field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _convert(value, members[0], where)
    if origin is tuple:
        if isinstance(value, str) and value.strip().startswith("["):  # --set k=[[0, 1299], [2200, 4000]]
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{where}: {value!r} is not a TOML list ({e})") from None
        elif isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_type = args[0]
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            return tuple(_convert(v, item_type, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items, got {value!r}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value) if not isinstance(value, str) else tp(float(value)) if tp is float else int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    if tp is str or origin is Literal:  # a Literal's values are checked by its section's __post_init__
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type, table: dict[str, Any], where: str) -> Any:
    hints = section_types(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"unknown key {where}{key!r}; valid keys: {', '.join(names)}")
        tp = hints[key]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] must be a table")
            kwargs[key] = build(tp, value, f"{key}.")
        else:
            kwargs[key] = _convert(value, tp, f"{where}{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from None


def _set_path(table: dict[str, Any], key: str, value: str) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        table = table.setdefault(p, {})
        if not isinstance(table, dict):
            raise ConfigError(f"--set {key}: {p} is not a section")
    table[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """['train.lr=3e-4', ...] -> nested dict of strings, converted later by field type."""
    table: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        _set_path(table, key.strip(), value.strip())
    return table


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj: Any) -> Any:
    """A config (or section) as plain JSON/TOML-ready data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
