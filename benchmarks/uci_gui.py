"""`chessdt uci` as users run it: in cutechess-cli against Stockfish, and in lichess-bot's own test harness.

Not a CI test: it needs tools built or installed beforehand, and it downloads nothing.

* **cutechess-cli** (found on PATH or given with --cutechess; build it from its public source,
  github.com/cutechess/cutechess, e.g. with Debian's qt6-base-dev, qt6-5compat-dev, qt6-svg-dev and
  cmake: `cmake .. -DWITH_TESTS=OFF && make cli`): chessdt with the README's settings (Move Overhead
  100, Threads 1) against Stockfish (Threads 1, Hash 16) at `tc=10+0.1` and at `st=0.1` (`go movetime
  100`), --games each, colours alternating (Stockfish with a 1 s timemargin: it searches the whole
  movetime and would flag on a busy machine; chessdt with cutechess's default of none). Counted from cutechess's -debug log and its results:
  forfeits (losses on time, illegal moves, stalls, disconnects), the share of chessdt's bestmoves that
  were the model's own (not an `info string fallback`), and the share of its `info depth` lines that
  carry a score (a model with a value head sends one with every move).
* **lichess-bot** (a local checkout, --lichess-bot, with its requirements and test requirements
  installed in the Python given by --lichess-bot-python): its test harness (test_bot: the mocked
  lichess.org and `run_bot`) plays --bot-games games with chessdt as the bot (Black), Stockfish at a
  node budget as White in place of the harness's scripted opponent, and the engine block of
  lichess-bot's config.yml.default with the README's block merged over it (its default uci_options
  SyzygyPath, UCI_ShowWDL, Hash 512 ... stay). A game counts as played when it reaches its end on
  the board (or lichess-bot resigns it on chessdt's score: the mock lichess.org ignores a resignation,
  so the benchmark passes it on) with every chessdt move legal, within --game-timeout seconds.

--spinners busy processes (default 2, one per core of the project's machine) run throughout: the
issue's targets are for a loaded machine. The machine's load average is printed: on a shared
machine, say so beside the numbers.

    python benchmarks/uci_gui.py runs/quickstart --cutechess /path/to/cutechess-cli \\
        --lichess-bot /path/to/lichess-bot --lichess-bot-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README_OPTIONS = {"Move Overhead": 100, "Threads": 1}  # the README's cutechess line and lichess-bot block
FORFEITS = ("loses on time", "illegal move", "connection stalls", "disconnects", "terminates", "crash")


def spin() -> None:
    """Burn one core until killed."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def wilson(k: int, n: int) -> str:
    from chessdt.metrics import wilson_interval

    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {k / max(n, 1):.1%} [{lo:.1%}, {hi:.1%}]"


# -- cutechess-cli ------------------------------------------------------------------------------------
@dataclass
class Match:
    """What one cutechess-cli match showed."""

    time_control: str
    games: int  # finished games
    exit: int  # cutechess-cli's exit status
    forfeits: int  # games lost on time, by an illegal move, a stall or a disconnection
    reasons: list[str]  # the distinct endings
    moves: int  # chessdt's bestmoves with a move
    own: int  # of them, the model's own (no fallback announced)
    scored: int  # chessdt's `info depth` lines with a score
    info: int  # chessdt's `info depth` lines
    minutes: float


def cutechess_match(cutechess: str, chessdt: list[str], stockfish: str, time_control: str, games: int,
                    out: Path) -> Match:
    """Play `games` games in cutechess-cli at `time_control` ('tc=10+0.1' or 'st=0.1'); counts from its log."""
    name = time_control.replace("=", "").replace("+", "_")
    pgn = out / f"{name}.pgn"
    engine = ["-engine", "name=chessdt", f"cmd={chessdt[0]}"] + [f"arg={a}" for a in chessdt[1:]]
    engine += [f"option.{k}={v}" for k, v in README_OPTIONS.items()]
    # Stockfish searches the whole movetime, so on a busy machine it flags at st=0.1 with cutechess's
    # default timemargin of 0: it gets a margin, chessdt none (its forfeits are what is counted)
    command = [cutechess, *engine, "-engine", "name=stockfish", f"cmd={stockfish}", "option.Threads=1",
               "option.Hash=16", "timemargin=1000", "-each", "proto=uci", time_control, "-games", str(games),
               "-repeat", "-pgnout", str(pgn), "-debug", "all"]
    started = time.monotonic()
    run = subprocess.run(command, capture_output=True, text=True, cwd=out)
    log = run.stdout
    (out / f"{name}.log").write_text(log)
    results = re.findall(r"^Finished game \d+ \((.+?)\): (\S+) \{(.*)\}$", log, re.M)
    ours = [ln.split(": ", 1)[1] for ln in log.splitlines() if re.match(r"^\d+ <chessdt\(\d+\): ", ln)]
    bestmoves = [ln for ln in ours if ln.startswith("bestmove ") and not ln.startswith("bestmove 0000")]
    fallbacks = [ln for ln in ours if ln.startswith("info string fallback ")]
    depth = [ln for ln in ours if ln.startswith("info depth ")]
    return Match(time_control=time_control, games=len(results), exit=run.returncode,
                 forfeits=sum(any(f in reason for f in FORFEITS) for _, _, reason in results),
                 reasons=sorted({reason for _, _, reason in results}),
                 moves=len(bestmoves), own=len(bestmoves) - len(fallbacks),
                 scored=sum(" score " in ln for ln in depth), info=len(depth),
                 minutes=(time.monotonic() - started) / 60)


# -- lichess-bot --------------------------------------------------------------------------------------
def lichess_bot_game(args: argparse.Namespace) -> int:
    """One game in lichess-bot's harness (run by lichess-bot's Python, in its checkout): exit 0 if played.

    Imports nothing of chessdt: chessdt is the engine lichess-bot starts from the config's wrapper script.
    """
    import importlib
    import logging

    import chess

    importlib.import_module("pytest")  # test_bot.test_bot refuses to be imported outside pytest
    sys.path.insert(0, os.getcwd())
    yaml = importlib.import_module("yaml")
    harness = importlib.import_module("test_bot.test_bot")
    mock = importlib.import_module("test_bot.lichess").Lichess
    # The mock lichess.org ignores a resignation, and the game would wait for a move forever: pass it on
    setattr(mock, "resign", lambda self, game_id: self.move_queue.put("resign"))

    wrapper, stockfish, pgn_dir = Path(args.wrapper), args.stockfish, args.pgn_dir
    played: list[bool] = []
    # Stockfish started here, before lichess-bot forks its workers: a process started from a thread
    # while another thread forks can wait forever for its exec (the fork inherits the exec-status pipe);
    # spoken to over plain pipes
    sf = subprocess.Popen([stockfish], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def stockfish_white(move_queue: Any, board_queue: Any, clock_queue: Any, results: Any) -> None:
        """White: Stockfish at a node budget; the bot's clock as the harness keeps it (10+0.1)."""
        board = chess.Board()
        clock = {chess.WHITE: 10.0, chess.BLACK: 10.0}
        inc = datetime.timedelta(seconds=0.1)

        def publish() -> None:
            board_queue.put(board.copy())
            clock_queue.put((datetime.timedelta(seconds=clock[chess.WHITE]),
                             datetime.timedelta(seconds=clock[chess.BLACK]), inc))

        legal, resigned = True, False

        def ask(line: str, until: str) -> str:
            assert sf.stdin is not None and sf.stdout is not None
            sf.stdin.write(line + "\n")
            while not (answer := sf.stdout.readline()).startswith(until):
                if not answer:
                    raise RuntimeError("Stockfish exited")
            return answer

        ask("uci", "uciok")
        try:
            while not board.is_game_over() and legal:
                if board.turn == chess.WHITE:
                    moves = " ".join(m.uci() for m in board.move_stack)
                    best = ask(f"position startpos moves {moves}\ngo nodes {args.nodes}", "bestmove")
                    board.push(chess.Move.from_uci(best.split()[1]))
                    publish()
                    asked = time.monotonic()
                else:
                    while (move := move_queue.get()) is None:  # the bot reconnected: tell it the game again
                        publish()
                        move_queue.task_done()
                    move_queue.task_done()
                    if move == "resign":  # lichess-bot resigned on chessdt's score
                        resigned = True
                        break
                    if len(board.move_stack) > 1:  # as on lichess.org, the clocks start after the first moves
                        clock[chess.BLACK] += 0.1 - (time.monotonic() - asked)
                    legal = move in board.legal_moves
                    if legal:
                        board.push(move)
        finally:
            assert sf.stdin is not None
            sf.stdin.write("quit\n")
            sf.stdin.flush()
            sf.wait(10)
        print(f"GAME ENDED: {'resigned' if resigned else 'illegal move' if not legal else board.result()} "
              f"after {len(board.move_stack)} plies", flush=True)
        over = resigned or board.is_game_over()
        if not legal or resigned:  # end the stream: the harness stops on a finished board
            board = chess.Board("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1")
        if not legal or resigned or board.turn == chess.WHITE:  # else White's last board went out already:
            publish()  # every board put is read once (run_bot joins the queues)
        played.append(legal and over)
        results.put(played[-1])

    with open("config.yml.default") as f:
        config = yaml.safe_load(f)
    config["token"] = ""
    config["pgn_directory"] = pgn_dir
    engine = config["engine"]
    engine.update({"dir": str(wrapper.parent), "name": wrapper.name, "protocol": "uci", "ponder": True})
    engine["uci_options"] = {**engine["uci_options"], **README_OPTIONS, "UCI_LimitStrength": True,
                             "UCI_Elo": 1800, "Temperature": "0.8",  # the README's block over the defaults
                             "Seed": args.seed}  # one game per seed: Stockfish at a node budget plays the same moves
    engine["draw_or_resign"].update({"resign_enabled": True, "resign_score": -1000, "resign_moves": 3,
                                     "offer_draw_enabled": True, "offer_draw_score": 40, "offer_draw_moves": 10,
                                     "offer_draw_pieces": 10})
    setattr(harness, "lichess_org_simulator", stockfish_white)  # run_bot starts it as the opponent
    harness.run_bot(config, logging.INFO)
    return 0 if played and played[-1] else 1


def lichess_bot_games(args: argparse.Namespace, chessdt: list[str], stockfish: str, out: Path) -> dict[str, float]:
    """--bot-games games, each in a fresh lichess-bot process; how many were played to the end."""
    wrapper = out / "chessdt-engine.sh"
    wrapper.write_text("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in chessdt) + ' "$@"\n')
    wrapper.chmod(0o755)
    played, evals, resigned, started = 0, 0, 0, time.monotonic()
    for game in range(args.bot_games):
        pgn_dir = out / f"lichess-bot-game-{game}"
        command = [args.lichess_bot_python, str(Path(__file__).resolve()), "--lichess-bot-game",
                   "--wrapper", str(wrapper), "--stockfish", stockfish, "--pgn-dir", str(pgn_dir),
                   "--nodes", str(args.nodes), "--seed", str(game)]
        log = out / f"lichess-bot-game-{game}.log"
        with open(log, "w") as sink:  # its own session: a game that hangs is killed with all its processes
            proc = subprocess.Popen(command, cwd=args.lichess_bot, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                played += proc.wait(timeout=args.game_timeout) == 0
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                sink.write(f"\ntimed out after {args.game_timeout:.0f} s\n")
        evals += sum("%eval" in p.read_text() for p in pgn_dir.glob("*.pgn"))
        resigned += "GAME ENDED: resigned" in log.read_text(errors="replace")
    return {"games": args.bot_games, "played": played, "resigned": resigned, "pgn with [%eval]": evals,
            "minutes": (time.monotonic() - started) / 60}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default="runs/quickstart", help="checkpoint or run directory")
    ap.add_argument("--cutechess", default=shutil.which("cutechess-cli"), help="cutechess-cli (default: on PATH)")
    ap.add_argument("--games", type=int, default=20, help="cutechess games per time control (default 20)")
    ap.add_argument("--time-controls", default="tc=10+0.1,st=0.1", help="cutechess time controls")
    ap.add_argument("--lichess-bot", help="a lichess-bot checkout (skipped when absent)")
    ap.add_argument("--lichess-bot-python", help="the Python with lichess-bot's (test) requirements")
    ap.add_argument("--bot-games", type=int, default=5, help="lichess-bot games (default 5)")
    ap.add_argument("--game-timeout", type=float, default=300, help="seconds a lichess-bot game may take")
    ap.add_argument("--nodes", type=int, default=2000, help="Stockfish's nodes per move in lichess-bot games")
    ap.add_argument("--spinners", type=int, default=2, help="busy processes throughout (default 2)")
    ap.add_argument("--out", default="runs/uci-gui", help="logs and PGNs (default runs/uci-gui)")
    # the lichess-bot side of one game (run by --lichess-bot-python in the checkout)
    ap.add_argument("--lichess-bot-game", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--wrapper", help=argparse.SUPPRESS)
    ap.add_argument("--stockfish", help="Stockfish (default: chessdt's search for it)")
    ap.add_argument("--pgn-dir", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.lichess_bot_game:
        return lichess_bot_game(args)

    from chessdt.checkpoint import resolve_checkpoint
    from chessdt.stockfish.engine import find_stockfish

    checkpoint = resolve_checkpoint(args.checkpoint).resolve()
    stockfish = args.stockfish or str(find_stockfish())
    chessdt = [str(Path(sys.executable).with_name("chessdt")), "uci", str(checkpoint)]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.spinners)]
    for p in spinners:
        p.start()
    rows: list[Match] = []
    bot = None
    try:
        if args.cutechess:
            for tc in args.time_controls.split(","):
                rows.append(cutechess_match(args.cutechess, chessdt, stockfish, tc, args.games, out))
        bot = (lichess_bot_games(args, chessdt, stockfish, out)
               if args.lichess_bot and args.lichess_bot_python else None)
    finally:
        for p in spinners:
            p.kill()
            p.join()
    print(f"chessdt uci {checkpoint} ({', '.join(f'{k} {v}' for k, v in README_OPTIONS.items())}), "
          f"{args.spinners} spinners, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    for r in rows:
        print(f"cutechess {r.time_control}: {r.games} games (exit {r.exit}, {r.minutes:.1f} min), "
              f"forfeits {r.forfeits}; model's own moves {wilson(r.own, r.moves)}; "
              f"info lines with a score {r.scored}/{r.info}; endings: {'; '.join(r.reasons)}")
    if bot is not None:
        print(f"lichess-bot (defaults + README block): {bot['played']:.0f} of {bot['games']:.0f} games played "
              f"({bot['resigned']:.0f} resigned by lichess-bot on chessdt's score) "
              f"({bot['minutes']:.1f} min), {bot['pgn with [%eval]']:.0f} PGNs with [%eval]")
    elif not args.cutechess:
        print("neither cutechess-cli nor lichess-bot given: nothing run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
