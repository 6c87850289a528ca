"""The arms of the frontier experiment: how each setting plays, trained or loaded (resumable)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from chessdt.config import Config, Reward
from chessdt.errors import UserError
from chessdt.play.arena import PlayerSeat, Seat
from chessdt.play.policy import ModelPolicy, Prompted, Sampling
from chessdt.stockfish.generate import Rung

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ArmSetting:
    """One point of one arm: how it plays, and how its per-position distribution is computed."""

    arm: str  # conditioning, guidance, temperature, rl, filtered, quantilizer
    label: str  # unique, used as the seat label in game logs
    setting: str  # e.g. 'rating=2000', 'T=0.3', 'beta=0.02 step=100', 'k=8 q=0.25'
    seat: Seat
    model: Prompted | None  # the prompted model (None: the quantilizer, a rung)
    q: float = 1.0  # quantilizer: kept fraction
    rung: Rung | None = None  # a rung of the data: its exact policy is its per-position distribution
    group: str = ""  # the setting without its seed (RL): one point per seed, aggregated across seeds
    seed: int | None = None


def train_arm(cfg: Config, run_dir: Path, device: str | None, progress: bool) -> Path:
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

    def model_arm(arm: str, label: str, setting: str, model: Prompted, group: str = "", seed: int | None = None) -> None:
        arms.append(ArmSetting(arm, label, setting, model, model, group=group or setting, seed=seed))

    for r in ex.ratings:
        model_arm("conditioning", f"cond r{r}", f"rating={r}", dataclasses.replace(reference, rating=r))
    for w in ex.guidance:
        guided = Prompted(base, ex.guidance_rating, None, dataclasses.replace(sampling, guidance=w))
        model_arm("guidance", f"guided r{ex.guidance_rating} w{w:g}", f"rating={ex.guidance_rating} w={w:g}", guided)
    for t in ex.temperatures:
        model_arm("temperature", f"T{t:g}", f"T={t:g}",
                  dataclasses.replace(reference, sampling=dataclasses.replace(sampling, temperature=t)))
    for reward in ex.rl_rewards or (cfg.rl.reward,):
        if reward == "rater" and not base.has_value:
            raise UserError(f"experiment.rl_rewards has 'rater' but the base {base_path} has no value head to rate with "
                            "(train it with model.value_head = true)")
        for beta in ex.rl_betas:
            for seed in ex.rl_seeds:
                out = run / rl_dir(reward, beta, seed)
                if not (out / "rl.done").is_file():
                    rcfg = dataclasses.replace(cfg, name=f"{cfg.name}-{out.name}", rl=dataclasses.replace(
                        cfg.rl, base=str(base_path), beta=beta, reward=cast(Reward, reward), seed=seed, rating=rating or 0,
                        temperature=sampling.temperature))
                    finetune_rl(rcfg, out, device=dev, progress=progress)
                    (out / "rl.done").write_text("done\n")
                for step, path in _rl_checkpoints(out, ex.rl_steps):
                    tuned = ModelPolicy.from_checkpoint(path, dev)
                    group = f"beta={beta:g} step={step}"
                    model_arm(f"rl-{reward}", f"rl-{reward} b{beta:g} s{step} seed{seed}", f"{group} seed={seed}",
                              dataclasses.replace(reference, policy=tuned), group=group, seed=seed)
    if ex.filtered_min_elo > 0:
        if not cfg.data.inputs:
            notes.append("filtered arm skipped: data.inputs is empty (it re-prepares the games with a filter)")
        else:
            fcfg = filtered_config(cfg)
            filtered = ModelPolicy.from_checkpoint(train_arm(fcfg, run / "filtered", device, progress), dev)
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
    for rung in experiment_rungs(cfg, base):
        arms.append(ArmSetting("data", f"rung {rung.rating}", str(rung), rung_seat(rung, cfg.eval.engine or None), None,
                               rung=rung))
    return reference, arms, notes


def rl_dir(reward: str, beta: float, seed: int) -> str:
    """The directory of one RL run inside the experiment's."""
    return f"rl-{reward}-beta{beta:g}-seed{seed}"


def experiment_rungs(cfg: Config, base: ModelPolicy) -> tuple[Rung, ...]:
    """experiment.rungs: the data's softmax rungs (["data"]: named in the base's games' Event tag), or
    the rungs given; each must be a softmax rung, whose exact policy is known."""
    from chessdt.evals.fidelity import rungs_of
    from chessdt.stockfish.generate import parse_rungs

    specs = cfg.experiment.rungs
    if not specs:
        return ()
    if [s.lower() for s in specs] == ["data"]:
        return rungs_of(dataclasses.replace(cfg.eval, fidelity_rungs=()), base.cfg.data.inputs or cfg.data.inputs)
    rungs = parse_rungs(",".join(specs))
    plain = [str(r) for r in rungs if r.strength.softmax is None]
    if plain:
        raise UserError(f"experiment.rungs {plain}: only softmax rungs have a known policy (RATING:softmax=T/NODES)")
    return rungs


def rung_seat(rung: Rung, engine: str | None) -> PlayerSeat:
    """A rung of the data as a player: Stockfish sampling from its exact softmax policy."""
    from chessdt.play.players import StockfishPlayer

    def make(seed: int) -> StockfishPlayer:
        return StockfishPlayer(engine, strength=rung.strength, nodes=rung.nodes, seed=seed)
    return PlayerSeat(make=make, pooled=True)


