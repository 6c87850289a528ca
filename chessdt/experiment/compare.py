"""Comparing the frontier's arms: with each other at matched strength, with the data's own rungs at the
same strength, across RL seeds, and along the RL runs (the over-optimisation curve)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chessdt.evals.variety import Estimate, LineVariety
from chessdt.experiment.measure import Point
from chessdt.metrics import seeds_interval

DATA = "data"  # the arm of the data's rungs: a curve of its own, not through the reference
MEASURES = {  # frontier axis -> what it is
    "line_entropy": "entropy of self-play opening lines (bits)",
    "position_entropy": "per-position move entropy (bits)",
    "good_entropy": "entropy among good moves (bits)",
    "good_mass": "probability of a good move",
}


POINT_ARMS = {"filtered"}  # arms without a knob: a point of their own, not a curve from the reference


def _curve(points: Sequence[tuple[float, float]], at: float) -> float:
    """Linear interpolation of (elo, value) points at `at`; nan outside their Elo range. A single
    point is its own value at its own Elo."""
    pts = sorted(p for p in points if math.isfinite(p[0]) and math.isfinite(p[1]))
    if len(pts) == 1:
        return pts[0][1] if pts[0][0] == at else math.nan
    if len(pts) < 2 or not pts[0][0] <= at <= pts[-1][0]:
        return math.nan
    x, y = zip(*pts)
    return float(np.interp(at, x, y))


def matched(points: Sequence[Point], draws: dict[str, dict[str, np.ndarray]], key: str, k: int) -> list[dict[str, Any]]:
    """Arms compared at equal measured Elo, on the frontier axis `key`.

    Each arm with a knob is a curve through the reference (Elo 0) and its settings, ordered by Elo
    and interpolated linearly. Two curves that overlap in Elo are compared at the middle of the
    overlap; a single-point arm (filtered imitation) at its own Elo, where the other curve reaches
    it. The interval comes from the bootstrap draws of every point's Elo and variety (in each draw a
    single point sits at its drawn Elo); `defined` is the share of draws in which both arms reach
    the Elo compared.
    """
    arms: dict[str, list[Point]] = {}
    for p in points:
        if p.arm not in ("reference", DATA):
            arms.setdefault(p.arm, []).append(p)
    ref = next(p for p in points if p.arm == "reference")
    for name in arms:
        if name not in POINT_ARMS:
            arms[name] = [ref, *arms[name]]
    out = []
    names = sorted(arms)
    n = len(draws[ref.label]["elo"])
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a in POINT_ARMS and b in POINT_ARMS:
                continue
            ra = (min(p.elo.value for p in arms[a]), max(p.elo.value for p in arms[a]))
            rb = (min(p.elo.value for p in arms[b]), max(p.elo.value for p in arms[b]))
            lo, hi = max(ra[0], rb[0]), min(ra[1], rb[1])
            single = next((x for x in (a, b) if x in POINT_ARMS), None)
            if single is None and hi - lo < 1.0:  # the curves meet only at the reference
                continue
            if single is not None and not lo <= hi:  # the point lies outside the other curve
                continue

            def at(j: int | None) -> float:
                if single is None:
                    return (lo + hi) / 2
                p = arms[single][0]
                return p.elo.value if j is None else float(draws[p.label]["elo"][j])

            def value(arm: str, j: int | None) -> float:
                if j is None:
                    return _curve([(p.elo.value, _measure_of(p, key, k)) for p in arms[arm]], at(None))
                return _curve([(draws[p.label]["elo"][j], draws[p.label][key][j]) for p in arms[arm]], at(j))

            va, vb = value(a, None), value(b, None)
            diffs = np.array([value(b, j) - value(a, j) for j in range(n)])
            est = Estimate.normal(vb - va, diffs)  # the line entropies' resampling bias: see Estimate.normal
            out.append({"a": a, "b": b, "elo": at(None), "a_value": va, "b_value": vb, "difference": est.value,
                        "lo": est.lo, "hi": est.hi, "defined": float(np.isfinite(diffs).mean())})
    return out


def _measure_of(p: Point, key: str, k: int) -> float:
    """A point's value on a frontier axis (lines of k plies for the opening entropy)."""
    if key == "line_entropy":
        return next(v.entropy.value for v in p.lines if v.k == k)
    pv = p.positions
    return {"position_entropy": pv.entropy.value, "good_mass": pv.good_mass.value,
            "good_entropy": pv.good_entropy.value}[key]




# -- seeds ----------------------------------------------------------------------------------------------------
def across_seeds(points: Sequence[Point], draws: dict[str, dict[str, np.ndarray]]
                 ) -> tuple[list[Point], dict[str, dict[str, np.ndarray]]]:
    """Points of one RL group (the same setting, several seeds) merged into one: every measure the
    mean over seeds, its interval a Student-t interval across seeds (the seed-to-seed spread, the
    honest interval for a training run); the bootstrap draws averaged over seeds. Other points pass."""
    groups: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.arm, p.group if p.seed is not None else p.label), []).append(p)
    out_points, out_draws = [], dict(draws)
    for (arm, group), ps in groups.items():
        if len(ps) == 1 and ps[0].seed is None:
            out_points.append(ps[0])
            continue
        label = f"{arm} {group}"

        def est(get: Any) -> Estimate:
            values = [get(p) for p in ps]
            return Estimate(*seeds_interval([v for v in values if v is not None]))

        lines = tuple(LineVariety(v.k, v.games, est(lambda p, i=i: p.lines[i].entropy.value),
                                  est(lambda p, i=i: p.lines[i].distinct.value), float(np.mean([p.lines[i].top_share
                                                                                                 for p in ps])))
                      for i, v in enumerate(ps[0].lines))
        pv0 = ps[0].positions
        positions = dataclasses.replace(
            pv0, entropy=est(lambda p: p.positions.entropy.value), good_mass=est(lambda p: p.positions.good_mass.value),
            good_entropy=est(lambda p: p.positions.good_entropy.value), cp_loss=est(lambda p: p.positions.cp_loss.value))

        def mean(get: Any) -> float | None:
            values = [get(p) for p in ps if get(p) is not None]
            return float(np.mean(values)) if values else None

        def opt(get: Any) -> Estimate | None:
            return est(get) if all(get(p) is not None for p in ps) else None

        merged = Point(arm, label, f"{group} ({len(ps)} seeds)", est(lambda p: p.elo.value), sum(p.games for p in ps),
                       float(np.mean([p.score for p in ps])), lines, positions, mean(lambda p: p.kl_from_reference),
                       mean(lambda p: p.js_from_band), mean(lambda p: p.js_from_top),
                       opt(lambda p: p.rater.value if p.rater else None),
                       opt(lambda p: p.referee.value if p.referee else None),
                       opt(lambda p: p.exploit.value if p.exploit else None), group=group, seed=None)
        out_points.append(merged)
        out_draws[label] = {k: np.mean([draws[p.label][k] for p in ps], axis=0) for k in draws[ps[0].label]}
    return out_points, out_draws


# -- against the data ---------------------------------------------------------------------------------------
AXES = {"elo": "Elo against the reference (direct matches)",
        "cp_loss": "expected centipawn loss on the held-out positions"}  # strength axes for versus_data


def _strength(p: Point, axis: str) -> float:
    return p.elo.value if axis == "elo" else p.positions.cp_loss.value


def versus_data(points: Sequence[Point], draws: dict[str, dict[str, np.ndarray]], key: str, k: int,
                axis: str = "elo") -> list[dict[str, Any]]:
    """Each setting next to the data at its own strength: the rungs' curve (ordered by strength,
    interpolated linearly) read at the setting's strength, and the setting's value minus it (how much
    of the data's own variety at that strength it keeps). Strength is the `axis`: Elo against the
    reference, or the expected centipawn loss on the held-out positions (per position, so it does not
    saturate where a match score does). Interval: the bootstrap draws of the setting's strength and
    value and of every rung's, together; `defined` is the share of draws in which the setting's
    strength lies within the rungs' range."""
    rungs = [p for p in points if p.arm == DATA]
    if len(rungs) < 2:
        return []
    lo, hi = min(_strength(p, axis) for p in rungs), max(_strength(p, axis) for p in rungs)
    out = []
    n = len(draws[rungs[0].label][axis])
    for p in points:
        x = _strength(p, axis)
        if p.arm == DATA or not lo <= x <= hi:
            continue
        data_value = _curve([(_strength(r, axis), _measure_of(r, key, k)) for r in rungs], x)
        own = _measure_of(p, key, k)
        diffs = np.array([draws[p.label][key][j] - _curve([(draws[r.label][axis][j], draws[r.label][key][j])
                                                            for r in rungs], draws[p.label][axis][j])
                          for j in range(n)])
        est = Estimate.normal(own - data_value, diffs)
        out.append({"arm": p.arm, "setting": p.setting, "axis": axis, "at": x, "elo": p.elo.value, "value": own,
                    "data": data_value, "difference": est.value, "lo": est.lo, "hi": est.hi,
                    "kept": own / data_value if data_value else math.nan, "defined": float(np.isfinite(diffs).mean())})
    return out


# -- along the RL runs ---------------------------------------------------------------------------------------
def rl_curves(run: Path, dirs: dict[str, list[Path]]) -> dict[str, list[dict[str, Any]]]:
    """The over-optimisation curve of each RL configuration ({name: its seeds' run directories}): at
    every logged evaluation, across seeds, the KL from the base (nats per position, the update's
    batch), the rater's score (the proxy) and the adjudicated score against the frozen base (the
    truth) of the same games, their Elo and the opening variety; means with Student-t intervals
    across seeds."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, seed_dirs in dirs.items():
        logs = []
        for d in seed_dirs:
            path = d / "rl.jsonl"
            rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
            logs.append({r["step"]: r for r in rows if "eval" in r})
        steps = sorted(set.intersection(*(set(x) for x in logs))) if logs else []
        rows_out = []
        for step in steps:
            at = [log[step] for log in logs]

            def agg(get: Any) -> list[float]:
                m, lo, hi = seeds_interval([float(v) for v in (get(r) for r in at) if v is not None])
                return [m, lo, hi]

            ent = next((k for k in at[0]["eval"] if k.startswith("lines") and k.endswith("_entropy")), None)
            rows_out.append({"step": step, "seeds": len(at), "kl": agg(lambda r: r.get("kl", 0.0) if step else 0.0),
                             "proxy": agg(lambda r: r["eval"].get("rater_score")),
                             "true": agg(lambda r: r["eval"]["score"]), "elo": agg(lambda r: r["eval"]["elo"]),
                             "played_elo": agg(lambda r: r["eval"].get("played_elo")),
                             "train_reward": agg(lambda r: (r["score"] if step else None)),
                             "lines_entropy": agg(lambda r: r["eval"][ent] if ent else None),
                             "minutes": agg(lambda r: (r.get("time_s") or 0) / 60)})
        out[name] = rows_out
    return out
