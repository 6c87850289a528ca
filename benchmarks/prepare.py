"""Benchmark `chessdt prepare` end to end (read, filter, tokenize, dedupe, write): games/s with one
worker and with every core, the ratio to a python-chess reference, peak memory, bytes per token.

Every prepare runs in a fresh process (so its peak memory is its own), one worker count after the
other in each round, so load from other processes hits both alike; rates are medians over the
rounds and the ratios are taken within this one run. The python-chess reference (the same pipeline
with ``data.reader = "python-chess"``, one worker) parses a prefix of the file: it is ~30x slower.
Memory is the peak over the run of the proportional set size (PSS: shared pages split between the
processes that share them) summed over the prepare process and its workers, and the main process's
own peak RSS.

    python benchmarks/prepare.py [FILE] [--reference-games 3000] [--rounds 3]
    python benchmarks/prepare.py --make /tmp/big.pgn.zst --games 1000000   # the shared Lichess file,
        # repeated with a distinct Site per copy (never commit it)
    python benchmarks/prepare.py --scaling /tmp/big-100k.pgn.zst /tmp/big.pgn.zst   # memory vs games
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "lichess-2017.pgn.zst"


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def _pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else 0


def run_one(src: Path, workers: int, reader: str = "rust") -> dict[str, float]:
    """One prepare in a fresh process: its games/s, games, tokens, bytes on disk and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--one", str(src), str(Path(tmp) / "out"), str(workers), reader]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        peak = [0]

        def poll() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], sum(_pss_kib(p) for p in _tree(proc.pid)))
                time.sleep(0.05)

        t = threading.Thread(target=poll)
        t.start()
        out, _ = proc.communicate()
        t.join()
        if proc.returncode:
            raise SystemExit(f"prepare failed: {' '.join(cmd)}")
        result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        result["peak_pss_mib"] = peak[0] / 1024
        return result


def _one(src: str, out: str, workers: int, reader: str) -> None:
    """The child: prepare and print one JSON line."""
    import resource

    from chessdt.config import DataConfig
    from chessdt.data.prepare import prepare

    def cpu(who: int) -> float:
        u = resource.getrusage(who)
        return u.ru_utime + u.ru_stime

    main0, workers0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    s = prepare([src], Path(out), DataConfig(reader=reader), workers=workers, progress=False)  # type: ignore[arg-type]
    main_cpu, workers_cpu = cpu(resource.RUSAGE_SELF) - main0, cpu(resource.RUSAGE_CHILDREN) - workers0
    # what the run would take with a core per process and no other load: the busiest of the main
    # process and the workers' share, or all of it spread over the cores
    idle_s = max(main_cpu, workers_cpu / workers, (main_cpu + workers_cpu) / len(os.sched_getaffinity(0))) \
        if workers > 1 else main_cpu
    tokens = sum(s.tokens.values())
    disk = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    print(json.dumps({"games_per_s": s.games_seen / s.seconds, "games": s.games_seen, "kept": sum(s.games.values()),
                      "tokens": tokens, "bytes": disk, "bytes_per_token": disk / tokens, "seconds": s.seconds,
                      "main_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "cpu_s": main_cpu + workers_cpu, "main_cpu_s": main_cpu, "idle_games_per_s": s.games_seen / idle_s}))


def head(path: Path, games: int, dest: Path) -> Path:
    """The first `games` games of a file, as a plain PGN file."""
    from chessdt.data.archives import CountingReader, byte_chunks, text_lines

    n = 0
    with open(dest, "w") as out:
        counter = CountingReader(open(path, "rb"))
        for line in text_lines(byte_chunks(path, counter)):
            if line.startswith("[Event ") and n >= games:
                break
            n += line.startswith("[Event ")
            out.write(line + "\n")
        counter.close()
    return dest


def make(dest: Path, games: int, source: Path) -> None:
    """Write `games` games: `source`'s games over and over, each copy with its own Site URL."""
    import zstandard

    from chessdt.data.archives import CountingReader, byte_chunks

    counter = CountingReader(open(source, "rb"))
    text = b"".join(byte_chunks(source, counter)).decode("utf-8", "replace")
    counter.close()
    pieces = ["[" + p if i else p for i, p in enumerate(text.strip().split("\n\n["))]  # games (and their parts)
    site = re.compile(r'^\[Site "[^"\n]*"\]$', re.MULTILINE)
    with open(dest, "wb") as f, zstandard.ZstdCompressor(level=3).stream_writer(f) as z:
        n, copy = 0, 0
        while n < games:
            batch = []
            for i, p in enumerate(pieces[: games - n]):
                batch.append(site.sub(f'[Site "https://lichess.org/c{copy:03d}g{i:07d}"]', p, count=1))
            z.write(("\n\n".join(batch) + "\n\n").encode())
            n += len(batch)
            copy += 1
    print(f"wrote {dest}: {n:,} games ({dest.stat().st_size / 1e6:.0f} MB), {copy} copies of {source.name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default=str(DEFAULT))
    ap.add_argument("--reference-games", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="'all workers' (default: every core)")
    ap.add_argument("--make", metavar="DEST", help="write a big test file instead (see --games)")
    ap.add_argument("--games", type=int, default=1_000_000)
    ap.add_argument("--scaling", nargs="+", metavar="FILE", help="peak memory and rate on each file (all workers)")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        _one(args.one[0], args.one[1], int(args.one[2]), args.one[3])
        return
    if args.make:
        make(Path(args.make), args.games, Path(args.file))
        return
    print(f"cores {os.cpu_count()}, load average before {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          "(a shared machine: rates move with other users' load; ratios are within this run)")
    if args.scaling:
        rows = [(f, run_one(Path(f), args.workers)) for f in args.scaling]
        for f, r in rows:
            print(f"{Path(f).name}: {r['games']:,.0f} games, {r['tokens']:,.0f} tokens, {r['games_per_s']:,.0f} games/s "
                  f"with {args.workers} workers ({r['seconds']:.0f} s; CPU {1e6 * r['cpu_s'] / r['games']:.1f} us/game, "
                  f"main process {1e6 * r['main_cpu_s'] / r['games']:.1f}; {r['idle_games_per_s']:,.0f} games/s from CPU time), "
                  f"peak PSS {r['peak_pss_mib']:,.0f} MiB (main RSS {r['main_rss_mib']:,.0f} MiB), "
                  f"{r['bytes_per_token']:.2f} bytes/token on disk")
        if len(rows) > 1:
            a, b = rows[0][1], rows[-1][1]
            print(f"peak PSS ratio, {b['games']:,.0f} vs {a['games']:,.0f} games: {b['peak_pss_mib'] / a['peak_pss_mib']:.2f} "
                  f"(target within 1.20); main RSS ratio {b['main_rss_mib'] / a['main_rss_mib']:.2f}")
        print(f"load average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        return
    path = Path(args.file)
    print(f"file: {path}")
    with tempfile.TemporaryDirectory() as tmp:
        prefix = head(path, args.reference_games, Path(tmp) / "head.pgn")
        runs: dict[str, list[dict[str, float]]] = {"1": [], "all": [], "ref": []}
        for _ in range(args.rounds):
            runs["1"].append(run_one(path, 1))
            runs["all"].append(run_one(path, args.workers))
            runs["ref"].append(run_one(prefix, 1, "python-chess"))
    rate = {k: statistics.median(r["games_per_s"] for r in v) for k, v in runs.items()}
    idle = {k: statistics.median(r["idle_games_per_s"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(1e6 * r["cpu_s"] / r["games"] for r in v) for k, v in runs.items()}
    last = runs["all"][-1]
    print(f"games: {last['games']:,.0f} seen, {last['kept']:,.0f} kept, {last['tokens']:,.0f} tokens; "
          f"python-chess reference on the first {runs['ref'][0]['games']:,.0f}; medians of {args.rounds} rounds")
    print("wall: games/s as measured; cpu: from CPU time, what a core per process would give "
          "(max of the main process's CPU, the workers' CPU / workers and all CPU / cores)")
    print(f"{'':>22} {'wall games/s':>12} {'x p-c':>6} {'cpu games/s':>12} {'x p-c':>6} {'CPU us/game':>12} "
          f"{'peak PSS MiB':>13} {'main RSS MiB':>13}")
    for key, name in (("ref", "python-chess, 1 worker"), ("1", "chessdt, 1 worker"), ("all", f"chessdt, {args.workers} workers")):
        pss = max(r["peak_pss_mib"] for r in runs[key])
        rss = max(r["main_rss_mib"] for r in runs[key])
        print(f"{name:>22} {rate[key]:>12,.0f} {rate[key] / rate['ref']:>5.1f}x {idle[key]:>12,.0f} "
              f"{idle[key] / idle['ref']:>5.1f}x {cpu[key]:>12,.0f} {pss:>13,.0f} {rss:>13,.0f}")
    per_round = ", ".join(f"{a['games_per_s'] / b['games_per_s']:.2f}" for a, b in zip(runs["all"], runs["1"]))
    print(f"{args.workers} workers / 1 worker: wall {rate['all'] / rate['1']:.2f}x (per round: {per_round}); "
          f"cpu {idle['all'] / idle['1']:.2f}x")
    print(f"on disk: {last['bytes']:,.0f} bytes, {last['bytes_per_token']:.2f} bytes/token")
    print(f"load average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
