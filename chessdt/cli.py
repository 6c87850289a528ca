"""The `chessdt` command: argparse subcommands that parse, call one library function, print a summary.

Each command lives in a `_cmd_<name>` function, the `games` and `eval` groups in chessdt/cli_games.py and
chessdt/cli_eval.py; `main` turns UserError/ConfigError into a one-line
message and a non-zero exit code, so user mistakes never end in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from chessdt.cli_eval import add_eval_parsers, load_policy
from chessdt.cli_games import add_games_parsers
from chessdt.config import ConfigError, load_config, run_path
from chessdt.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from chessdt.play.policy import Prompted


def _print_counts(title: str, counts: dict[str, int], total: int | None = None) -> None:
    if not counts:
        return
    print(f"{title}:")
    width = max(len(str(k)) for k in counts)
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        share = f"  {100.0 * n / total:5.1f}%" if total else ""
        print(f"  {str(key):<{width}}  {n:>10,}{share}")


class _Caught:
    """The termination signal that ended a command, if one did."""

    signum: int = 0

    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "interrupted"


@contextlib.contextmanager
def _terminate_like_interrupt() -> Iterator[_Caught]:
    """Within the block SIGTERM and SIGHUP (schedulers, `timeout`, a closed terminal) and SIGINT raise
    KeyboardInterrupt, so they save what Ctrl-C saves; the previous handlers come back after it."""
    caught = _Caught()

    def handler(signum: int, frame: object) -> None:
        caught.signum = signum
        raise KeyboardInterrupt

    # SIGINT too: Ctrl-C must work even when we were started with it ignored, as background jobs of
    # a non-interactive shell are.
    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- prepare -----------------------------------------------------------------------------------
def _cmd_prepare(args: argparse.Namespace) -> int:
    from chessdt.data.prepare import prepare

    overrides = list(args.set or [])
    if args.label:
        overrides.append(f"data.label={args.label}")
    if args.keep_truncated:
        overrides.append("data.keep_truncated=true")
    if args.reader:
        overrides.append(f"data.reader={args.reader}")
    if args.workers is not None:
        overrides.append(f"data.workers={args.workers}")
    cfg = load_config(args.config, overrides)
    inputs = list(args.inputs) or list(cfg.data.inputs)
    if not inputs:
        raise UserError("no input given: pass PGN files/dirs/globs or set data.inputs in --config")
    summary = prepare(inputs, Path(args.out), cfg.data, force=args.force,
                      progress=not args.quiet)
    print(f"wrote {args.out}: {summary.games['train']:,} train + {summary.games['val']:,} val games, "
          f"{summary.tokens['train'] + summary.tokens['val']:,} tokens "
          f"({summary.games_per_s:,.0f} games/s)")
    _print_counts("skipped", summary.skipped, summary.games_seen)
    for note in summary.notes:
        print(f"note: {note}")
    return 0


# -- RL fine-tuning ------------------------------------------------------------------------------
def _cmd_finetune_rl(args: argparse.Namespace) -> int:
    from chessdt.rl import finetune_rl

    cfg = load_config(args.config, list(args.set or []))
    out = Path(args.out) if args.out else run_path(cfg)
    run = finetune_rl(cfg, out, device=args.device, progress=not args.quiet)
    last = [json.loads(line) for line in (run / "rl.jsonl").read_text().splitlines() if line]
    if last:
        m = last[-1]
        print(f"wrote {run}: {m['step']} updates; last batch reward {m['reward']:+.3f}, KL {m['kl']:.4f}, "
              f"entropy {m['entropy']:.3f} nats, {m['distinct_openings']}/{m['games']} distinct openings")
    return 0


def _experiment_args(p: argparse.ArgumentParser, config_help: str) -> None:
    """The experiment TOML argument and its --set overrides."""
    p.add_argument("config", help=config_help)
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")


def _add_rl_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("finetune-rl", help="RL fine-tuning (policy gradient + KL to the base model)")
    _experiment_args(p, "experiment TOML with an [rl] section (rl.base = the pretrained checkpoint)")
    p.add_argument("--out", help="run directory (default: run_dir of the config, else runs/<name>)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_finetune_rl)


# -- play / uci (the model against a human, or inside a chess GUI) ----------------------------------
def _check_prompt_args(args: argparse.Namespace) -> None:
    from chessdt.checks import check_guidance, check_temperature, check_top_p
    from chessdt.tokenizer import check_rating

    for flag, value in (("--rating", args.rating), ("--opponent-rating", args.opponent_rating)):
        try:
            if value is not None:
                check_rating(value)
        except ValueError as e:
            raise UserError(f"{flag} {value}: rating {e}") from None
    for flag, check, value in (("--temperature", check_temperature, args.temperature),
                               ("--top-p", check_top_p, args.top_p), ("--guidance", check_guidance, args.guidance)):
        try:
            check(value)
        except ValueError as e:
            raise UserError(f"{flag} {value}: {e}") from None


def _prompted(args: argparse.Namespace) -> Prompted:
    """The model as `chessdt play` and `chessdt uci` prompt it (arguments checked first)."""
    from chessdt.play.policy import Prompted, Sampling

    policy = load_policy(args.checkpoint, args.device)
    return Prompted(policy, args.rating, args.opponent_rating,
                    Sampling(temperature=args.temperature, top_p=args.top_p, guidance=args.guidance))


def _cmd_play(args: argparse.Namespace) -> int:
    import random

    import chess

    from chessdt.play.players import ModelPlayer
    from chessdt.play.notation import supports_color
    from chessdt.play.terminal import TerminalGame, default_pgn_path

    _check_prompt_args(args)
    board = chess.Board()
    if args.fen:
        try:
            board = chess.Board(args.fen)
        except ValueError as e:
            raise UserError(f"--fen {args.fen!r}: {e}") from None
        if board.status() != chess.STATUS_VALID or board.is_game_over():
            raise UserError(f"--fen {args.fen!r}: not a playable position")
    pgn_path = Path(args.pgn) if args.pgn else default_pgn_path()
    try:  # find out now, not after the game, that the game cannot be saved there
        existed = pgn_path.exists()
        with open(pgn_path, "a", encoding="utf-8"):  # append mode: an existing file is not touched
            pass
        if not existed:
            pgn_path.unlink()
    except OSError as e:
        raise UserError(f"--pgn {pgn_path}: cannot write there ({e.strerror or e})") from None
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    side = args.color if args.color != "random" else random.Random(seed).choice(["white", "black"])
    game = TerminalGame(ModelPlayer(_prompted(args), seed=seed), chess.WHITE if side == "white" else chess.BLACK,
                        inp=sys.stdin, out=sys.stdout, pgn_path=pgn_path, board=board,
                        color=supports_color(sys.stdout), seed=seed)
    with _terminate_like_interrupt() as caught:  # a signal ends the game like Ctrl-C: the game is saved
        summary = game.run()
    if caught.signum not in (0, signal.SIGINT):  # Ctrl-C is a way to leave the game; SIGTERM is not
        return caught.exit_code()
    return 0 if summary.pgn_path is not None else 1


def _cmd_uci(args: argparse.Namespace) -> int:
    from chessdt.play.uci import checkpoint_step, serve

    _check_prompt_args(args)
    serve(_prompted(args), sys.stdin, sys.stdout, seed=args.seed or 0, step=checkpoint_step(args.checkpoint))
    return 0


def _add_play_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add_prompt_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="checkpoint directory or run directory (best, else latest)")
        p.add_argument("--rating", type=int, default=1500, help="the model's prompted rating (default 1500)")
        p.add_argument("--opponent-rating", type=int, help="rating the model is told its opponent has "
                                                           "(default: the same)")
        p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = most likely move")
        p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1 = off)")
        p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight (0 = off)")
        p.add_argument("--device", default="cpu", help="torch device (default cpu)")

    p = sub.add_parser("play", help="play the model in the terminal at a chosen rating")
    add_prompt_args(p)
    p.add_argument("--color", choices=["white", "black", "random"], default="white", help="your side")
    p.add_argument("--fen", help="start from this position instead of the initial one")
    p.add_argument("--pgn", help="where the game is saved (default chessdt-game-<date>-<time>.pgn here)")
    p.add_argument("--seed", type=int, help="seeds the model's sampling and --color random (default: fresh)")
    p.set_defaults(func=_cmd_play)

    p = sub.add_parser("uci", help="the model as a UCI engine on stdin/stdout (for chess GUIs and bots)")
    add_prompt_args(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the model's sampling (UCI option Seed)")
    p.set_defaults(func=_cmd_uci)


# -- train ---------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from chessdt.train import Interrupted, read_metrics, train

    cfg = load_config(args.config, list(args.set or []))
    with _terminate_like_interrupt() as caught:
        try:
            run_dir = train(cfg, resume=args.resume, device=args.device, progress=not args.quiet)
        except KeyboardInterrupt as e:  # only a checkpoint actually written is announced
            saved = e.saved if isinstance(e, Interrupted) else None
            print(f"chessdt: {caught.name()}; " + (f"checkpoint {saved} saved (continue with --resume)" if saved
                                                   else "no checkpoint was written by this run"), file=sys.stderr)
            return caught.exit_code()
    if os.environ.get("RANK", "0") != "0":
        return 0
    curve = read_metrics(run_dir)
    last = curve[-1] if curve else {}
    print(f"run {run_dir}: step {last.get('step', '?')}, {last.get('tokens', 0):,} tokens, "
          f"val loss {last.get('val_loss', float('nan')):.4f}, top-1 {last.get('top1', 0):.1%}, "
          f"legal {last.get('legal', 0):.1%}")
    return 0


# -- the main job -----------------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    from chessdt.pipeline import STEPS, run_pipeline

    cfg = load_config(args.config, list(args.set or []))
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) if args.only else STEPS
    with _terminate_like_interrupt() as caught:
        try:
            result = run_pipeline(cfg, device=args.device, progress=not args.quiet, only=only)
        except KeyboardInterrupt:
            print(f"chessdt: {caught.name()}; run the same command again to continue", file=sys.stderr)
            return caught.exit_code()
    for step in STEPS:
        if step in result.done:
            print(f"  {step:<9} done in {result.seconds[step]:,.0f} s")
        elif step in result.skipped:
            print(f"  {step:<9} already complete")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from chessdt.experiment import quick_config, run_experiment

    cfg = load_config(args.config, list(args.set or []))
    if args.quick:
        cfg = quick_config(cfg)
    with _terminate_like_interrupt() as caught:
        try:
            run = run_experiment(cfg, device=args.device, progress=not args.quiet)
        except KeyboardInterrupt:
            print(f"chessdt: {caught.name()}; run the same command again to continue", file=sys.stderr)
            return caught.exit_code()
    print((run / "frontier.md").read_text())
    plots = [run / name for name in ("frontier.png", "overoptimisation.png") if (run / name).is_file()]
    print(f"wrote {run / 'frontier.md'}, {run / 'frontier.json'}, " + ", ".join(map(str, plots)))
    return 0


def _add_run_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("experiment", help="conditioning vs filtered imitation vs RL vs quantilizer: the frontier")
    _experiment_args(p, "experiment TOML, e.g. experiments/conditioning-vs-rl.toml")
    p.add_argument("--quick", action="store_true", help="a first look at about a third of the cost, in <run_dir>-quick")
    p.add_argument("--device", help="torch device (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_experiment)

    p = sub.add_parser("run", help="prepare -> train -> evaluate -> report, skipping completed steps")
    _experiment_args(p, "experiment TOML, e.g. experiments/quickstart.toml")
    p.add_argument("--only", help="comma-separated steps to run "
                                  "(prepare,train,legality,strength,openings,fidelity,value,report)")
    p.add_argument("--device", help="torch device for training and evals (default: train.device)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chessdt", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
        p.add_argument("--config", required=required, help="experiment TOML (its [data] section is used)")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a config field, e.g. --set data.min_elo=1200 (repeatable)")

    p = sub.add_parser("prepare", help="stream PGN archives into train/val token shards")
    p.add_argument("inputs", nargs="*", help="PGN files, directories or globs (.pgn, .gz, .bz2, .zst)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--label", help="condition prefix: elo, outcome, engine, elo+outcome, none ...")
    p.add_argument("--reader", choices=["rust", "python-chess"], help="move parser (default rust)")
    p.add_argument("--workers", type=int, help="worker processes (default data.workers; 0 = every core)")
    p.add_argument("--keep-truncated", action="store_true",
                   help="on a truncated archive, keep the games read before the break")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=_cmd_prepare)

    add_games_parsers(sub, add_config_args)

    _add_rl_parsers(sub)
    _add_run_parsers(sub)
    _add_play_parsers(sub)
    p = sub.add_parser("train", help="train a model: run directory with checkpoints and metrics")
    _experiment_args(p, "experiment TOML, e.g. experiments/tiny.toml")
    p.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    p.add_argument("--device", help="cuda, mps, cpu, cuda:1 ... (default: train.device, auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    add_eval_parsers(sub)
    # Further commands register here (one helper function per module group).
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "device", None):  # every command that takes --device: refuse one this machine lacks now
            from chessdt.train import pick_device

            pick_device(args.device)
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as e:
        print(f"chessdt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chessdt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # disk full, read-only or missing folders, a file where a folder belongs
        where = f": {e.filename}" if e.filename else ""
        print(f"chessdt: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
