"""The range checks of settings that several front ends accept (config sections, match settings, CLI
flags, UCI options): one check per kind of value, each raising ValueError with how to fix it."""

from __future__ import annotations

from typing import Any

from chessdt.errors import ConfigError


MIN_TEMPERATURE = 0.01  # below this (but above 0) logits / T overflow float32 and sampling fails
MAX_TEMPERATURE = 100.0  # above this every move is about equally likely anyway
MAX_GUIDANCE = 100.0  # |w| beyond this the guided logits are the conditioning difference alone, blown up


def check_temperature(t: float) -> float:
    """A temperature sampling works at: 0 (the most likely move) or MIN..MAX_TEMPERATURE; ValueError
    otherwise. With check_top_p and check_guidance, the one range check of sampling settings (config
    sections, match settings, the CLI and the UCI options).

    >>> check_temperature(0.5)
    0.5
    """
    if not (t == 0 or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):  # also refuses nan
        raise ValueError(f"must be 0 (most likely move) or a number in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE:g}]")
    return t


def check_top_p(p: float) -> float:
    """A nucleus mass sampling works at, in (0, 1]; ValueError otherwise (nan included)."""
    if not 0 < p <= 1:
        raise ValueError("must be in (0, 1]")
    return p


def check_guidance(w: float) -> float:
    """A classifier-free guidance weight in [-MAX_GUIDANCE, MAX_GUIDANCE]; ValueError otherwise (nan included)."""
    if not -MAX_GUIDANCE <= w <= MAX_GUIDANCE:
        raise ValueError(f"must be a number in [{-MAX_GUIDANCE:g}, {MAX_GUIDANCE:g}] (0 = off)")
    return w


def check_values(where: str, check: Any, *values: Any) -> None:
    """ConfigError naming `where` and the first of `values` that `check` refuses."""
    for v in values:
        try:
            check(v)
        except ValueError as e:
            raise ConfigError(f"{where}={v!r}: {e}" if isinstance(v, str) else f"{where}={v}: {e}") from None


def check_device(name: str) -> str:
    """'auto' or a device string torch understands ('cpu', 'cuda:1', 'mps'); ValueError otherwise.
    Whether this machine has the device is train.pick_device's question."""
    if name == "auto":
        return name
    import torch  # only here: most configs never name a device

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError("use auto, cpu, cuda, cuda:N or mps") from None
    return name
