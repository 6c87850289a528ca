"""The `chessdt` command: argparse subcommands that parse, call one library function, print a summary.

Each command lives in a `_cmd_<name>` function; `main` turns UserError/ConfigError into a one-line
message and a non-zero exit code, so user mistakes never end in a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from chessdt.config import ConfigError, load_config
from chessdt.errors import UserError


def _print_counts(title: str, counts: dict[str, int], total: int | None = None) -> None:
    if not counts:
        return
    print(f"{title}:")
    width = max(len(str(k)) for k in counts)
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        share = f"  {100.0 * n / total:5.1f}%" if total else ""
        print(f"  {str(key):<{width}}  {n:>10,}{share}")


# -- prepare -----------------------------------------------------------------------------------
def _cmd_prepare(args: argparse.Namespace) -> int:
    from chessdt.prepare import prepare

    overrides = list(args.set or [])
    if args.label:
        overrides.append(f"data.label={args.label}")
    if args.keep_truncated:
        overrides.append("data.keep_truncated=true")
    if args.reader:
        overrides.append(f"data.reader={args.reader}")
    cfg = load_config(args.config, overrides)
    inputs = list(args.inputs) or list(cfg.data.inputs)
    if not inputs:
        raise UserError("no input given: pass PGN files/dirs/globs or set data.inputs in --config")
    summary = prepare(inputs, Path(args.out), cfg.data, workers=args.workers, force=args.force,
                      progress=not args.quiet)
    print(f"wrote {args.out}: {summary.games['train']:,} train + {summary.games['val']:,} val games, "
          f"{summary.tokens['train'] + summary.tokens['val']:,} tokens "
          f"({summary.games_per_s:,.0f} games/s)")
    _print_counts("skipped", summary.skipped, summary.games_seen)
    for note in summary.notes:
        print(f"note: {note}")
    return 0


# -- games ---------------------------------------------------------------------------------------
def _cmd_games_stats(args: argparse.Namespace) -> int:
    from chessdt.pgn import collect_stats

    cfg = load_config(args.config, list(args.set or []))
    stats = collect_stats(args.files, cfg.data, with_moves=args.moves, progress=not args.quiet)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
        return 0
    print(stats.format())
    return 0


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
    p.add_argument("--workers", type=int, default=0, help="parser threads (default: all cores)")
    p.add_argument("--keep-truncated", action="store_true",
                   help="on a truncated archive, keep the games read before the break")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=_cmd_prepare)

    games = sub.add_parser("games", help="game files: stats, generate, label, download")
    gsub = games.add_subparsers(dest="games_command", metavar="ACTION", required=True)
    p = gsub.add_parser("stats", help="counts, ratings, time controls, results, skip reasons")
    p.add_argument("files", nargs="+", help="PGN files, directories or globs")
    p.add_argument("--moves", action="store_true", help="also parse moves (slower; adds move-level skip reasons)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=_cmd_games_stats)

    # Further commands register here (one helper function per module group).
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError) as e:
        print(f"chessdt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chessdt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
