"""`chessdt experiment CONFIG`: strength against variety at matched strength, one curve per arm.

Does conditioning on a high rating buy strength without the loss of variety that RL fine-tuning
(and plain sharpening) causes? Arms, all from one pretrained rating-conditioned base model:

1. conditioning: the base prompted at each rating of `experiment.ratings` (and the reference's);
2. guidance: at `guidance_rating` with classifier-free guidance weights `experiment.guidance`;
3. temperature: the reference prompt sampled at `experiment.temperatures` (sharpening);
4. RL: `chessdt finetune-rl` from the reference, one run per KL weight, checkpoints along each run;
5. filtered imitation: the same architecture trained, unconditioned, on the strongest games only;
6. quantilizer / best-of-k: k draws from the reference, the top q by Stockfish, one at random.

**Strength**: every setting plays `match_games` games against the reference (the base at
`experiment.reference`), paired openings with both colours; its Elo is the difference from the
reference with a 95% interval from the per-pair variance, so all settings share one scale and the
reference sits at 0. **Variety**: `variety_games` self-play openings per setting (entropy and
distinct lines at k = 2, 4, 8 plies), per-position diversity and diversity among good moves on
`positions` held-out positions, KL from the reference, and the Jensen-Shannon distance of the
opening lines from the data's games at the top rating — each with a bootstrap interval.

**Matched strength**: each arm's points, ordered by Elo, form a curve that starts at the reference.
Where two arms' curves overlap in Elo, each is interpolated linearly at the middle of the overlap
and the variety difference is reported with an interval from bootstrapping every point's Elo and
variety together. Output: `frontier.json`, `frontier.md`, `frontier.png`; games stream to
`eval/*.jsonl`, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chess
import numpy as np
from chessdt.config import Config, run_path
from chessdt.errors import UserError
from chessdt.evals.heldout import HeldOutGame, band_of
from chessdt.evals.variety import (Estimate, LineVariety, PositionVariety, ScoredPosition, line_variety,
                                   model_distribution, position_values, position_variety, quantilizer_distribution,
                                   sample_positions, score_position)
from chessdt.metrics import elo_difference, js_divergence, paired_score
from chessdt.play.arena import GameSpec, PlayerSeat, Seat, run_games
from chessdt.play.policy import ModelPolicy, Prompted, Sampling
from chessdt.rules import opening_lines

log = logging.getLogger(__name__)

REFERENCE = "reference"
MEASURES = {  # frontier axis -> what it is
    "line_entropy": "entropy of self-play opening lines (bits)",
    "position_entropy": "per-position move entropy (bits)",
    "good_entropy": "entropy among good moves (bits)",
    "good_mass": "probability of a good move",
}


# -- arms ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmSetting:
    """One point of one arm: how it plays, and how its per-position distribution is computed."""

    arm: str  # conditioning, guidance, temperature, rl, filtered, quantilizer
    label: str  # unique, used as the seat label in game logs
    setting: str  # e.g. 'rating=2000', 'T=0.3', 'beta=0.02 step=100', 'k=8 q=0.25'
    seat: Seat
    model: Prompted | None  # the prompted model (None: the quantilizer)
    q: float = 1.0  # quantilizer: kept fraction


@dataclass(frozen=True)
class Point:
    """One arm setting, measured."""

    arm: str
    label: str
    setting: str
    elo: Estimate  # against the reference
    games: int
    score: float
    lines: tuple[LineVariety, ...]  # per k in variety_plies
    positions: PositionVariety
    kl_from_reference: float | None  # mean KL(setting || reference) in bits over the held-out positions
    js_from_band: float | None  # JS divergence (bits) of first-k lines from the data's games at the prompted rating
    js_from_top: float | None  # the same from the data's games at the top rating


def kl_bits(p: dict[chess.Move, float], q: dict[chess.Move, float], floor: float = 1e-12) -> float:
    """KL(p || q) in bits between two move distributions ({move: probability}); rounding below 0 is 0."""
    return max(0.0, sum(v * math.log2(v / max(q.get(m, 0.0), floor)) for m, v in p.items() if v > 0))


def _train_arm(cfg: Config, run_dir: Path, device: str | None, progress: bool) -> Path:
    """Prepare + train a model for an arm (resumable; skipped when complete)."""
    from chessdt.pipeline import run_pipeline

    arm_cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    run_pipeline(arm_cfg, device=device, progress=progress, only=("prepare", "train"))
    return run_dir


def filtered_config(cfg: Config) -> Config:
    """The filtered-imitation arm's config: the base's data with a rating floor on both players,
    unconditioned (label none), the same model and training (or experiment.filtered_minutes)."""
    ex = cfg.experiment
    train = cfg.train if ex.filtered_minutes <= 0 else dataclasses.replace(
        cfg.train, max_minutes=ex.filtered_minutes, schedule_by_time=True)
    return dataclasses.replace(cfg, name=f"{cfg.name}-filtered", train=train,
                               data=dataclasses.replace(cfg.data, prepared="", label="none",
                                                        min_elo=max(cfg.data.min_elo, ex.filtered_min_elo)))


def _parse_reference(spec: str) -> tuple[int | None, Sampling]:
    from chessdt.evals.match import Setting

    s = Setting.parse(spec, Sampling(mask_illegal=True))
    return s.rating, dataclasses.replace(s.sampling, mask_illegal=True)


def _rl_checkpoints(out: Path, steps: Sequence[int]) -> list[tuple[int, Path]]:
    from chessdt.checkpoint import STEP_PREFIX, step_checkpoints

    found = {int(p.name[len(STEP_PREFIX):]): p for p in step_checkpoints(out / "checkpoints")}
    if not found:
        raise UserError(f"{out}: the RL run left no checkpoints")
    wanted = list(steps) or [max(found)]
    missing = [s for s in wanted if s not in found]
    if missing:
        raise UserError(f"experiment.rl_steps {missing}: not saved by the RL run in {out} (saved: {sorted(found)}; "
                        "use multiples of rl.save_every)")
    return [(s, found[s]) for s in wanted]


def build_arms(cfg: Config, base: ModelPolicy, base_path: Path, run: Path, device: str | None,
               progress: bool) -> tuple[Prompted, list[ArmSetting], list[str]]:
    """Train what needs training (resumable) and return the reference and every arm setting."""
    from chessdt.rl import finetune_rl

    ex = cfg.experiment
    dev = device or "cpu"
    notes: list[str] = []
    rating, sampling = _parse_reference(ex.reference)
    reference = Prompted(base, rating, None, sampling)
    arms: list[ArmSetting] = []

    def model_arm(arm: str, label: str, setting: str, model: Prompted) -> None:
        arms.append(ArmSetting(arm, label, setting, model, model))

    for r in ex.ratings:
        model_arm("conditioning", f"cond r{r}", f"rating={r}", dataclasses.replace(reference, rating=r))
    for w in ex.guidance:
        guided = Prompted(base, ex.guidance_rating, None, dataclasses.replace(sampling, guidance=w))
        model_arm("guidance", f"guided r{ex.guidance_rating} w{w:g}", f"rating={ex.guidance_rating} w={w:g}", guided)
    for t in ex.temperatures:
        model_arm("temperature", f"T{t:g}", f"T={t:g}",
                  dataclasses.replace(reference, sampling=dataclasses.replace(sampling, temperature=t)))
    for beta in ex.rl_betas:
        out = run / f"rl-beta{beta:g}"
        if not (out / "rl.done").is_file():
            rcfg = dataclasses.replace(cfg, name=f"{cfg.name}-rl-beta{beta:g}", rl=dataclasses.replace(
                cfg.rl, base=str(base_path), beta=beta, rating=rating or 0, temperature=sampling.temperature))
            finetune_rl(rcfg, out, device=dev, progress=progress)
            (out / "rl.done").write_text("done\n")
        for step, path in _rl_checkpoints(out, ex.rl_steps):
            tuned = ModelPolicy.from_checkpoint(path, dev)
            model_arm("rl", f"rl b{beta:g} s{step}", f"beta={beta:g} step={step}",
                      dataclasses.replace(reference, policy=tuned))
    if ex.filtered_min_elo > 0:
        if not cfg.data.inputs:
            notes.append("filtered arm skipped: data.inputs is empty (it re-prepares the games with a filter)")
        else:
            fcfg = filtered_config(cfg)
            filtered = ModelPolicy.from_checkpoint(_train_arm(fcfg, run / "filtered", device, progress), dev)
            model_arm("filtered", f"filtered>={ex.filtered_min_elo}", f"min_elo={ex.filtered_min_elo}",
                      Prompted(filtered, None, None, sampling))
    if ex.quantilizer_q:
        from chessdt.play.players import ModelPlayer, QuantilizerPlayer
        from chessdt.stockfish.engine import Engine, find_stockfish

        engine_path = find_stockfish(cfg.eval.engine or None)

        def quantilizer(q: float) -> Callable[[int], QuantilizerPlayer]:
            def make(seed: int) -> QuantilizerPlayer:
                return QuantilizerPlayer(ModelPlayer(reference, seed=seed), Engine(engine_path), k=ex.quantilizer_k,
                                         q=q, nodes=ex.quantilizer_nodes, seed=seed)
            return make

        for q in ex.quantilizer_q:
            arms.append(ArmSetting("quantilizer", f"quant k{ex.quantilizer_k} q{q:g}", f"k={ex.quantilizer_k} q={q:g}",
                                   PlayerSeat(make=quantilizer(q), pooled=True), None, q))
    return reference, arms, notes


# -- measuring ---------------------------------------------------------------------------------------------
def measure(cfg: Config, reference: Prompted, arms: Sequence[ArmSetting], games: Sequence[HeldOutGame],
            out: Path, progress: bool) -> tuple[list[Point], dict[str, Any]]:
    """Play and measure every setting; returns the points and the bootstrap draws for the frontier."""
    from chessdt.evals.match import Outcome, pair_results, pair_specs
    from chessdt.stockfish.engine import Engine, find_stockfish
    from chessdt.stockfish.referee import open_referee, referee_rule

    ex = cfg.experiment
    out.mkdir(parents=True, exist_ok=True)
    seats: dict[str, Seat] = {REFERENCE: reference, **{a.label: a.seat for a in arms}}
    # strength: every setting against the reference
    lines2 = opening_lines(2)
    specs = [g for a in arms for g in pair_specs(REFERENCE, a.label, range(ex.match_games // 2), lines2, ex.seed)]
    log.info("strength: %d games", len(specs))
    rule = referee_rule(cfg.eval)
    meta = {"kind": "experiment-matches", **({"referee": rule.spec} if rule is not None else {})}
    with open_referee(cfg.eval) as referee:
        records = run_games(specs, seats, out / "matches.jsonl", meta=meta, batch_size=ex.batch_size,
                            workers=cfg.eval.workers, max_plies=ex.max_plies, progress=progress, referee=referee)
    # with a referee the frontier's strength is adjudicated (who plays better, not who can finish)
    outcome: Outcome = "adjudicated" if rule is not None else "as played"
    # variety: self-play openings
    plies = max(ex.variety_plies)
    variety_specs = [GameSpec(id=f"{x}|v{i}", white=x, black=x, seed=ex.seed)
                     for x in [REFERENCE, *(a.label for a in arms)] for i in range(ex.variety_games)]
    openings = run_games(variety_specs, seats, out / "openings.jsonl", meta={"kind": "experiment-openings"},
                         batch_size=max(ex.batch_size, ex.variety_games), workers=cfg.eval.workers,
                         max_plies=plies, progress=progress)
    lines: dict[str, list[tuple[str, ...]]] = {}
    for spec, rec in zip(variety_specs, openings):
        lines.setdefault(spec.white, []).append(rec.line())
    # positions: every legal move scored once
    positions = _scored_positions(cfg, games, out / "positions.json", Engine(find_stockfish(cfg.eval.engine or None)))
    width = cfg.eval.band_width
    rng_seed = ex.seed
    points: list[Point] = []
    draws: dict[str, dict[str, np.ndarray]] = {}
    reference_dists = [model_distribution(reference, p.board) for p in positions]
    everyone: list[tuple[str, str, str, Prompted | None, float]] = [
        ("reference", REFERENCE, f"{ex.reference}", reference, 1.0),
        *((a.arm, a.label, a.setting, a.model, a.q) for a in arms)]
    for arm, label, setting, model, q in everyone:
        if label == REFERENCE:
            elo, elo_draws, n, score = Estimate(0.0, 0.0, 0.0), np.zeros(ex.bootstrap), 0, 0.5
        else:
            pairs = pair_results(records, REFERENCE, label, outcome)
            s = paired_score(pairs)
            elo_draws = _elo_draws(pairs, ex.bootstrap, rng_seed)
            elo, n, score = Estimate(_elo(s.score), _elo(s.lo), _elo(s.hi)), s.games, s.score
        variety = [line_variety(lines[label], k, ex.bootstrap, rng_seed) for k in ex.variety_plies]
        if model is not None:
            dists = reference_dists if model is reference else [model_distribution(model, p.board) for p in positions]
        else:
            dists = [quantilizer_distribution(d, p.scores, ex.quantilizer_k, q, seed=rng_seed + i)
                     for i, (d, p) in enumerate(zip(reference_dists, positions))]
        pv, pv_draws = position_variety(position_values(dists, positions, ex.good_cp), positions, ex.good_cp,
                                        ex.bootstrap, rng_seed)
        frontier_k = ex.variety_plies.index(ex.frontier_plies)
        kl = float(np.mean([kl_bits(d, r) for d, r in zip(dists, reference_dists)])) if positions else None
        own = Counter(tuple(x[: ex.frontier_plies]) for x in lines[label] if len(x) >= ex.frontier_plies)
        rating = model.rating if model is not None else reference.rating

        def js(center: int | None) -> float | None:
            data = _data_lines(games, ex.frontier_plies, center, width)
            return js_divergence(own, data) if own and data else None

        points.append(Point(arm, label, setting, elo, n, score, tuple(v for v, _ in variety), pv, kl,
                            js(rating) if rating is not None else None, js(None)))
        draws[label] = {"elo": elo_draws, "line_entropy": variety[frontier_k][1], "position_entropy": pv_draws[:, 0],
                        "good_mass": pv_draws[:, 1], "good_entropy": pv_draws[:, 2]}
    return points, draws


def _elo(score: float) -> float:
    """The Elo difference at a score, a score of 0 or 1 clipped to 0.001 or 0.999 (+-1200 Elo)."""
    return elo_difference(float(np.clip(score, 1e-3, 1 - 1e-3))) if math.isfinite(score) else math.nan


def _elo_draws(pairs: Sequence[Sequence[float]], samples: int, seed: int) -> np.ndarray:
    """Bootstrap draws of the Elo difference, resampling game pairs."""
    rng = np.random.default_rng(seed)
    scores = [float(np.mean(p)) for p in pairs if len(p)]
    weights = [len(p) for p in pairs if len(p)]
    if not scores:
        return np.full(samples, np.nan)
    s, w = np.array(scores), np.array(weights, dtype=float)
    out = np.empty(samples)
    n = len(s)
    for i in range(samples):
        idx = rng.integers(0, n, n)
        out[i] = _elo(float((s[idx] * w[idx]).sum() / w[idx].sum()))
    return out


def _scored_positions(cfg: Config, games: Sequence[HeldOutGame], path: Path, engine: Any) -> list[ScoredPosition]:
    """The held-out positions with every legal move scored (cached in `path`)."""
    ex = cfg.experiment
    boards = sample_positions(games, ex.positions, ex.seed)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("nodes") == ex.position_nodes and len(saved["positions"]) == len(boards):
            return [ScoredPosition(b, {chess.Move.from_uci(m): float(v) for m, v in s.items()})
                    for b, s in zip(boards, saved["positions"])]
    with engine:
        scored = [score_position(engine, b, ex.position_nodes) for b in boards]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"nodes": ex.position_nodes,
                               "positions": [{m.uci(): v for m, v in p.scores.items()} for p in scored]}))
    tmp.replace(path)
    return scored


def _data_lines(games: Sequence[HeldOutGame], k: int, center: int | None, width: int) -> Counter[tuple[str, ...]]:
    """First-k-ply lines of the held-out data games whose players' mean rating lies in the band around
    `center` (None: whose players both hold the top rating among them)."""
    rated = [(g, g.white, g.black) for g in games if g.white is not None and g.black is not None]
    if not rated:
        return Counter()
    if center is None:
        top = max(min(w, b) for _, w, b in rated)
        keep = [g for g, w, b in rated if min(w, b) >= top]
    else:
        keep = [g for g, _, _ in rated if band_of(g.mean_rating, center, width)]
    return Counter(tuple(m.uci() for m in g.moves[:k]) for g in keep if len(g.moves) >= k)


# -- matched strength ----------------------------------------------------------------------------------
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
        if p.arm != "reference":
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


# -- the run -------------------------------------------------------------------------------------------------
def run_experiment(cfg: Config, *, device: str | None = None, progress: bool = True) -> Path:
    """Train or load every arm, measure them together, write the frontier; returns the run dir."""
    from chessdt.evals.heldout import held_out_games
    from chessdt.evals.subject import use_threads

    ex = cfg.experiment
    run = run_path(cfg)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base_path = Path(ex.base) if ex.base else _train_arm(cfg, run / "base", device, progress)
    base = ModelPolicy.from_checkpoint(base_path, device or "cpu")
    if not base.cfg.data.label_parts:
        raise UserError(f"{base_path}: the base model has no condition prefix (label=none); "
                        "the experiment needs a rating-conditioned model")
    use_threads(cfg.eval)
    reference, arms, notes = build_arms(cfg, base, base_path, run, device, progress)
    games = held_out_games(base.cfg, base_path, max(cfg.eval.openings_human_games, ex.positions),
                           cfg.eval.games or None)
    if not games:
        raise UserError("no held-out games: set eval.games (a prepared data dir or a PGN file)")
    points, draws = measure(cfg, reference, arms, games, run / "eval", progress)
    result = {"points": [dataclasses.asdict(p) for p in points], "rl_runs": rl_runs(run, ex.rl_betas),
              "matched": {m: matched(points, draws, m, ex.frontier_plies) for m in MEASURES},
              "reference": ex.reference, "match_games": ex.match_games, "variety_games": ex.variety_games,
              "positions": ex.positions, "good_cp": ex.good_cp, "frontier_k": ex.frontier_plies,
              "notes": notes, "seconds": round(time.perf_counter() - t0, 1)}
    (run / "frontier.json").write_text(json.dumps(result, indent=1))
    (run / "frontier.md").write_text(format_frontier(result))
    plot_frontier(result, run / "frontier.png")
    return run


def rl_runs(run: Path, betas: Sequence[float]) -> dict[str, list[dict[str, Any]]]:
    """Each RL run's log where it measured itself: direct match against the base, line variety, KL."""
    out: dict[str, list[dict[str, Any]]] = {}
    for beta in betas:
        path = run / f"rl-beta{beta:g}" / "rl.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        out[f"{beta:g}"] = [{"step": r["step"], **r["eval"], "kl": r.get("kl"), "entropy": r.get("entropy"),
                             "opponent": r.get("opponent", "base"), "time_s": r.get("time_s")}
                            for r in rows if "eval" in r]
    return out


# -- output ----------------------------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _est(e: dict[str, float], digits: int = 2) -> str:
    return f"{_f(e['value'], digits)} [{_f(e['lo'], digits)}, {_f(e['hi'], digits)}]"


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
           "JS from data: own rating / top |",
           "|---|---|---|---:|---|---|---|---|---|---:|---:|---:|"]
    for p in result["points"]:
        line = next(v for v in p["lines"] if v["k"] == k)
        pv = p["positions"]
        out.append(f"| {p['arm']} | {p['setting']} | {_est(p['elo'], 0)} | {p['games']} | {_est(line['entropy'])} | "
                   f"{_est(line['distinct'], 0)} | {_est(pv['entropy'])} | {_est(pv['good_mass'])} | "
                   f"{_est(pv['good_entropy'])} | {_f(pv['cp_loss']['value'], 0)} | {_f(p['kl_from_reference'], 3)} | "
                   f"{_f(p['js_from_band'])} / {_f(p['js_from_top'])} |")
    ks = [v["k"] for v in result["points"][0]["lines"]] if result["points"] else []
    out += ["", "Opening lines at every k (entropy bits / distinct lines, with 95% intervals):", "",
            "| arm | setting | " + " | ".join(f"k={x}" for x in ks) + " |", "|---|---|" + "---|" * len(ks)]
    for p in result["points"]:
        cells = [f"{_est(v['entropy'])} / {_est(v['distinct'], 0)}" for v in p["lines"]]
        out.append(f"| {p['arm']} | {p['setting']} | " + " | ".join(cells) + " |")
    for beta, rows in result.get("rl_runs", {}).items():
        if not rows:
            continue
        out += ["", f"RL run beta={beta} along the way (direct match against the frozen base; self-play openings; "
                "KL and policy entropy of that update's batch):", "",
                "| update | Elo vs base | games | line entropy (bits) | distinct lines | KL (nats) | entropy (nats) | "
                "opponent | minutes |", "|---:|---|---:|---:|---:|---:|---:|---|---:|"]
        for r in rows:
            lk = [x for x in r if x.startswith("lines") and x.endswith("_entropy")]
            ld = [x for x in r if x.startswith("lines") and x.endswith("_distinct")]
            out.append(f"| {r['step']} | {_f(r['elo'], 0)} [{_f(r['elo_lo'], 0)}, {_f(r['elo_hi'], 0)}] | {r['games']} | "
                       f"{_f(r[lk[0]]) if lk else '-'} | {r[ld[0]] if ld else '-'} | {_f(r['kl'], 3)} | "
                       f"{_f(r['entropy'])} | {r['opponent']} | {_f((r['time_s'] or 0) / 60, 1)} |")
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


ARM_STYLE = {"reference": ("black", "*"), "conditioning": ("tab:blue", "o"), "guidance": ("tab:cyan", "D"),
             "temperature": ("tab:orange", "P"), "filtered": ("tab:green", "s"), "rl": ("tab:red", "^"),
             "quantilizer": ("tab:purple", "v")}


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
    ref = [p for p in result["points"] if p["arm"] == "reference"]
    for ax, (key, label) in zip(axes, MEASURES.items()):
        for arm, (color, marker) in ARM_STYLE.items():
            pts = [p for p in result["points"] if p["arm"] == arm]
            if not pts:
                continue
            curve = sorted((ref if arm not in ("reference", "filtered") else []) + pts, key=lambda p: p["elo"]["value"])
            x = np.array([p["elo"]["value"] for p in curve])
            v = [value(p, key) for p in curve]
            y = np.array([d["value"] for d in v])
            xerr = np.array([[p["elo"]["value"] - p["elo"]["lo"] for p in curve],
                             [p["elo"]["hi"] - p["elo"]["value"] for p in curve]])
            yerr = np.array([[d["value"] - d["lo"] for d in v], [d["hi"] - d["value"] for d in v]])
            ax.errorbar(x, y, xerr=np.maximum(np.nan_to_num(xerr), 0), yerr=np.maximum(np.nan_to_num(yerr), 0),
                        fmt=marker + "-", color=color,
                        label=arm, capsize=2, alpha=0.85, lw=1)
        ax.set_xlabel(f"Elo against the reference ({result['reference']})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Strength-variety frontier: conditioning, guidance, temperature, RL, filtered imitation, quantilizer")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
