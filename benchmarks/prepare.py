"""Benchmark `chessdt prepare` end to end (read, filter, tokenize, write) against python-chess.

Both paths run in this one process on the same file, one core each, so the ratio holds on a
noisy shared machine. The python-chess reference parses a prefix of the file (it is ~50x slower);
its rate is games per second over that prefix.

    python benchmarks/prepare.py [../shared/data/lichess-2017.pgn.zst] [--reference-games 3000]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from chessdt.config import DataConfig
from chessdt.data.prepare import prepare

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "lichess-2017.pgn.zst"


def rate(path: Path, cfg: DataConfig, workers: int, limit_games: int = 0) -> tuple[float, int]:
    """Games/s through the whole pipeline (best of the repeats) and the number of games seen."""
    with tempfile.TemporaryDirectory() as tmp:
        src = path
        if limit_games:  # the reference is slow: give it the first N games as a plain file
            from chessdt.data.archives import CountingReader, byte_chunks, text_lines

            src = Path(tmp) / "head.pgn"
            n = 0
            with open(src, "w") as out:
                counter = CountingReader(open(path, "rb"))
                for line in text_lines(byte_chunks(path, counter)):
                    if line.startswith("[Event ") and n >= limit_games:
                        break
                    n += line.startswith("[Event ")
                    out.write(line + "\n")
                counter.close()
        start = time.perf_counter()
        summary = prepare([str(src)], Path(tmp) / "out", cfg, workers=workers, force=True, progress=False)
        seconds = time.perf_counter() - start
    return summary.games_seen / seconds, summary.games_seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", default=str(DEFAULT))
    ap.add_argument("--reference-games", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = Path(args.file)
    print(f"file: {path}")
    rows = []
    for boards in (False, True):
        cfg = DataConfig(boards=boards)
        fast = max(rate(path, cfg, workers=1)[0] for _ in range(args.repeats))
        ref, n_ref = rate(path, dataclasses.replace(cfg, reader="python-chess"), workers=1,
                          limit_games=args.reference_games)
        rows.append((boards, fast, ref, n_ref))
    print(f"{'boards':>6}  {'chessdt (rust), 1 core':>24}  {'python-chess reference':>24}  {'ratio':>6}")
    for boards, fast, ref, n_ref in rows:
        print(f"{str(boards):>6}  {fast:>18,.0f} games/s  {ref:>12,.0f} games/s ({n_ref} g)  {fast / ref:>6.1f}x")
    all_cores, n = rate(path, DataConfig(boards=False), workers=0)
    print(f"all cores, no boards: {all_cores:,.0f} games/s over {n:,} games")


if __name__ == "__main__":
    main()
