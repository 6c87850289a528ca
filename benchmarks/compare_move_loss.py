"""Next-move loss of two checkpoints on the same held-out games, paired, with a 95% bootstrap over games.

The instrument for "did the value head change the move predictions": train the same config with and
without ``model.value_head`` (same seed, same fixed step schedule: ``train.schedule_by_time = false``)
and compare the checkpoints of equal step on the run's held-out games.

    python benchmarks/compare_move_loss.py runs/qs-plain/checkpoints/step_0000150 \\
        runs/qs-value/checkpoints/step_0000150 runs/qs-data --games 300
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F

from chessdt.evals.heldout import load_games, teacher_forced_logits
from chessdt.play.policy import ModelPolicy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="checkpoint A (e.g. without a value head)")
    ap.add_argument("b", help="checkpoint B (e.g. with one)")
    ap.add_argument("games", help="held-out games: prepared data dir (val split) or PGN file")
    ap.add_argument("--games", dest="n", type=int, default=300, help="how many games (default 300)")
    ap.add_argument("--bootstrap", type=int, default=2000, help="resamples of the games (default 2000)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    games = load_games(args.games, args.n)
    sums, counts = [], np.zeros(len(games))
    for path in (args.a, args.b):
        pol = ModelPolicy.from_checkpoint(path)
        prompts = [pol.prompt(g.white, g.black) for g in games]
        s = np.zeros(len(games))
        for i, logits in teacher_forced_logits(pol, games, prompts, batch_size=32):
            targets = torch.tensor([pol.vocab.encode_move(m) for m in games[i].moves[: len(logits)]])
            s[i] = float(F.cross_entropy(logits, targets, reduction="sum"))
            counts[i] = len(targets)
        sums.append(s)
    a, b = sums
    idx = np.random.default_rng(0).integers(0, len(games), size=(args.bootstrap, len(games)))
    diff = (b[idx].sum(1) - a[idx].sum(1)) / counts[idx].sum(1)
    lo, hi = np.quantile(diff, [0.025, 0.975])
    n = counts.sum()
    print(f"{len(games)} games, {int(n):,} positions: next-move loss A {a.sum() / n:.4f}, B {b.sum() / n:.4f}, "
          f"B - A {(b.sum() - a.sum()) / n:+.4f} (95% interval {lo:+.4f} .. {hi:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
