"""`chessdt report RUN_DIR`: the evaluation results of a run as report.md with PNG plots.

Reads ``RUN_DIR/eval/{legality,strength,openings}.json`` (whichever exist) and the training log
``RUN_DIR/metrics.jsonl`` if present; writes ``RUN_DIR/report.md`` and ``RUN_DIR/report/*.png``:

* ``elo.png``: measured vs prompted Elo with 95% intervals, the y = x line and the anchor rungs;
* ``matching.png``: the move-matching heat map (prompted rating x actual rating band);
* ``openings.png``: entropy of first-k-ply lines vs rating, model and human games;
* ``legality.png``: legality of raw predictions by ply bucket;
* ``training.png``: validation loss, top-1 accuracy and legal top-1 share vs tokens seen;
* ``value.png``: the value head's reliability (forecast vs actual expected score), when measured.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from chessdt.errors import UserError  # noqa: E402
from chessdt.evals.results import RESULT_FILES, JsonResult, fmt  # noqa: E402
from chessdt.evals.curve import THRESHOLDS, LegalityCurve, crossings, run_inputs  # noqa: E402
from chessdt.evals.legality import LegalityResult, input_line  # noqa: E402
from chessdt.evals.openings import OpeningsResult  # noqa: E402
from chessdt.evals.strength import LadderResult, MatchingResult, StrengthResult  # noqa: E402
from chessdt.evals.fidelity import FidelityResult  # noqa: E402
from chessdt.evals.prompt import PromptResult  # noqa: E402
from chessdt.evals.value import ValueResult  # noqa: E402
from chessdt.train import read_metrics  # noqa: E402

DPI = 120
log = logging.getLogger(__name__)
R = TypeVar("R", bound=JsonResult)


@dataclass(frozen=True)
class Report:
    path: Path  # report.md
    plots: tuple[Path, ...]
    sections: tuple[str, ...]  # evaluations found


def _save(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _finite(*xs: float | None) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def plot_elo(ladder: LadderResult, path: Path) -> Path | None:
    """Measured vs prompted Elo with 95% intervals, y = x, and the anchored rungs."""
    rows = [r for r in ladder.subjects if r.prompted is not None and _finite(r.elo)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    xs = [float(r.prompted) for r in rows if r.prompted is not None]  # all of them (filtered above)
    ys = [r.elo for r in rows]
    lo = [r.elo - r.lo if _finite(r.lo) else 0.0 for r in rows]
    hi = [r.hi - r.elo if _finite(r.hi) else 0.0 for r in rows]
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=4, color="tab:blue", label="model (95% interval)")
    span = [min(xs + ys) - 100, max(xs + ys) + 100]
    ax.plot(span, span, "--", color="grey", label="y = x (perfectly calibrated)")
    for o in ladder.opponents:
        if _finite(o.elo):
            ax.axhline(o.elo, color="tab:red" if o.anchored else "tab:orange", lw=0.8, alpha=0.6, ls=":")
            ax.annotate(o.label + (" (anchor)" if o.anchored else ""), (span[0] if o.anchored else span[1], o.elo),
                        fontsize=7, va="bottom", ha="left" if o.anchored else "right",
                        color="tab:red" if o.anchored else "tab:orange")
    ax.set_title(f"Measured vs prompted Elo (Spearman {ladder.spearman:.2f}, slope {ladder.slope:.2f})"
                 if _finite(ladder.spearman, ladder.slope) else "Measured vs prompted Elo")
    ax.set_xlabel("prompted rating (Elo)")
    ax.set_ylabel("measured Elo (Stockfish-ladder scale)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_matching(m: MatchingResult, path: Path) -> Path | None:
    """Heat map of top-1 move-matching accuracy, n in each cell."""
    if not m.prompted:
        return None
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(m.bands), 1.4 + 0.8 * len(m.prompted)))
    data = [[100.0 * a if _finite(a) else float("nan") for a in row] for row in m.accuracy]
    im = ax.imshow(data, cmap="viridis", aspect="auto", origin="lower")
    finite = [a for row in data for a in row if not math.isnan(a)]
    middle = (max(finite) + min(finite)) / 2 if finite else 0.0  # dark cells get white text
    for ri, row in enumerate(data):
        for ci, a in enumerate(row):
            text = "-" if math.isnan(a) else f"{a:.1f}%\nn={m.n[ri][ci]}"
            ax.text(ci, ri, text, ha="center", va="center", fontsize=7,
                    color="white" if math.isnan(a) or a <= middle else "black")
    ax.set_xticks(range(len(m.bands)), m.bands, rotation=30, ha="right")
    ax.set_yticks(range(len(m.prompted)), [str(r) for r in m.prompted])
    ax.set_xlabel("actual rating band of the player to move (Elo)")
    ax.set_ylabel("prompted rating (Elo)")
    ax.set_title(f"Human move matching, top-1 (diagonal peaks in {m.diagonal_peaks} of {m.bands_with_data} bands)")
    fig.colorbar(im, ax=ax, label="top-1 accuracy (%)")
    return _save(fig, path)


def plot_openings(o: OpeningsResult, path: Path) -> Path | None:
    """Entropy of first-k-ply lines vs rating, one panel per k; model self-play, vs opponent, held-out games."""
    if not o.rows:
        return None
    ks = o.line_plies
    cols = min(2, len(ks))
    rows_n = math.ceil(len(ks) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.6 * rows_n), squeeze=False)
    sources = sorted({r.source for r in o.rows}, key=lambda s: (s == "data", s))
    styles = {"self-play": ("o-", "tab:blue"), "data": ("s--", "black")}
    for ki, k in enumerate(ks):
        ax = axes[ki // cols][ki % cols]
        for source in sources:
            pts = [(r.rating, r.lines[ki].entropy, r.lines[ki].games) for r in o.rows
                   if r.source == source and r.rating is not None and _finite(r.lines[ki].entropy)]
            if not pts:
                continue
            style, color = styles.get(source, ("^:", "tab:green"))
            label = "held-out games" if source == "data" else f"model, {source}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label)
        n = max((r.games for r in o.rows), default=0)
        ax.axhline(math.log2(n) if n else 0, color="grey", lw=0.8, ls=":", label=f"max for {n} games")
        ax.set_title(f"First {k} plies")
        ax.set_xlabel("prompted rating / human band (Elo)")
        ax.set_ylabel("line entropy (bits)")
        ax.grid(alpha=0.3)
        if ki == 0:
            ax.legend(fontsize=7)
    for ki in range(len(ks), rows_n * cols):
        axes[ki // cols][ki % cols].axis("off")
    fig.suptitle("Opening variety: entropy of the first-k-ply lines")
    return _save(fig, path)


def plot_legality(leg: LegalityResult, path: Path) -> Path | None:
    """Top-1 legal, sampled legal and illegal mass by ply bucket (raw model)."""
    cells = leg.by_ply
    if not cells:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = range(len(cells))
    for attr, label, style in (("top1_legal", "top-1 move legal", "o-"), ("sampled_legal", "sampled move legal", "s-"),
                               ("illegal_mass", "probability on illegal moves", "^--")):
        ax.plot(xs, [100.0 * getattr(c, attr) for c in cells], style, label=label)
    ax.set_xticks(list(xs), [c.group for c in cells])
    ax.set_ylim(-2, 102)
    ax.set_xlabel("ply bucket (half-moves played before the position)")
    ax.set_ylabel("share of positions / probability (%)")
    ax.set_title(f"Legality of raw predictions on held-out games (n = {leg.overall.positions:,})\n"
                 f"inputs: {leg.inputs.split(' (')[0] or 'not recorded'}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_legality_curve(curve: LegalityCurve, path: Path) -> Path | None:
    """Legal top-1 share against tokens seen, one line per run (labelled with its input family)."""
    runs = [r for r in curve.runs if len(r.tokens) > 1]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in runs:
        pts = [(t / 1e6, 100.0 * v) for t, v in zip(r.tokens, r.legal) if t > 0]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=f"{r.name}: {r.inputs.split(' (')[0]}")
    for t in curve.thresholds:
        ax.axhline(100.0 * t, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(max(0.0, min(100.0 * min(v for r in runs for v in r.legal[1:]) - 2, 90.0)), 100.5)
    ax.set_xlabel("tokens seen (millions, log scale)")
    ax.set_ylabel("top-1 legal on held-out positions (%)")
    ax.set_title("Legality learning curve (raw model)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_value(v: ValueResult, path: Path) -> Path | None:
    """Reliability diagram: mean actual score against mean forecast per bin, point size by positions."""
    bins = [b for b in v.reliability if b.positions and _finite(b.forecast, b.actual)]
    if not bins:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    biggest = max(b.positions for b in bins)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.plot([b.forecast for b in bins], [b.actual for b in bins], "-", color="tab:blue", lw=1)
    ax.scatter([b.forecast for b in bins], [b.actual for b in bins], s=[20 + 200 * b.positions / biggest for b in bins],
               color="tab:blue", label="value head (size: positions)", zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("forecast expected score of the side to move (W + D/2)")
    ax.set_ylabel("actual score (win 1, draw 0.5, loss 0)")
    ax.set_title(f"Value head reliability ({v.positions:,} positions, {v.games:,} games)\n"
                 f"Brier {v.model.brier:.3f} vs base rates {v.baselines[0].brier:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_training(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Validation loss, top-1 accuracy and legal top-1 share against tokens seen."""
    rows = [r for r in rows if r["tokens"] > 0]
    if len(rows) < 2:
        return None
    x = [r["tokens"] / 1e6 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, label, scale in ((axes[0], "val_loss", "validation loss (nats/token)", 1.0),
                                  (axes[1], "top1", "top-1 move accuracy (%)", 100.0),
                                  (axes[2], "legal", "legal top-1 moves (%)", 100.0)):
        ys = [r.get(key) for r in rows]
        pts = [(a, b * scale) for a, b in zip(x, ys) if b is not None and _finite(b)]
        ax.plot([a for a, _ in pts], [b for _, b in pts], "o-", ms=3)
        ax.set_xlabel("tokens seen (millions)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def training_table(rows: list[dict[str, Any]], max_rows: int = 12) -> str:
    """A markdown table of the curve (evenly thinned to max_rows, always keeping the last)."""
    if not rows:
        return ""
    n = min(max_rows, len(rows))
    keep = sorted({round(i * (len(rows) - 1) / max(1, n - 1)) for i in range(n)})
    out = ["| step | tokens | minutes | val loss | top-1 | legal top-1 |", "|---:|---:|---:|---:|---:|---:|"]
    for r in (rows[i] for i in keep):
        minutes = r.get("time_s", float("nan")) / 60
        out.append(f"| {r.get('step', '')} | {r['tokens']:,} | {minutes:.1f} | {r['val_loss']:.3f} | "
                   f"{100 * r.get('top1', float('nan')):.1f}% | {100 * r.get('legal', float('nan')):.1f}% |")
    return "\n".join(out)


def read_result(cls: type[R], path: Path) -> R | None:
    """A result file, or None, said in one logged line, when it is torn or not such a result."""
    try:
        return cls.load(path)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as e:  # JSON errors are ValueErrors
        log.warning("%s is torn or not a %s (%s); its section is left out of the report", path, cls.__name__,
                    " ".join(str(e).split())[:200] or type(e).__name__)
        return None


def write_report(run_dir: Path, eval_dir: Path | None = None) -> Report:
    """Write RUN_DIR/report.md and RUN_DIR/report/*.png from the evaluation results found."""
    run_dir = Path(run_dir)
    eval_dir = Path(eval_dir) if eval_dir is not None else run_dir / "eval"
    found = {k: eval_dir / f for k, f in RESULT_FILES.items() if (eval_dir / f).is_file()}
    curve = read_metrics(run_dir)
    if not found and not curve:
        raise UserError(f"no evaluation results in {eval_dir} and no metrics.jsonl in {run_dir} "
                        "(train, or run `chessdt eval legality|strength|openings` first)")
    plot_dir = run_dir / "report"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    md = [f"# Evaluation report: {run_dir.name}", "",
          "Legality is measured on the raw model (never masked). Strength is on a Stockfish ladder whose "
          "UCI_Elo rungs are fixed at their nominal ratings; intervals are 95%.", ""]

    def image(p: Path | None, alt: str) -> None:
        if p is not None:
            plots.append(p)
            md.extend([f"![{alt}]({p.relative_to(run_dir).as_posix()})", ""])

    def missing(kind: str, heading: str) -> None:
        """The section of an evaluation not run, or whose file could not be read."""
        why = (f"Left out: `{found[kind].name}` is torn or not a result file (rerun `chessdt eval {kind}`)."
               if kind in found else f"Not run: `chessdt eval {kind} CKPT`.")
        md.extend([heading, "", why, ""])

    leg = read_result(LegalityResult, found["legality"]) if "legality" in found else None
    st = read_result(StrengthResult, found["strength"]) if "strength" in found else None
    op = read_result(OpeningsResult, found["openings"]) if "openings" in found else None
    fi = read_result(FidelityResult, found["fidelity"]) if "fidelity" in found else None
    va = read_result(ValueResult, found["value"]) if "value" in found else None
    pr = read_result(PromptResult, found["prompt"]) if "prompt" in found else None
    read = {k for k, r in (("legality", leg), ("strength", st), ("openings", op), ("fidelity", fi), ("value", va),
                           ("prompt", pr)) if r is not None}
    if curve:
        legal = [r for r in curve if isinstance(r.get("legal"), (int, float))]
        reached = ", ".join(f"{fmt(c.threshold, 0, True)} at {c.tokens / 1e6:.2f}M tokens" if c.tokens is not None
                            else f"{fmt(c.threshold, 0, True)} not reached"
                            for c in crossings([r["tokens"] for r in legal], [r["legal"] for r in legal], THRESHOLDS))
        md += ["## Training", "", input_line(run_inputs(run_dir)), "",
               "Held-out evaluations from `metrics.jsonl`" + (f" (legal top-1 first reached {reached})" if legal else "")
               + ":", "", training_table(curve), ""]
        image(plot_training(curve, plot_dir / "training.png", f"{run_dir.name}: held-out split"), "training curve")

    if leg is not None:
        md += ["## Move legality", "", leg.format(), ""]  # format() opens with the model's inputs
        image(plot_legality(leg, plot_dir / "legality.png"), "legality by ply")
    else:
        missing("legality", "## Move legality")
    if st is not None:
        md += ["## Strength by prompted rating", "", st.format(), ""]
        if st.ladder is not None:
            image(plot_elo(st.ladder, plot_dir / "elo.png"), "measured vs prompted Elo")
        if st.matching is not None:
            image(plot_matching(st.matching, plot_dir / "matching.png"), "move matching heat map")
    else:
        missing("strength", "## Strength by prompted rating")
    if op is not None:
        md += ["## Opening variety", "", op.format(), ""]
        image(plot_openings(op, plot_dir / "openings.png"), "opening entropy vs rating")
    else:
        missing("openings", "## Opening variety")
    fidelity = "## Fidelity to the data's policy at each prompted rung"
    if fi is not None:
        md += [fidelity, "",
               "The model prompted with a rung's rating against that rung's exact move distribution "
               "(the data is a softmax ladder, so the policy behind every move is known).", "", fi.format(), ""]
    elif "fidelity" in found:
        missing("fidelity", fidelity)
    if va is not None:
        md += ["## Value head calibration", "", va.format(), ""]
        image(plot_value(va, plot_dir / "value.png"), "value head reliability")
    elif "value" in found:
        missing("value", "## Value head calibration")
    prompt = "## The prompt where history cannot help"
    if pr is not None:
        md += [prompt, "", pr.format(), ""]
    elif "prompt" in found:
        missing("prompt", prompt)
    path = run_dir / "report.md"
    path.write_text("\n".join(md).rstrip() + "\n")
    return Report(path=path, plots=tuple(plots), sections=tuple(k for k in found if k in read))
