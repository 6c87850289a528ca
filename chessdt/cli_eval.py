"""The `chessdt eval` commands and `chessdt report`: each evaluator on a checkpoint, and direct matches.

What each evaluator reads (held-out games, a value head, Stockfish) comes from one table,
:mod:`chessdt.evals.needs`, which `chessdt run` (chessdt/pipeline.py) reads too.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from chessdt.config import load_config
from chessdt.errors import UserError
from chessdt.evals.needs import EVALUATORS, EvalName

if TYPE_CHECKING:
    from chessdt.config import EvalConfig
    from chessdt.evals.heldout import HeldOutGame
    from chessdt.play.policy import ModelPolicy

T = TypeVar("T")


def load_policy(checkpoint: str, device: str) -> ModelPolicy:
    """The checkpoint's model, or a one-line UserError saying why it cannot be read."""
    from chessdt.play.policy import ModelPolicy

    try:
        return ModelPolicy.from_checkpoint(checkpoint, device=device)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"cannot load checkpoint {checkpoint}: {' '.join(str(e).split())}") from None


# -- eval / report ---------------------------------------------------------------------------------
def _eval_setup(args: argparse.Namespace,
                name: EvalName) -> tuple[ModelPolicy, EvalConfig, Path, list[HeldOutGame]]:
    """(policy, eval config, output folder, held-out games) for `eval NAME`, after checking what it needs.

    The eval settings are the checkpoint's own [eval] section, or that of --config, with --set
    overrides; evals.needs says how many held-out games the command reads.
    """
    import dataclasses

    from chessdt.checkpoint import resolve_checkpoint
    from chessdt.config import override
    from chessdt.evals.heldout import held_out_games
    from chessdt.evals.results import eval_dir
    from chessdt.evals.subject import use_threads

    policy = load_policy(args.checkpoint, args.device)
    overrides = list(args.set or [])
    # A checkpoint never chooses a program to run: its config comes without engines and opponents
    # (checkpoint.without_programs, applied where a checkpoint is read); the user names them on the command line (--engine, --set) or in --config.
    cfg = load_config(args.config, overrides) if args.config else override(policy.cfg, overrides)
    ev = cfg.eval
    if getattr(args, "engine", None):
        ev = dataclasses.replace(ev, engine=args.engine)
    use_threads(ev)
    ckpt = resolve_checkpoint(args.checkpoint)
    needs = EVALUATORS[name]
    n_games = needs.games(ev)
    games = (held_out_games(cfg, ckpt, n_games, args.games) or []) if n_games else []
    needs.check(name, args.checkpoint, len(games), policy.has_value)
    out = Path(args.out) if args.out else eval_dir(ckpt)
    return policy, ev, out, games


def _eval_output(out: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the eval output folder against a second eval writing into it (its JSONL logs resume)."""
    from chessdt.files import LOCK_NAME, exclusive

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the eval results")
    return exclusive(out / LOCK_NAME, f"eval output {out}")


def _cmd_eval_legality(args: argparse.Namespace) -> int:
    from chessdt.evals.legality import evaluate_legality

    policy, ev, out, games = _eval_setup(args, "legality")
    with _eval_output(out):
        result = evaluate_legality(policy, games, ev, out / "legality.json")
    print(result.format())
    print(f"wrote {out / 'legality.json'}")
    return 0


def _cmd_eval_strength(args: argparse.Namespace) -> int:
    from chessdt.evals.subject import model_subjects
    from chessdt.evals.strength import evaluate_strength

    policy, ev, out, games = _eval_setup(args, "strength")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    with _eval_output(out):
        result = evaluate_strength(model_subjects(policy, ev), games, ev, out, parts=parts, progress=not args.quiet)
    print(result.format())
    print(f"wrote {out / 'strength.json'} (games in {out / 'strength_games.jsonl'})")
    return 0


def _cmd_eval_openings(args: argparse.Namespace) -> int:
    from chessdt.evals.subject import model_subjects
    from chessdt.evals.openings import evaluate_openings

    policy, ev, out, games = _eval_setup(args, "openings")
    with _eval_output(out):
        result = evaluate_openings(model_subjects(policy, ev), games, ev, out)
    print(result.format())
    print(f"wrote {out / 'openings.json'}")
    return 0


def _cmd_eval_value(args: argparse.Namespace) -> int:
    from chessdt.checkpoint import resolve_checkpoint
    from chessdt.evals.heldout import default_source
    from chessdt.evals.value import evaluate_value, prepared_base_rates

    policy, ev, out, games = _eval_setup(args, "value")
    ckpt = resolve_checkpoint(args.checkpoint)
    src = Path(args.games) if args.games else Path(ev.games) if ev.games else default_source(policy.cfg, ckpt)
    rates = prepared_base_rates(src, policy.context - policy.prompt_len + 1) if src is not None else None
    with _eval_output(out):
        result = evaluate_value(policy, games, ev, out / "value.json", rates)
    print(result.format())
    print(f"wrote {out / 'value.json'}")
    return 0


def _cmd_eval_fidelity(args: argparse.Namespace) -> int:
    from chessdt.evals.fidelity import evaluate_fidelity, rungs_of

    policy, ev, out, games = _eval_setup(args, "fidelity")
    rungs = rungs_of(ev, policy.cfg.data.inputs)
    with _eval_output(out):
        result = evaluate_fidelity(policy, games, rungs, ev, out / "fidelity.json", progress=True)
    print(result.format())
    print(f"wrote {out / 'fidelity.json'}")
    return 0


def _cmd_eval_prompt(args: argparse.Namespace) -> int:
    from chessdt.evals.prompt import evaluate_prompt

    policy, ev, out, games = _eval_setup(args, "prompt")
    with _eval_output(out):
        result = evaluate_prompt(policy, games, ev, out / "prompt.json", progress=True)
    print(result.format())
    print(f"wrote {out / 'prompt.json'}")
    return 0


def _given(flag: T | None, default: T) -> T:
    """A flag's value, or the config's where the flag was not given."""
    return default if flag is None else flag


def _cmd_eval_match(args: argparse.Namespace) -> int:
    import torch

    from chessdt.evals.match import Setting, play_match
    from chessdt.evals.subject import sampling_of
    from chessdt.stockfish.engine import find_stockfish
    from chessdt.stockfish.referee import Referee, RefereeRule

    policy, ev, out, _ = _eval_setup(args, "match")
    settings = [Setting.parse(s, sampling_of(ev)) for s in args.settings]  # eval.temperature etc. as defaults
    others = {c: load_policy(c, args.device) for c in sorted({s.checkpoint for s in settings if s.checkpoint})}
    sprt = None
    if args.sprt:
        try:
            elo0, elo1 = (float(x) for x in args.sprt.split(","))
        except ValueError:
            raise UserError(f"--sprt {args.sprt!r}: give ELO0,ELO1, e.g. 0,20") from None
        sprt = (elo0, elo1)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    rule = RefereeRule.parse(args.referee) if args.referee is not None else None
    name = "match_" + "_vs_".join(re.sub(r"[^A-Za-z0-9_.@=-]+", "-", s.label) for s in settings)
    referee = Referee(find_stockfish(ev.engine or None), rule) if rule is not None else contextlib.nullcontext()
    with _eval_output(out), referee as ref:
        result = play_match(policy, settings, out / f"{name}.jsonl", games=_given(args.games, ev.match_games),
                            plan=_given(args.plan, ev.match_plan), opening_plies=_given(args.opening_plies, ev.opening_plies),
                            seed=_given(args.seed, ev.seed), batch_size=_given(args.batch_size, ev.batch_size),
                            max_plies=_given(args.max_plies, ev.max_plies), sprt=sprt, progress=not args.quiet,
                            others=others, referee=ref)
        result.save(out / f"{name}.json")
    print(result.format())
    print(f"wrote {out / (name + '.json')} (games in {out / (name + '.jsonl')}; {result.seconds:,.0f} s)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from chessdt.report import write_report

    report = write_report(Path(args.run_dir), Path(args.eval_dir) if args.eval_dir else None)
    print(f"wrote {report.path} ({', '.join(report.sections) or 'training curve only'}; {len(report.plots)} plots in "
          f"{report.path.parent / 'report'})")
    return 0


def _cmd_legality_curve(args: argparse.Namespace) -> int:
    from chessdt.evals.curve import legality_curve
    from chessdt.report import plot_legality_curve

    try:
        thresholds = [float(t) / 100 for t in args.thresholds.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--thresholds {args.thresholds!r}: give percentages, e.g. 95,98,99") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = legality_curve([Path(d) for d in args.run_dirs], thresholds, out / "legality_curve.json")
    plot = plot_legality_curve(curve, out / "legality_curve.png")
    print(curve.format())
    print(f"wrote {out / 'legality_curve.json'}" + (f" and {plot}" if plot else ""))
    return 0


def _cmd_legality_strict(args: argparse.Namespace) -> int:
    from chessdt.evals.strict import strict_match

    log = Path(args.match_log)
    result = strict_match(log, log.with_name(log.stem + ".strict.json"))
    print(result.format())
    print(f"wrote {log.with_name(log.stem + '.strict.json')}")
    return 0


def _cmd_legality_probe(args: argparse.Namespace) -> int:
    from chessdt.checkpoint import resolve_checkpoint
    from chessdt.evals.heldout import held_out_games
    from chessdt.evals.probe import probe_board
    from chessdt.evals.results import eval_dir

    if args.positions < 4:
        raise UserError(f"--positions {args.positions}: give at least 4")
    policy = load_policy(args.checkpoint, args.device)
    ckpt = resolve_checkpoint(args.checkpoint)
    games = held_out_games(policy.cfg, ckpt, max(2, args.positions // 20), args.games) or []
    if len(games) < 2:
        raise UserError(f"{args.checkpoint}: a probe needs at least 2 held-out games (give --games)")
    out = Path(args.out) if args.out else eval_dir(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    result = probe_board(policy, games, args.positions, out / "probe.json")
    print(result.format())
    print(f"wrote {out / 'probe.json'}")
    return 0


def _add_match_args(p: argparse.ArgumentParser) -> None:
    """The flags of `eval match`; where one is not given, the [eval] section's value is played."""
    p.add_argument("settings", nargs="+", metavar="SETTING",
                   help="two or more settings, e.g. 'rating=1000' 'rating=2000' 'rating=2000,temperature=0.3' "
                        "(keys: rating, opponent, temperature, top_p, guidance, mask, checkpoint: another model)")
    p.add_argument("--games", type=int, help="games per pair of settings (even; default eval.match_games, 200)")
    p.add_argument("--plan", choices=("adjacent", "all"), help="which settings meet: neighbours in the list plus "
                                                              "first vs last, or all pairs (default eval.match_plan, adjacent)")
    p.add_argument("--sprt", metavar="ELO0,ELO1", help="two settings: stop once 'B - A >= ELO1' or "
                                                      "'B - A <= ELO0' is decided (alpha = beta = 0.05)")
    p.add_argument("--referee", nargs="?", const="", metavar="RULE",
                   help="adjudicate with a fixed-node Stockfish referee; RULE overrides the defaults, e.g. "
                        "'cp=400,plies=8,from=20,nodes=1000,playout=1' (playout < 1 stops that share of "
                        "adjudicated games at the verdict: faster, adjudicated Elo only)")
    p.add_argument("--opening-plies", type=int, help="plies of the paired opening lines (default eval.opening_plies, 4)")
    p.add_argument("--batch-size", type=int, help="games advanced together through the KV cache "
                                                  "(default eval.batch_size, 64)")
    p.add_argument("--max-plies", type=int, help="a game still running is a draw after this (default eval.max_plies, 300)")
    p.add_argument("--seed", type=int, help="seeds the sampling of every game (default eval.seed, 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default eval.threads, 1: fastest for small batches)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_eval_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("eval", help="evaluate a model: legality, strength, openings, value head, direct matches")
    esub = ev.add_subparsers(dest="eval_command", metavar="EVAL", required=True)
    funcs = {"legality": _cmd_eval_legality, "strength": _cmd_eval_strength, "openings": _cmd_eval_openings,
             "value": _cmd_eval_value, "fidelity": _cmd_eval_fidelity, "match": _cmd_eval_match,
             "prompt": _cmd_eval_prompt}
    for name, needs in EVALUATORS.items():
        p = esub.add_parser(name, help=needs.summary)
        p.add_argument("checkpoint", help="checkpoint directory or run directory (best, else latest)")
        if name == "match":
            _add_match_args(p)
        else:
            p.add_argument("--games", help="held-out games: prepared data dir (val split) or PGN file "
                                           "(default: eval.games, else the model's prepared data)")
        p.add_argument("--out", help="output folder (default: <run_dir>/eval)")
        p.add_argument("--config", help="take the [eval] settings from this experiment TOML "
                                        "(default: the checkpoint's own)")
        p.add_argument("--set", action="append", metavar="eval.KEY=VALUE",
                       help="override an eval setting, e.g. --set eval.ratings=1200,1800 (repeatable)")
        p.add_argument("--device", default="cpu", help="torch device (default cpu)")
        if needs.engine:
            p.add_argument("--engine", help=("referee's " if name == "match" else "") +
                           "Stockfish binary (default: eval.engine, else stockfish on PATH, then /usr/games/stockfish)")
        if name == "strength":
            p.add_argument("--parts", default="ladder,match,matching,cpl",
                           help="which parts to run (default all four: ladder, match, matching, cpl)")
            p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=funcs[name])

    p = sub.add_parser("report", help="report.md with plots from a run's evaluation results")
    p.add_argument("run_dir", help="run directory (reads RUN_DIR/eval/*.json)")
    p.add_argument("--eval-dir", help="read results from here instead of RUN_DIR/eval")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("legality-curve", help="legal top-1 share against tokens seen for training runs "
                                              "(e.g. pure sequence vs rule-fed): tokens to each threshold")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="training run directories (read metrics.jsonl)")
    p.add_argument("--thresholds", default="95,98,99", help="legal top-1 shares in percent (default 95,98,99)")
    p.add_argument("--out", default="runs/legality-curve", help="folder for legality_curve.json and .png")
    p.set_defaults(func=_cmd_legality_curve)

    p = sub.add_parser("legality-strict", help="a raw (unmasked) match's strength with replacement and under "
                                               "strict rules (an illegal move loses), on the same games")
    p.add_argument("match_log", help="the game log of `chessdt eval match` (eval/match_*.jsonl)")
    p.set_defaults(func=_cmd_legality_strict)

    p = sub.add_parser("legality-probe", help="a linear probe from each layer's residual stream to the board "
                                              "(which piece stands on each square) on held-out positions")
    p.add_argument("checkpoint", help="checkpoint directory or run directory (best, else latest)")
    p.add_argument("--games", help="held-out games: prepared data dir (val split) or PGN file "
                                   "(default: the model's prepared data)")
    p.add_argument("--positions", type=int, default=4000, help="held-out positions (half fit, half test; default 4000)")
    p.add_argument("--out", help="output folder (default: <run_dir>/eval)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=_cmd_legality_probe)
