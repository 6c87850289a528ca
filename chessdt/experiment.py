"""`chessdt experiment CONFIG`: does rating-conditioning keep the diversity that RL removes?

Arms, all from the same data and (where it applies) the same pretrained model:

1. conditioning: the rating-conditioned base model prompted at each of `experiment.ratings`, and
   at `guidance_rating` with classifier-free guidance weights `experiment.guidance`;
2. filtered imitation: the same architecture trained, unconditioned, only on games whose players
   are both rated >= `filtered_min_elo`;
3. RL fine-tuning: `chessdt finetune-rl` from the base model, one run per KL coefficient;
4. an explicit quantilizer: k draws from the base model, the top q by Stockfish, one at random.

Every arm setting is a Subject of the same strength evaluator (one maximum-likelihood Elo fit over
all games, so measured Elos share a scale) and the same openings evaluator; KL from the base model
is measured on held-out positions. The result is a frontier: strength against variety, one point
per arm setting, written to `frontier.json`, `frontier.md` and `frontier.png`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chess
import numpy as np
import torch

from chessdt.config import Config, run_path
from chessdt.errors import UserError
from chessdt.evals.heldout import HeldOutGame, teacher_forced_logits
from chessdt.play.policy import ModelPolicy, Prompted
from chessdt.tokenizer import unconditional

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FrontierPoint:
    """One arm setting: its measured strength and its variety."""

    arm: str  # conditioning, guidance, filtered, rl, quantilizer
    label: str  # subject label
    setting: str  # e.g. 'rating=2000', 'beta=0.02'
    elo: float
    lo: float
    hi: float
    games: int  # decided ladder games
    line_entropy: float | None  # bits, first-k-ply lines in self-play (k = experiment.frontier_plies)
    distinct_lines: int | None  # distinct first-k-ply lines in self-play
    lines_games: int | None  # self-play games behind those two numbers
    top_share: float | None  # share of the most common line
    policy_entropy: float | None  # mean bits over the first plies (model subjects)
    kl_from_base: float | None  # mean KL(arm || base unconditioned), bits, held-out positions


def _bits(x: float) -> float:
    return x / math.log(2)


@torch.no_grad()
def kl_from_base(arm: Prompted, base: Prompted, games: Sequence[HeldOutGame], positions: int,
                 plies: int = 12) -> float | None:
    """Mean KL(arm || base) in bits over legal moves, on held-out positions of the first plies.

    Each position is scored under the prompt its side to move plays with (:meth:`Prompted.prompt`,
    as in the arm's games), for the arm and the base alike. Both distributions are the softmax of
    the raw logits renormalized over legal moves; for a guided arm (sampling.guidance w) the arm's
    logits are cond + w * (cond - uncond).
    """
    short = [HeldOutGame(g.moves[:plies], g.white, g.black, g.result) for g in games if len(g.moves) >= 2]
    if not short:
        return None
    total, n = 0.0, 0
    per_game = max(1, min(plies, positions))
    short = short[: max(1, positions // per_game)]
    cache: dict[tuple[int, tuple[int, ...]], dict[int, torch.Tensor]] = {}

    def scored(policy: ModelPolicy, prompt: list[int]) -> dict[int, torch.Tensor]:
        key = (id(policy), tuple(prompt))
        if key not in cache:
            cache[key] = dict(teacher_forced_logits(policy, short, [prompt] * len(short)))
        return cache[key]

    def move_logits(model: Prompted, color: chess.Color, i: int) -> torch.Tensor:
        prompt, w = model.prompt(color), model.sampling.guidance
        cond = scored(model.policy, prompt)[i]
        if not w:
            return cond
        return cond + w * (cond - scored(model.policy, unconditional(model.policy.vocab, prompt))[i])

    for i, g in enumerate(short):
        board = chess.Board()
        a = {c: move_logits(arm, c, i) for c in (chess.WHITE, chess.BLACK)}
        r = {c: move_logits(base, c, i) for c in (chess.WHITE, chess.BLACK)}
        for j in range(min(len(a[chess.WHITE]), len(r[chess.WHITE]), len(g.moves))):
            legal = base.policy.vocab.legal_mask(board)
            lp = torch.log_softmax(a[board.turn][j, legal], -1)
            lq = torch.log_softmax(r[board.turn][j, legal], -1)
            total += float((lp.exp() * (lp - lq)).sum())
            n += 1
            board.push(g.moves[j])
    return _bits(total / n) if n else None


def _done(path: Path) -> bool:
    return path.is_file()


def _train_arm(cfg: Config, run_dir: Path, device: str | None, progress: bool) -> Path:
    """Prepare + train a model for an arm (resumable; skipped when complete)."""
    from chessdt.pipeline import run_pipeline

    arm_cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    run_pipeline(arm_cfg, device=device, progress=progress, only=("prepare", "train"))
    return run_dir


def run_experiment(cfg: Config, *, device: str | None = None, progress: bool = True) -> Path:
    """Train or load every arm, evaluate them together, write the frontier; returns the run dir."""
    from chessdt.stockfish.engine import Engine, find_stockfish
    from chessdt.evals.subject import Subject, sampling_of, use_threads
    from chessdt.evals.heldout import held_out_games
    from chessdt.evals.openings import OpeningsResult, evaluate_openings
    from chessdt.evals.strength import StrengthResult, evaluate_strength
    from chessdt.play.players import ModelPlayer, QuantilizerPlayer
    from chessdt.rl import finetune_rl

    ex, ev = cfg.experiment, cfg.eval
    run = run_path(cfg)
    run.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    dev = device or "cpu"
    t0 = time.perf_counter()

    # -- arms that need training ---------------------------------------------------------------
    base_path = Path(ex.base) if ex.base else _train_arm(cfg, run / "base", device, progress)
    base = ModelPolicy.from_checkpoint(base_path, dev)
    if not base.cfg.data.label_parts:
        raise UserError(f"{base_path}: the base model has no condition prefix (label=none); "
                        "the experiment needs a rating-conditioned model")
    filtered = None
    if ex.filtered_min_elo > 0:
        if not cfg.data.inputs:
            notes.append("filtered arm skipped: data.inputs is empty (it re-prepares the games with a filter)")
        else:
            train_cfg = cfg.train if ex.filtered_minutes <= 0 else dataclasses.replace(
                cfg.train, max_minutes=ex.filtered_minutes)
            fcfg = dataclasses.replace(
                cfg, name=f"{cfg.name}-filtered", train=train_cfg,
                data=dataclasses.replace(cfg.data, prepared="", label="none",
                                         min_elo=max(cfg.data.min_elo, ex.filtered_min_elo)))
            filtered = ModelPolicy.from_checkpoint(_train_arm(fcfg, run / "filtered", device, progress), dev)
    rl_policies: list[tuple[float, ModelPolicy]] = []
    for beta in ex.rl_betas:
        out = run / f"rl-beta{beta:g}"
        if not _done(out / "rl.done"):
            rcfg = dataclasses.replace(cfg, name=f"{cfg.name}-rl-beta{beta:g}", rl=dataclasses.replace(
                cfg.rl, base=str(base_path), beta=beta, rating=ex.base_rating))
            finetune_rl(rcfg, out, device=dev, progress=progress)
            (out / "rl.done").write_text("done\n")
        rl_policies.append((beta, ModelPolicy.from_checkpoint(out, dev)))

    # -- subjects ------------------------------------------------------------------------------------
    sampling = sampling_of(ev)
    base_rating = ex.base_rating or None
    subjects: list[Subject] = []
    kinds: dict[str, tuple[str, str, Prompted | None]] = {}  # label -> arm, setting, the model as it plays

    def add_model(arm: str, setting: str, policy: ModelPolicy, rating: int | None, w: float, label: str) -> None:
        subject = Subject.model(policy, rating, dataclasses.replace(sampling, guidance=w), label=label)
        subjects.append(subject)
        kinds[label] = (arm, setting, subject.prompted)

    for r in ex.ratings:
        add_model("conditioning", f"rating={r}", base, r, 0.0, f"cond@{r}")
    for w in ex.guidance:
        add_model("guidance", f"rating={ex.guidance_rating}, w={w:g}", base, ex.guidance_rating, w,
                  f"cond@{ex.guidance_rating} w={w:g}")
    if filtered is not None:
        add_model("filtered", f"min_elo={ex.filtered_min_elo}", filtered, None, 0.0, f"filtered>={ex.filtered_min_elo}")
    for beta, pol in rl_policies:
        add_model("rl", f"beta={beta:g}", pol, base_rating, 0.0, f"rl beta={beta:g}")
    engine_path = find_stockfish(ev.engine or None) if ex.quantilizer_q else None

    def quantilizer(q: float) -> Callable[[int], QuantilizerPlayer]:
        def make(seed: int) -> QuantilizerPlayer:
            assert engine_path is not None
            return QuantilizerPlayer(ModelPlayer(Prompted(base, base_rating, None, sampling), seed=seed),
                                     Engine(engine_path), k=ex.quantilizer_k, q=q, nodes=ex.quantilizer_nodes,
                                     seed=seed)
        return make

    for q in ex.quantilizer_q:
        make = quantilizer(q)

        label = f"quantilizer q={q:g}"
        subjects.append(Subject.player(label, make, rating=None, pooled=True))
        kinds[label] = ("quantilizer", f"k={ex.quantilizer_k}, q={q:g}", None)

    # -- evaluation ------------------------------------------------------------------------------------
    use_threads(ev)
    games = held_out_games(base.cfg, base_path, max(ev.openings_human_games, ex.kl_positions), ev.games)
    if games is None:
        raise UserError("no held-out games: set eval.games (a prepared data dir or a PGN file)")
    out = run / "eval"
    out.mkdir(exist_ok=True)
    strength = (StrengthResult.load(out / "strength.json") if _done(out / "strength.json") else
                evaluate_strength(subjects, games, ev, out, parts=("ladder",), progress=progress))
    openings = (OpeningsResult.load(out / "openings.json") if _done(out / "openings.json") else
                evaluate_openings(subjects, games[: ev.openings_human_games], ev, out))
    base_at = Prompted(base, base_rating)
    points = []
    assert strength.ladder is not None
    by_label = {row.label: row for row in strength.ladder.subjects}
    for label, (arm, setting, model) in kinds.items():
        row = by_label[label]
        self_play = [o for o in openings.rows if o.label == label and o.source == "self-play"]
        lines = next((ls for ls in self_play[0].lines if ls.k == ex.frontier_plies), None) if self_play else None
        kl = kl_from_base(model, base_at, games, ex.kl_positions) if model is not None else None
        points.append(FrontierPoint(
            arm=arm, label=label, setting=setting, elo=row.elo, lo=row.lo, hi=row.hi, games=row.games,
            line_entropy=lines.entropy if lines else None, distinct_lines=lines.distinct if lines else None,
            lines_games=lines.games if lines else None, top_share=lines.top_share if lines else None,
            policy_entropy=self_play[0].policy_entropy if self_play else None, kl_from_base=kl))
    data_rows = {o.rating: o for o in openings.rows if o.source == "data"}  # one per band
    data_points = [(r, next((ls for ls in o.lines if ls.k == ex.frontier_plies), None))
                   for r, o in sorted(data_rows.items())]
    result = {"points": [dataclasses.asdict(p) for p in points],
              "data": [{"rating": r, "line_entropy": ls.entropy if ls else None,
                        "distinct_lines": ls.distinct if ls else None, "games": ls.games if ls else None}
                       for r, ls in data_points],
              "opponents": [dataclasses.asdict(o) for o in strength.ladder.opponents],
              "ladder_games": strength.ladder.games, "frontier_k": ex.frontier_plies, "notes": notes,
              "seconds": round(time.perf_counter() - t0, 1)}
    (run / "frontier.json").write_text(json.dumps(result, indent=1))
    (run / "frontier.md").write_text(format_frontier(result))
    plot_frontier(result, run / "frontier.png")
    return run


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_frontier(result: dict[str, Any]) -> str:
    """The frontier table in markdown."""
    k = result["frontier_k"]
    out = ["# Strength vs variety: one point per arm setting", "",
           f"Measured Elo from one fit over {result['ladder_games']} ladder games (95% intervals); variety "
           f"from self-play: entropy and distinct count of first-{k}-ply lines; policy entropy over the "
           "first plies; KL(arm || base model without a rating) on held-out positions.", "",
           "| arm | setting | measured Elo | 95% interval | games | line entropy (bits) | distinct lines | "
           "top line share | policy entropy (bits) | KL from base (bits) |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for p in result["points"]:
        distinct = "-" if p["distinct_lines"] is None else f"{p['distinct_lines']}/{p['lines_games']}"
        out.append(f"| {p['arm']} | {p['setting']} | {_f(p['elo'], 0)} | {_f(p['lo'], 0)} .. {_f(p['hi'], 0)} | "
                   f"{p['games']} | {_f(p['line_entropy'])} | {distinct} | {_f(p['top_share'])} | "
                   f"{_f(p['policy_entropy'])} | {_f(p['kl_from_base'], 3)} |")
    if result["data"]:
        out += ["", f"Human (data) games by rating band, first-{k}-ply lines:", "",
                "| band centre | line entropy (bits) | distinct lines |", "|---:|---:|---:|"]
        for d in result["data"]:
            distinct = "-" if d["distinct_lines"] is None else f"{d['distinct_lines']}/{d['games']}"
            out.append(f"| {d['rating']} | {_f(d['line_entropy'])} | {distinct} |")
    out += ["", "Opponents: " + ", ".join(f"{o['label']} {_f(o['elo'], 0)}" for o in result["opponents"])]
    out += [f"Note: {n}" for n in result["notes"]]
    return "\n".join(out) + "\n"


ARM_STYLE = {"conditioning": ("tab:blue", "o"), "guidance": ("tab:cyan", "D"), "filtered": ("tab:green", "s"),
             "rl": ("tab:red", "^"), "quantilizer": ("tab:purple", "v")}


def plot_frontier(result: dict[str, Any], path: Path) -> Path:
    """Three panels: measured Elo (x, with 95% intervals) against line entropy, policy entropy, KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("line_entropy", f"entropy of first-{result['frontier_k']}-ply lines (bits)"),
              ("policy_entropy", "mean policy entropy, first plies (bits)"),
              ("kl_from_base", "KL from base model (bits per move)")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), constrained_layout=True)
    for ax, (key, ylabel) in zip(axes, panels):
        for arm, (color, marker) in ARM_STYLE.items():
            pts = [p for p in result["points"] if p["arm"] == arm and p[key] is not None]
            if not pts:
                continue
            x = np.array([p["elo"] for p in pts])
            err = np.array([[p["elo"] - p["lo"] for p in pts], [p["hi"] - p["elo"] for p in pts]])
            y = np.array([p[key] for p in pts])
            ax.errorbar(x, y, xerr=err, fmt=marker, color=color, label=arm, capsize=3, alpha=0.85)
            for p in pts:
                ax.annotate(p["setting"].split(", ")[-1], (p["elo"], p[key]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        if key == "line_entropy":
            for d in result["data"]:
                if d["line_entropy"] is not None:
                    ax.axhline(d["line_entropy"], color="gray", lw=0.6, ls=":")
        ax.set_xlabel("measured Elo (Stockfish ladder scale)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("opening variety vs strength (dotted: human bands)")
    axes[1].set_title("policy entropy vs strength")
    axes[2].set_title("distance from the base model vs strength")
    fig.suptitle("Strength-diversity frontier: conditioning vs filtered imitation vs RL vs quantilizer")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
