"""`chessdt run CONFIG`: prepare -> train -> evaluate -> report, skipping steps already complete.

Completion is read from the outputs themselves: prepared data has its meta.json, a finished
training run has `train.done` (written only after `train` returns; a run with checkpoints but no
marker is resumed), each evaluator has its JSON file, and the report is always rewritten (it is
cheap). Interrupt it at any point and run the same command again to continue.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chessdt.config import Config, prepared_path, run_path, to_dict
from chessdt.errors import UserError
from chessdt.evals.needs import EVALUATORS, EvalName

if TYPE_CHECKING:
    from chessdt.evals.heldout import HeldOutGame
    from chessdt.play.policy import ModelPolicy

log = logging.getLogger(__name__)

# value: with a value head; fidelity: on a softmax ladder (rungs with a known policy); what each
# evaluator needs is in chessdt.evals.needs
EVAL_STEPS: tuple[EvalName, ...] = ("legality", "strength", "openings", "fidelity", "value")
STEPS = ("prepare", "train", *EVAL_STEPS, "report")


@dataclass
class PipelineResult:
    run_dir: Path
    done: list[str] = field(default_factory=list)  # steps run now
    skipped: list[str] = field(default_factory=list)  # steps already complete
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None


def _timed(result: PipelineResult, name: str, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    log.info("run: %s", name)
    fn()
    result.seconds[name] = round(time.perf_counter() - start, 1)
    result.done.append(name)


def run_pipeline(cfg: Config, *, device: str | None = None, progress: bool = True,
                 only: tuple[str, ...] = STEPS) -> PipelineResult:
    """Run the whole job of an experiment config; returns what ran and what was already there."""
    from chessdt.evals.heldout import held_out_games
    from chessdt.evals.subject import use_threads
    from chessdt.play.policy import ModelPolicy
    from chessdt.train import open_data, train

    bad = set(only) - set(STEPS)
    if bad:
        raise UserError(f"unknown steps {sorted(bad)}; choose from {', '.join(STEPS)}")
    run = run_path(cfg)
    preflight(cfg, run, only)
    result = PipelineResult(run)
    (run / "pipeline-config.json").write_text(json.dumps(to_dict(cfg), indent=1))

    data_dir = prepared_path(cfg, run)
    if (data_dir / "meta.json").is_file():
        result.skipped.append("prepare")
    elif "prepare" in only:
        _timed(result, "prepare", lambda: open_data(cfg, run, progress))

    done_marker = run / "train.done"
    if done_marker.is_file():
        result.skipped.append("train")
    elif "train" in only:
        resume = (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step_*"))

        def do_train() -> None:
            train(cfg, resume=resume, device=device, progress=progress)
            done_marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))

        _timed(result, "train", do_train)

    evals = [s for s in EVAL_STEPS if s in only and (cfg.model.value_head or not EVALUATORS[s].value_head)
             and (s != "fidelity" or has_softmax_rungs(cfg))]
    out = run / "eval"
    pending = [s for s in evals if not (out / f"{s}.json").is_file()]
    result.skipped += [s for s in evals if s not in pending]
    if pending:
        if not done_marker.is_file():
            raise UserError(f"{run}: training is not complete, cannot evaluate")
        use_threads(cfg.eval)
        policy = ModelPolicy.from_checkpoint(run, device or "cpu")
        # One read of held-out games serves every pending step. Legality, strength and openings count
        # whether pending or not, so strength's centipawn-loss positions (sampled from every game it is
        # given) stay the same when it runs alone; value and fidelity count only when they run.
        need = max(EVALUATORS[s].games(cfg.eval) for s in {"legality", "strength", "openings", *pending})
        games = held_out_games(cfg, run, need)
        if games is None:
            raise UserError(f"no held-out games for evaluation: set eval.games (looked next to {run})")
        out.mkdir(parents=True, exist_ok=True)
        for step in pending:
            _timed(result, step, functools.partial(_evaluate, step, policy, games, cfg, out, progress))

    if "report" in only:
        from chessdt.report import write_report

        def do_report() -> None:
            result.report = write_report(run, out).path

        _timed(result, "report", do_report)
    return result


def has_softmax_rungs(cfg: Config) -> bool:
    """Whether the fidelity evaluator has a ladder of known policies to compare against."""
    from chessdt.evals.fidelity import rungs_of

    if cfg.eval.fidelity_games <= 0:
        return False
    try:
        rungs_of(cfg.eval, cfg.data.inputs)
    except UserError:
        return False
    return True


def engine_needed(cfg: Config, steps: tuple[str, ...]) -> bool:
    """Whether these evaluation steps of a config will start Stockfish."""
    from chessdt.rules import Opponent

    ev = cfg.eval
    strength = "strength" in steps and (
        any(Opponent.parse(r).kind != "random" for r in ev.ladder) or ev.cpl_positions > 0)
    openings = ("openings" in steps and ev.openings_vs_games > 0
                and Opponent.parse(ev.openings_opponent).kind != "random")
    return strength or openings or "fidelity" in steps


def preflight(cfg: Config, run: Path, only: tuple[str, ...]) -> None:
    """Check, in the first seconds, what the steps still to run will need: a writable run
    directory, input data, and Stockfish for the evaluations. Raises UserError naming what is missing."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the run directory {run}: {e.strerror or e}") from None
    data_dir = prepared_path(cfg, run)
    if "prepare" in only and not (data_dir / "meta.json").is_file():
        if cfg.data.prepared and not cfg.data.inputs:
            raise UserError(f"data.prepared={data_dir} holds no prepared data set (no meta.json); "
                            f"run `chessdt prepare ... --out {data_dir}` first")
        if not cfg.data.inputs:
            raise UserError("the config has neither data.prepared nor data.inputs: nothing to train on")
        from chessdt.data.archives import expand_inputs

        files, _ = expand_inputs(cfg.data.inputs)
        if not files:
            raise UserError(f"no PGN files in data.inputs {list(cfg.data.inputs)}")
    pending = tuple(s for s in EVAL_STEPS if s in only and EVALUATORS[s].engine
                    and (s != "fidelity" or has_softmax_rungs(cfg)) and not (run / "eval" / f"{s}.json").is_file())
    if engine_needed(cfg, pending):
        from chessdt.stockfish.engine import find_stockfish

        find_stockfish(cfg.eval.engine or None)  # raises with the install hint


def _evaluate(step: str, policy: ModelPolicy, games: list[HeldOutGame], cfg: Config, out: Path,
              progress: bool) -> None:
    from chessdt.evals.subject import model_subjects

    ev = cfg.eval
    if step == "legality":
        from chessdt.evals.legality import evaluate_legality

        evaluate_legality(policy, games[: EVALUATORS["legality"].games(ev)], ev, out / "legality.json")
    elif step == "strength":
        from chessdt.evals.strength import evaluate_strength

        evaluate_strength(model_subjects(policy, ev), games, ev, out, progress=progress)
    elif step == "openings":
        from chessdt.evals.openings import evaluate_openings

        evaluate_openings(model_subjects(policy, ev), games[: EVALUATORS["openings"].games(ev)], ev, out)
    elif step == "fidelity":
        from chessdt.evals.fidelity import evaluate_fidelity, rungs_of

        evaluate_fidelity(policy, games[: EVALUATORS["fidelity"].games(ev)], rungs_of(ev, cfg.data.inputs), ev,
                          out / "fidelity.json", progress=progress)
    elif step == "value":
        from chessdt.evals.value import evaluate_value, prepared_base_rates

        rates = prepared_base_rates(prepared_path(cfg, out.parent), policy.context - policy.prompt_len + 1)
        evaluate_value(policy, games, ev, out / "value.json", rates)
