"""The `chessdt games` commands: game files' stats, and engine games (generate, ladder, variety, label,
download). Registered by :func:`chessdt.cli.build_parser`; each parses, calls one library function, prints.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from chessdt.config import load_config
from chessdt.errors import UserError


def add_games_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """The `games` command and its actions."""
    games = sub.add_parser("games", help="game files: stats, generate, ladder, variety, label, download")
    gsub = games.add_subparsers(dest="games_command", metavar="ACTION", required=True)
    p = gsub.add_parser("stats", help="counts, ratings, time controls, results, skip reasons")
    p.add_argument("files", nargs="+", help="PGN files, directories or globs")
    p.add_argument("--moves", action="store_true", help="also parse moves (slower; adds move-level skip reasons)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=_cmd_games_stats)
    _add_engine_games_parsers(gsub)


# -- games ---------------------------------------------------------------------------------------
def _cmd_games_stats(args: argparse.Namespace) -> int:
    from chessdt.data.pgn import collect_stats

    cfg = load_config(args.config, list(args.set or []))
    stats = collect_stats(args.files, cfg.data, with_moves=args.moves, progress=not args.quiet)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
        return 0
    print(stats.format())
    return 0


# -- games generate / ladder / label / download (engine-rated games) -------------------------------
def _cmd_games_generate(args: argparse.Namespace) -> int:
    from chessdt.stockfish.engine import find_stockfish
    from chessdt.stockfish.generate import DEFAULT_RUNGS, LadderConfig, generate, load_start_lines, parse_rungs

    rungs = parse_rungs(args.rungs) if args.rungs else DEFAULT_RUNGS
    cfg = LadderConfig(rungs=rungs, games=args.games, seed=args.seed, nodes=args.nodes,
                       hash_mb=args.hash_mb, max_plies=args.max_plies, adjudicate_cp=args.adjudicate_cp,
                       adjudicate_moves=args.adjudicate_moves, book=Path(args.book) if args.book else None,
                       book_plies=args.book_plies,
                       start_lines=load_start_lines(Path(args.start_lines)) if args.start_lines else ())
    summary = generate(cfg, Path(args.out), find_stockfish(args.engine), workers=args.workers,
                       progress=not args.quiet)
    rate = 60.0 * summary.played / max(summary.seconds, 1e-9)
    print(f"wrote {args.out}: {summary.played:,} new games ({rate:,.0f} games/min), "
          f"{summary.total:,} of {cfg.games:,} in the file")
    return 0


def _cmd_games_ladder(args: argparse.Namespace) -> int:
    from chessdt.stockfish.ladder import ladder_report

    print(ladder_report([Path(f) for f in args.files]).format())
    return 0


def _cmd_games_variety(args: argparse.Namespace) -> int:
    from chessdt.stockfish.engine import find_stockfish
    from chessdt.stockfish.rungs import ladder_variety

    ratings = tuple(_int_list(args.rungs, "--rungs")) if args.rungs else ()
    result = ladder_variety(Path(args.file), find_stockfish(args.engine), ratings=ratings, games=args.games,
                            selfplay=args.selfplay, selfplay_plies=args.selfplay_plies, good_cp=args.good_cp,
                            seed=args.seed, progress=not args.quiet)
    print(result.format())
    if args.json:
        result.save(Path(args.json))
        print(f"wrote {args.json}")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: comma-separated integers") from None


def _cmd_games_label(args: argparse.Namespace) -> int:
    from chessdt.stockfish.engine import find_stockfish
    from chessdt.stockfish.label import LabelConfig, calibrate, label

    cfg = LabelConfig(nodes=args.nodes, blunder_cp=args.blunder_cp)
    engine = find_stockfish(args.engine)
    if args.fit:
        if not args.calibration:
            raise UserError("games label --fit: say where to save the fit with --calibration FILE.json")
        fit = calibrate(Path(args.input), Path(args.calibration), engine, cfg, games=args.games,
                        workers=args.workers, progress=not args.quiet,
                        rows_out=Path(args.fit_rows) if args.fit_rows else None)
        print(fit.format())
        return 0
    if not args.out:
        raise UserError("games label: --out is required (or --fit to fit a calibration)")
    summary = label(Path(args.input), Path(args.out), engine, cfg,
                    calibration=Path(args.calibration) if args.calibration else None,
                    workers=args.workers, progress=not args.quiet)
    print(summary.format())
    return 0


def _cmd_games_download(args: argparse.Namespace) -> int:
    from chessdt.data.download import download_lichess

    path = download_lichess(args.month, Path(args.out), base_url=args.base_url, progress=not args.quiet)
    print(f"downloaded and verified {path}")
    return 0


def _add_engine_games_parsers(gsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = gsub.add_parser("generate", help="Stockfish-vs-Stockfish games over a ladder of strengths (resumable)")
    p.add_argument("--out", required=True, help="output .pgn.zst (appended to; an interrupted run resumes)")
    p.add_argument("--games", type=int, required=True, help="total games wanted in the file")
    p.add_argument("--rungs", help="comma-separated rungs: RATING (UCI_Elo), RATING:skill=K, RATING:full, "
                                   "RATING:eps=P (full strength, a uniformly random legal move with probability P), "
                                   "RATING:softmax=T[,gate=C][,eps=P] (samples exp((score - best) / T) over Stockfish's "
                                   "scores of every legal move, NODES per move scored), "
                                   "each optionally /NODES (default 1350,1475,1600,1725,1850,1975/2000,2100:full)")
    p.add_argument("--nodes", type=int, default=1000, help="node limit per move (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="fixes pairings, colours and start lines")
    p.add_argument("--workers", type=int, default=0, help="engine processes (default: one per core)")
    p.add_argument("--hash-mb", type=int, default=16, help="hash per engine in MB")
    p.add_argument("--max-plies", type=int, default=300, help="draw adjudicated after this many plies")
    p.add_argument("--adjudicate-cp", type=int, default=800, help="win adjudication threshold (centipawns)")
    p.add_argument("--adjudicate-moves", type=int, default=3,
                   help="consecutive own moves at the threshold to adjudicate (0 = play to the end)")
    p.add_argument("--book", help="optional Polyglot opening book")
    p.add_argument("--book-plies", type=int, default=8, help="plies taken from the book")
    p.add_argument("--start-lines", help="optional file of start lines (SAN or UCI moves, one line each)")
    p.add_argument("--engine", help="Stockfish binary (default: stockfish on PATH, then /usr/games/stockfish)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_games_generate)

    p = gsub.add_parser("ladder", help="check a ladder file: score vs rating difference between rungs")
    p.add_argument("files", nargs="+", help="ladder .pgn.zst/.pgn files")
    p.set_defaults(func=_cmd_games_ladder)

    p = gsub.add_parser("variety", help="softmax ladder: does each rung choose among good moves? (entropy of its "
                                        "first moves in the file, of its exact policy, distinct self-play lines)")
    p.add_argument("file", help="a `games generate` file with softmax rungs")
    p.add_argument("--rungs", help="comma-separated ratings of the rungs to measure (default: every softmax rung)")
    p.add_argument("--games", type=int, default=40, help="games per rung whose positions are scored (default 40)")
    p.add_argument("--selfplay", type=int, default=400, help="self-play games per rung (default 400; 0 = skip)")
    p.add_argument("--selfplay-plies", type=int, default=10, help="plies after which self-play lines are compared")
    p.add_argument("--good-cp", type=int, default=50, help="good moves: within this many cp of the best (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seeds the self-play games")
    p.add_argument("--json", help="also write the table as JSON here")
    p.add_argument("--engine", help="Stockfish binary (default: stockfish on PATH, then /usr/games/stockfish)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_games_variety)

    p = gsub.add_parser("label", help="engine quality tags per player: ACPL, accuracy, blunders, engine Elo")
    p.add_argument("input", help="PGN file (.pgn, .gz, .bz2, .zst)")
    p.add_argument("--out", help="output .pgn.zst or .pgn (resumes an interrupted run)")
    p.add_argument("--calibration", help="calibration JSON: read for labeling, written with --fit")
    p.add_argument("--fit", action="store_true", help="fit the Elo calibration on INPUT's rated games")
    p.add_argument("--games", type=int, default=1000, help="games used by --fit")
    p.add_argument("--fit-rows", help="with --fit: also save the measured features (JSON) for refits")
    p.add_argument("--nodes", type=int, default=5000, help="node budget per analysed position")
    p.add_argument("--blunder-cp", type=int, default=300, help="centipawn loss that counts as a blunder")
    p.add_argument("--workers", type=int, default=0, help="engine processes (default: one per core)")
    p.add_argument("--engine", help="Stockfish binary (default: stockfish on PATH, then /usr/games/stockfish)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_games_label)

    p = gsub.add_parser("download", help="download a Lichess monthly dump with resume and sha256 check")
    p.add_argument("source", choices=["lichess"], help="where from")
    p.add_argument("month", help="YYYY-MM")
    p.add_argument("--out", default=".", help="directory to write into")
    p.add_argument("--base-url", default="https://database.lichess.org/standard/",
                   help="where the dump and sha256sums.txt live")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_games_download)
