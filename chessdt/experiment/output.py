"""The frontier experiment's tables (markdown) and plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from chessdt.experiment.compare import AXES, DATA, MEASURES


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _est(e: dict[str, float], digits: int = 2) -> str:
    return f"{_f(e['value'], digits)} [{_f(e['lo'], digits)}, {_f(e['hi'], digits)}]"


def _opt(e: dict[str, float] | None, digits: int = 2) -> str:
    return "-" if e is None else _est(e, digits)


def _tri(x: list[float], digits: int = 2) -> str:
    return f"{_f(x[0], digits)} [{_f(x[1], digits)}, {_f(x[2], digits)}]"


def _versus_data(result: dict[str, Any]) -> list[str]:
    by_axis = result.get("versus_data", {})
    if not any(rows for table in by_axis.values() for rows in table.values()):
        return []
    out = ["", "## Against the data at the same strength", "",
           "Each setting beside the data's own rungs at its strength (the rungs' curve, interpolated linearly; every "
           "rung's per-position distribution is its exact softmax policy); setting - data with a 95% bootstrap "
           "interval, kept = setting / data. Settings outside the rungs' range of strength are not listed.", ""]
    for axis, table in by_axis.items():
        for key, label in (("position_entropy", MEASURES["position_entropy"]), ("good_entropy", MEASURES["good_entropy"]),
                           ("line_entropy", f"{MEASURES['line_entropy']}, k={result['frontier_k']}")):
            if not table.get(key):
                continue
            out += [f"**{label}**, strength = {AXES[axis]}", "",
                    "| arm | setting | strength | Elo | setting | data | setting - data | 95% interval | kept |",
                    "|---|---|---:|---:|---:|---:|---:|---|---:|"]
            out += [f"| {r['arm']} | {r['setting']} | {r['at']:.0f} | {r['elo']:.0f} | {_f(r['value'])} | {_f(r['data'])} | "
                    f"{_f(r['difference'])} | {_f(r['lo'])} .. {_f(r['hi'])} | {_f(r['kept'])} |" for r in table[key]]
            out.append("")
    return out


def _rater_table(result: dict[str, Any]) -> list[str]:
    pts = [p for p in result.get("curve_points", []) if p.get("rater")]
    if not pts:
        return []
    out = ["", "## The rater against the truth", "",
           f"Every setting's match games against the reference, judged at the RL horizon ({result['horizon']} plies, or "
           "the game's end) by the learned rater (the base's value head) and by the referee (Stockfish's expected "
           "score of the same position); rater - referee is how far the rater overrates that setting's play. "
           "Sorted by the rater's score; 95% intervals (across seeds for RL).", "",
           "| arm | setting | rater's score | referee's score | rater - referee | Elo (adjudicated) |",
           "|---|---|---|---|---|---|"]
    for p in sorted(pts, key=lambda p: p["rater"]["value"]):
        out.append(f"| {p['arm']} | {p['setting']} | {_opt(p['rater'])} | {_opt(p.get('referee'))} | "
                   f"{_opt(p.get('exploit'))} | {_est(p['elo'], 0)} |")
    return out


def _overoptimisation(result: dict[str, Any]) -> list[str]:
    out = []
    for name, rows in result.get("rl_curves", {}).items():
        if not rows:
            continue
        out += ["", f"RL {name} along the way (means across {rows[0]['seeds']} seeds, 95% Student-t intervals): KL from the "
                "base (nats per position, that update's batch), the rater's score (the proxy) and the adjudicated score "
                "(the truth) of the same games against the frozen base, the policy's training reward, 8-ply line entropy.",
                "", "| update | KL | rater's score | true score | Elo vs base (adjudicated) | played-out Elo | "
                "training reward | line entropy | minutes |", "|---:|---|---|---|---|---|---|---|---:|"]
        for r in rows:
            out.append(f"| {r['step']} | {_tri(r['kl'], 3)} | {_tri(r['proxy'])} | {_tri(r['true'])} | {_tri(r['elo'], 0)} | "
                       f"{_tri(r['played_elo'], 0)} | {_tri(r['train_reward'])} | {_tri(r['lines_entropy'])} | "
                       f"{_f(r['minutes'][0], 1)} |")
    return out


def _blind_spots(result: dict[str, Any]) -> list[str]:
    spots = result.get("blind_spots", [])[:8]
    if not spots:
        return []
    out = ["", "## Where the rater is wrong", "", "The positions (at the horizon) of RL settings' match games that the "
           "rater overrates most: its expected score for the RL side against the referee's.", "",
           "| setting | game | ply | FEN | rater | referee (cp) | referee score | result |", "|---|---|---:|---|---:|---:|---:|---|"]
    out += [f"| {s['label']} | {s['game']} | {s['ply']} | `{s['fen']}` | {s['rater']:.2f} | {s['referee_cp']} | "
            f"{s['referee']:.2f} | {s['result']} |" for s in spots]
    return out


def format_frontier(result: dict[str, Any]) -> str:
    """The frontier tables in markdown."""
    k = result["frontier_k"]
    out = ["# Strength against variety, one curve per arm", "",
           f"Elo: each setting against the reference ({result['reference']}) over {result['match_games']} games "
           "(paired openings, both colours), 95% interval from the per-pair variance. Variety: "
           f"{result['variety_games']} self-play openings per setting; {result['positions']} held-out positions "
           f"(good moves: within {result['good_cp']:g} cp of Stockfish's best). Intervals: 95% bootstrap.", "",
           f"| arm | setting | Elo | games | lines k={k}: entropy (bits) | distinct | per-position entropy (bits) | "
           "good-move mass | entropy among good moves (bits) | exp. cp loss | KL from ref (bits) | "
           "JS from data: own rating / top | rater's score | rater - referee |",
           "|---|---|---|---:|---|---|---|---|---|---:|---:|---:|---|---|"]
    for p in result["points"]:
        line = next(v for v in p["lines"] if v["k"] == k)
        pv = p["positions"]
        out.append(f"| {p['arm']} | {p['setting']} | {_est(p['elo'], 0)} | {p['games']} | {_est(line['entropy'])} | "
                   f"{_est(line['distinct'], 0)} | {_est(pv['entropy'])} | {_est(pv['good_mass'])} | "
                   f"{_est(pv['good_entropy'])} | {_f(pv['cp_loss']['value'], 0)} | {_f(p['kl_from_reference'], 3)} | "
                   f"{_f(p['js_from_band'])} / {_f(p['js_from_top'])} | {_opt(p.get('rater'))} | {_opt(p.get('exploit'))} |")
    ks = [v["k"] for v in result["points"][0]["lines"]] if result["points"] else []
    out += ["", "Opening lines at every k (entropy bits / distinct lines, with 95% intervals):", "",
            "| arm | setting | " + " | ".join(f"k={x}" for x in ks) + " |", "|---|---|" + "---|" * len(ks)]
    for p in result["points"]:
        cells = [f"{_est(v['entropy'])} / {_est(v['distinct'], 0)}" for v in p["lines"]]
        out.append(f"| {p['arm']} | {p['setting']} | " + " | ".join(cells) + " |")
    seeds = [p for p in result.get("curve_points", []) if "seeds)" in p["setting"]]
    if seeds:
        out += ["", "RL across seeds (mean, 95% Student-t interval across seeds):", "",
                "| arm | setting | Elo | per-position entropy | entropy among good moves | "
                f"lines k={k}: entropy | rater's score | rater - referee |", "|---|---|---|---|---|---|---|---|"]
        for p in seeds:
            line = next(v for v in p["lines"] if v["k"] == k)
            out.append(f"| {p['arm']} | {p['setting']} | {_est(p['elo'], 0)} | {_est(p['positions']['entropy'])} | "
                       f"{_est(p['positions']['good_entropy'])} | {_est(line['entropy'])} | {_opt(p.get('rater'))} | "
                       f"{_opt(p.get('exploit'))} |")
    out += _versus_data(result)
    out += _rater_table(result)
    out += _overoptimisation(result)
    out += _blind_spots(result)
    out += ["", "## At matched strength", "",
            "Each pair of arms whose curves overlap in Elo (every curve starts at the reference), both interpolated at "
            "the middle of the overlap; B - A with a 95% interval from bootstrapping every point's Elo and variety "
            "(defined: share of bootstrap samples in which both curves reach that Elo).", ""]
    for m, rows in result["matched"].items():
        out += [f"**{MEASURES[m]}**", "", "| A | B | at Elo | A | B | B - A | 95% interval | defined |",
                "|---|---|---:|---:|---:|---:|---|---:|"]
        out += [f"| {r['a']} | {r['b']} | {r['elo']:.0f} | {_f(r['a_value'])} | {_f(r['b_value'])} | "
                f"{_f(r['difference'])} | {_f(r['lo'])} .. {_f(r['hi'])} | {r['defined']:.2f} |" for r in rows]
        out.append("")
    out += [f"Note: {n}" for n in result["notes"]]
    out.append(f"Run time: {result['seconds'] / 60:.1f} min")
    return "\n".join(out) + "\n"


ARM_STYLE = {"reference": ("black", "*"), DATA: ("dimgray", "X"), "conditioning": ("tab:blue", "o"),
             "guidance": ("tab:cyan", "D"), "temperature": ("tab:orange", "P"), "filtered": ("tab:green", "s"),
             "rl": ("tab:red", "^"), "rl-result": ("tab:red", "^"), "rl-engine": ("tab:red", "^"),
             "rl-rater": ("tab:pink", "<"), "quantilizer": ("tab:purple", "v")}


def plot_frontier(result: dict[str, Any], path: Path) -> Path:
    """One panel per variety measure: measured Elo (x, with 95% intervals) against it, a curve per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = result["frontier_k"]

    def value(p: dict[str, Any], key: str) -> dict[str, float]:
        if key == "line_entropy":
            return dict(next(v for v in p["lines"] if v["k"] == k)["entropy"])
        return dict(p["positions"][{"position_entropy": "entropy"}.get(key, key)])

    fig, axes = plt.subplots(1, len(MEASURES), figsize=(5.2 * len(MEASURES), 4.6), constrained_layout=True)
    points = result.get("curve_points") or result["points"]
    ref = [p for p in points if p["arm"] == "reference"]
    for ax, (key, label) in zip(axes, MEASURES.items()):
        for arm, (color, marker) in ARM_STYLE.items():
            pts = [p for p in points if p["arm"] == arm]
            if not pts:
                continue
            curve = sorted((ref if arm not in ("reference", "filtered", DATA) else []) + pts,
                           key=lambda p: p["elo"]["value"])
            x = np.array([p["elo"]["value"] for p in curve])
            v = [value(p, key) for p in curve]
            y = np.array([d["value"] for d in v])
            xerr = np.array([[p["elo"]["value"] - p["elo"]["lo"] for p in curve],
                             [p["elo"]["hi"] - p["elo"]["value"] for p in curve]])
            yerr = np.array([[d["value"] - d["lo"] for d in v], [d["hi"] - d["value"] for d in v]])
            ax.errorbar(x, y, xerr=np.maximum(np.nan_to_num(xerr), 0), yerr=np.maximum(np.nan_to_num(yerr), 0),
                        fmt=marker + ("--" if arm == DATA else "-"), color=color,
                        label=arm, capsize=2, alpha=0.85, lw=1)
        ax.set_xlabel(f"Elo against the reference ({result['reference']})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Strength-variety frontier: the data's rungs (dashed) and every arm")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_overoptimisation(result: dict[str, Any], path: Path) -> Path | None:
    """Score against the frozen base as the KL from the base grows: the rater's (proxy, dashed) and the
    referee-adjudicated (true, solid), one colour per RL configuration; bars: 95% across seeds."""
    curves = {k: v for k, v in result.get("rl_curves", {}).items() if v}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6), constrained_layout=True)
    colors = iter(["tab:red", "tab:pink", "tab:brown", "tab:olive", "tab:gray"])
    for name, rows in curves.items():
        color = next(colors, "black")
        x = np.array([r["kl"][0] for r in rows])
        for key, style, what in (("true", "o-", "true (adjudicated)"), ("proxy", "s--", "rater")):
            y = np.array([r[key][0] for r in rows], dtype=float)
            if not np.isfinite(y).any():
                continue
            err = np.array([[r[key][0] - r[key][1] for r in rows], [r[key][2] - r[key][0] for r in rows]], dtype=float)
            ax.errorbar(x, y, yerr=np.maximum(np.nan_to_num(err), 0), fmt=style, color=color, capsize=2,
                        label=f"{name}: {what}")
    ax.axhline(0.5, color="black", lw=0.6)
    ax.set_xlabel("KL(policy || base), nats per position")
    ax.set_ylabel("score against the frozen base")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Over-optimisation: the rater's score and the true score along RL")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
