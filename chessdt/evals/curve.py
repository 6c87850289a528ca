"""The legality learning curve: top-1 legal share on held-out positions against tokens seen, per run.

Training evaluates the raw model on a fixed held-out sample every `train.eval_every` steps
(`metrics.jsonl`: tokens seen, legal top-1 share). Read for a pure-sequence run and a rule-fed run on
the same data and budget, the tokens each needs to reach 95 / 98 / 99% put a number on the cost of
learning the rules from the moves alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chessdt.config import ConfigError, config_from_dict
from chessdt.errors import UserError
from chessdt.evals.legality import model_inputs
from chessdt.evals.results import JsonResult, fmt
from chessdt.train import read_metrics

THRESHOLDS = (0.95, 0.98, 0.99)


@dataclass(frozen=True)
class Crossing:
    """Where a run's legal share first reached a threshold, bracketed by its evaluations."""

    threshold: float
    tokens: int | None  # tokens seen at the first evaluation at or above it (None: never reached)
    after: int | None  # tokens at the evaluation before (the threshold was crossed in between)


@dataclass(frozen=True)
class CurveRun:
    """One run's curve."""

    name: str
    inputs: str  # model_inputs of the run's config
    tokens: tuple[int, ...]  # tokens seen at each evaluation
    legal: tuple[float, ...]  # legal top-1 share at each evaluation
    positions: int  # held-out positions per evaluation
    minutes: float  # training time at the last evaluation
    crossings: tuple[Crossing, ...]

    @property
    def final(self) -> float:
        return self.legal[-1] if self.legal else math.nan


@dataclass(frozen=True)
class LegalityCurve(JsonResult):
    runs: tuple[CurveRun, ...]
    thresholds: tuple[float, ...]

    def format(self) -> str:
        """A markdown table: per run its inputs, budget, last legal share and tokens to each threshold."""
        heads = " | ".join(f"tokens to {fmt(t, 0, True)}" for t in self.thresholds)
        out = ["Legality learning curve: top-1 legal share on held-out positions (raw model) against tokens "
               "seen; a threshold is reached at the first evaluation at or above it (in brackets: the evaluation "
               "before, so the crossing lies between)", "",
               f"| run | model inputs | tokens seen | minutes | held-out positions | last legal top-1 | {heads} |",
               "|---|---|---:|---:|---:|---:|" + "---:|" * len(self.thresholds)]
        for r in self.runs:
            cells = [(f"{c.tokens / 1e6:.2f}M ({c.after / 1e6:.2f}M)" if c.after is not None else f"{c.tokens / 1e6:.2f}M")
                     if c.tokens is not None else "not reached" for c in r.crossings]
            out.append(f"| {r.name} | {r.inputs} | {(r.tokens[-1] if r.tokens else 0) / 1e6:.2f}M | {r.minutes:.0f} | "
                       f"{r.positions:,} | {fmt(r.final, 2, True)} | " + " | ".join(cells) + " |")
        return "\n".join(out) + "\n"


def crossings(tokens: Sequence[int], legal: Sequence[float], thresholds: Sequence[float]) -> tuple[Crossing, ...]:
    """First evaluation at or above each threshold, with the tokens of the evaluation before.

    >>> [(c.tokens, c.after) for c in crossings([0, 100, 200], [0.1, 0.96, 0.99], (0.95, 0.99, 0.999))]
    [(100, 0), (200, 100), (None, None)]
    """
    out = []
    for t in thresholds:
        k = next((i for i, v in enumerate(legal) if v >= t), None)
        out.append(Crossing(threshold=t, tokens=None if k is None else int(tokens[k]),
                            after=None if k is None or k == 0 else int(tokens[k - 1])))
    return tuple(out)


def run_inputs(run_dir: Path) -> str:
    """model_inputs of the config saved in a run directory ("" when it cannot be read)."""
    try:
        cfg = config_from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
    except (OSError, ValueError, ConfigError, TypeError, KeyError):
        return ""
    return model_inputs(cfg.model)


def curve_run(run_dir: Path, thresholds: Sequence[float] = THRESHOLDS, name: str | None = None) -> CurveRun:
    """A run's legality curve from its metrics.jsonl (a one-line UserError when it has none)."""
    rows = [r for r in read_metrics(Path(run_dir)) if isinstance(r.get("legal"), (int, float))]
    if not rows:
        raise UserError(f"{run_dir}: no metrics.jsonl with legal shares (a training run directory)")
    tokens = tuple(int(r["tokens"]) for r in rows)
    legal = tuple(float(r["legal"]) for r in rows)
    return CurveRun(name=name or Path(run_dir).name, inputs=run_inputs(Path(run_dir)), tokens=tokens, legal=legal,
                    positions=int(rows[-1].get("val_positions", 0)),
                    minutes=float(rows[-1].get("time_s", 0.0)) / 60.0, crossings=crossings(tokens, legal, thresholds))


def legality_curve(run_dirs: Sequence[Path], thresholds: Sequence[float] = THRESHOLDS,
                   out: Path | None = None) -> LegalityCurve:
    """The curves of several runs (e.g. pure and rule-fed on the same data); saved as JSON to `out` if given."""
    if not run_dirs:
        raise UserError("name at least one run directory")
    if any(not 0 < t < 1 for t in thresholds):
        raise UserError(f"thresholds {list(thresholds)}: each must be a share between 0 and 1")
    result = LegalityCurve(runs=tuple(curve_run(Path(d), thresholds) for d in run_dirs), thresholds=tuple(thresholds))
    if out is not None:
        result.save(out)
    return result
