"""`chessdt experiment CONFIG`: strength against variety at matched strength, one curve per arm.

Does conditioning on a high rating buy strength without the loss of variety that RL fine-tuning
(and plain sharpening) causes? Arms, all from one pretrained rating-conditioned base model:

1. conditioning: the base prompted at each rating of `experiment.ratings` (and the reference's);
2. guidance: at `guidance_rating` with classifier-free guidance weights `experiment.guidance`;
3. temperature: the reference prompt sampled at `experiment.temperatures` (sharpening);
4. RL: `chessdt finetune-rl` from the reference, one run per reward (the true result, or the learned
   rater: the base's value head, the RLHF analog), KL weight and seed, checkpoints along each run;
5. filtered imitation: the same architecture trained, unconditioned, on the strongest games only;
6. quantilizer / best-of-k: k draws from the reference, the top q by Stockfish, one at random;
7. the data itself: each softmax rung of the training games, whose exact policy is known, plays the
   reference too, so every arm can be set beside the data at its own strength.

**Strength**: every setting plays `match_games` games against the reference (the base at
`experiment.reference`), paired openings with both colours; its Elo is the difference from the
reference with a 95% interval from the per-pair variance, so all settings share one scale and the
reference sits at 0. **Variety**: `variety_games` self-play openings per setting (entropy and
distinct lines at k = 2, 4, 8 plies), per-position diversity and diversity among good moves on
`positions` held-out positions, KL from the reference, and the Jensen-Shannon distance of the
opening lines from the data's games at the top rating — each with a bootstrap interval.

**The rater**: on the same match games, the learned rater's expected score of each setting and the
referee's of the same positions: does a high-but-not-extreme prompt exploit the rater less than RL
at the same rater score? Along each RL run, the rater's and the true score against the KL from the
base (the over-optimisation curve), with Student-t intervals across seeds.

**Matched strength**: each arm's points, ordered by Elo, form a curve that starts at the reference.
Where two arms' curves overlap in Elo, each is interpolated linearly at the middle of the overlap
and the variety difference is reported with an interval from bootstrapping every point's Elo and
variety together. Each arm is also read against the rungs' curve
at its own Elo (how much of the data's variety it keeps). Output: `frontier.json`, `frontier.md`,
`frontier.png`, `overoptimisation.png`; games stream to
`eval/*.jsonl`, so an interrupted run resumes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from chessdt.config import Config, run_path
from chessdt.errors import UserError
from chessdt.experiment.arms import ArmSetting, build_arms, filtered_config, rl_dir, train_arm
from chessdt.experiment.compare import AXES, MEASURES, across_seeds, matched, rl_curves, versus_data
from chessdt.experiment.measure import Point, kl_bits, measure
from chessdt.experiment.output import format_frontier, plot_frontier, plot_overoptimisation
from chessdt.play.policy import ModelPolicy

__all__ = ["ArmSetting", "Point", "filtered_config", "format_frontier", "kl_bits", "matched", "plot_frontier",
           "quick_config", "run_experiment", "versus_data"]


def quick_config(cfg: Config) -> Config:
    """The `--quick` variant: a first look at about a third of the cost, in <run_dir>-quick (the base
    is the full run's, trained there if missing): a third of the games and positions, RL at half the
    updates and games per update, one quantilizer setting, a shorter filtered arm."""
    ex, rl = cfg.experiment, cfg.rl
    steps = max(rl.save_every, rl.steps // 2 // rl.save_every * rl.save_every) if rl.save_every <= rl.steps // 2 \
        else rl.steps // 2
    third = max(2, ex.match_games // 3 // 2 * 2)
    return dataclasses.replace(
        cfg, run_dir=str(run_path(cfg)) + "-quick",
        experiment=dataclasses.replace(
            ex, base=ex.base or str(run_path(cfg) / "base"), match_games=third,
            variety_games=max(1, ex.variety_games // 3), positions=max(1, ex.positions // 3),
            quantilizer_q=ex.quantilizer_q[-1:], temperatures=ex.temperatures[:2],
            filtered_minutes=max(1.0, (ex.filtered_minutes or cfg.train.max_minutes or 6) / 2),
            rl_steps=tuple(s for s in ex.rl_steps if s <= steps) or (steps,)),
        rl=dataclasses.replace(rl, steps=steps, games_per_step=max(2, rl.games_per_step // 2),
                               save_every=min(rl.save_every, steps), eval_every=min(rl.eval_every, max(1, steps // 3)),
                               eval_games=max(2, rl.eval_games // 2), variety_games=max(1, rl.variety_games // 2)))


def run_experiment(cfg: Config, *, device: str | None = None, progress: bool = True) -> Path:
    """Train or load every arm, measure them together, write the frontier; returns the run dir."""
    from chessdt.evals.heldout import held_out_games
    from chessdt.evals.subject import use_threads
    from chessdt.rater import Rater

    ex = cfg.experiment
    run = run_path(cfg)
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if ex.base and not Path(ex.base).exists() and Path(ex.base).name == "base":  # --quick: the full run's base
        train_arm(cfg, Path(ex.base), device, progress)
    base_path = Path(ex.base) if ex.base else train_arm(cfg, run / "base", device, progress)
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
    rater = Rater(base, reference.rating) if base.has_value else None
    if rater is None:
        notes.append("no rater columns: the base has no value head (model.value_head = false)")
    points, draws, spots = measure(cfg, reference, arms, games, run / "eval", progress, rater)
    curve_points, curve_draws = across_seeds(points, draws)
    k = ex.frontier_plies
    runs = {f"{reward} beta={beta:g}": [run / rl_dir(reward, beta, seed) for seed in ex.rl_seeds]
            for reward in ex.rl_rewards or (cfg.rl.reward,) for beta in ex.rl_betas}
    result = {"points": [dataclasses.asdict(p) for p in points],
              "curve_points": [dataclasses.asdict(p) for p in curve_points], "rl_curves": rl_curves(run, runs),
              "matched": {m: matched(curve_points, curve_draws, m, k) for m in MEASURES},
              "versus_data": {axis: {m: versus_data(curve_points, curve_draws, m, k, axis) for m in MEASURES}
                              for axis in AXES},
              "blind_spots": spots, "horizon": rater.horizon(cfg.rl.max_plies) if rater else cfg.rl.max_plies,
              "reference": ex.reference, "match_games": ex.match_games, "variety_games": ex.variety_games,
              "positions": ex.positions, "good_cp": ex.good_cp, "frontier_k": k,
              "notes": notes, "seconds": round(time.perf_counter() - t0, 1)}
    (run / "frontier.json").write_text(json.dumps(result, indent=1))
    (run / "frontier.md").write_text(format_frontier(result))
    plot_frontier(result, run / "frontier.png")
    plot_overoptimisation(result, run / "overoptimisation.png")
    return run
