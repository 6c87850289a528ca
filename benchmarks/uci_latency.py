"""Move latency of `chessdt uci` under `go movetime`, idle and on a machine kept busy, through python-chess,
and the share of answers that were the model's own move (not the fallback).

The engine runs as a GUI runs it (`chessdt uci CKPT` in its own process, driven by python-chess's
engine API, as lichess-bot does) with Threads 1 and the README's Move Overhead (100 ms, lichess-bot's
default; --overhead). Each move is timed from the `go` line leaving the client to the `bestmove`
line reaching it. The engine plays White against a random mover in the client (one side per
engine, as in a real game); a finished game starts over.

Phases in one run: idle (a baseline), then loaded (one spinning process per CPU core, started
after the engine's warm-up). The table gives p50/p99/max against the budget, how many answers
were late, how many were the fallback move (announced by the engine as `info string fallback
...`), the share of the model's own moves with its 95% Wilson interval, and the ratio of loaded
to idle p50/p99. The machine's load average at the end is printed: on a shared machine, say so.

    python benchmarks/uci_latency.py                   # a random-init model of the default size
    python benchmarks/uci_latency.py runs/quickstart   # a trained checkpoint or run directory
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import chess
import chess.engine
import torch

from chessdt.checkpoint import save_checkpoint
from chessdt.config import Config
from chessdt.metrics import wilson_interval
from chessdt.model import GPT
from chessdt.tokenizer import Vocab

README_MOVE_OVERHEAD = 100  # ms: the README's engine blocks (lichess-bot's default)


def spin() -> None:
    """Burn one core until killed."""
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


def random_checkpoint(directory: Path) -> Path:
    """A random-init model of the default size, saved as a checkpoint (the benchmark's default)."""
    torch.manual_seed(0)
    cfg = Config(name="bench")
    vocab = Vocab(cfg.data.rating_bucket)
    return save_checkpoint(directory / "step_0000000", GPT(cfg.model, vocab.size, vocab), cfg, vocab,
                           step=0, tokens_seen=0)


def latencies(engine: chess.engine.SimpleEngine, moves: int, movetime_ms: int) -> tuple[list[float], int]:
    """Milliseconds per `go movetime`, and how many answers were the fallback (the model was late).

    A fallback is the only info line of its answer (`info string fallback N of M moves: ...`); the
    model's own move ends with `info depth 1 ... string p=...`: python-chess keeps the last string."""
    board = chess.Board()
    rng = random.Random(0)
    times: list[float] = []
    emergency = 0
    for _ in range(moves):
        if board.is_game_over() or len(board.move_stack) >= 200:
            board = chess.Board()
        start = time.perf_counter()
        result = engine.play(board, chess.engine.Limit(time=movetime_ms / 1000), info=chess.engine.INFO_ALL)
        times.append(1000 * (time.perf_counter() - start))
        emergency += str(result.info.get("string", "")).startswith("fallback")
        assert result.move is not None and result.move in board.legal_moves
        board.push(result.move)
        if not board.is_game_over():
            board.push(rng.choice(list(board.legal_moves)))
    return times, emergency


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", help="checkpoint or run directory (default: random-init default-size model)")
    ap.add_argument("--moves", type=int, default=200, help="timed moves per phase (default 200)")
    ap.add_argument("--movetime", type=int, default=100, help="go movetime, ms (default 100)")
    ap.add_argument("--overhead", type=int, default=README_MOVE_OVERHEAD,
                    help=f"the engine's Move Overhead, ms (default {README_MOVE_OVERHEAD}, the README's)")
    ap.add_argument("--spinners", type=int, default=os.cpu_count() or 2,
                    help="busy processes in the loaded phase (default: one per core)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or str(random_checkpoint(Path(tmp)))
        rows = {}
        with chess.engine.SimpleEngine.popen_uci([sys.executable, "-m", "chessdt", "uci", ckpt], timeout=600) as engine:
            engine.configure({"Move Overhead": args.overhead, "Threads": 1})
            overhead = args.overhead
            engine.ping()  # isready: the engine warms up before answering
            rows["idle"] = latencies(engine, args.moves, args.movetime)
            spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.spinners)]
            for p in spinners:
                p.start()
            try:
                time.sleep(1.0)  # let the scheduler see the load
                rows[f"loaded ({args.spinners} spinners)"] = latencies(engine, args.moves, args.movetime)
            finally:
                for p in spinners:
                    p.kill()
                    p.join()
    print(f"chessdt uci {Path(ckpt).name if args.checkpoint else 'random-init default size'}: "
          f"go movetime {args.movetime}, Move Overhead {overhead}, "
          f"{args.moves} moves per phase, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'phase':<22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'late':>6} {'fallback':>8} "
          f"{'model own moves [95%]':>24}")
    for name, (times, emergency) in rows.items():
        late = sum(t > args.movetime for t in times)
        own = len(times) - emergency
        lo, hi = wilson_interval(own, len(times))
        print(f"{name:<22} {statistics.median(times):8.1f} {percentile(times, 0.99):8.1f} {max(times):8.1f} "
              f"{late:6d} {emergency:8d} {own / len(times):9.1%} [{lo:.1%}, {hi:.1%}]")
    (idle, _), (loaded, _) = rows.values()
    print(f"loaded / idle: p50 {statistics.median(loaded) / statistics.median(idle):.2f}x, "
          f"p99 {percentile(loaded, 0.99) / percentile(idle, 0.99):.2f}x; budget {args.movetime} ms")
    return 0 if percentile(loaded, 0.99) <= args.movetime else 1


if __name__ == "__main__":
    sys.exit(main())
