"""Moves/s of batched, KV-cached model play against naive one-game-at-a-time full recomputation.

Both sides use the same model in the same process, from the standard start, sampling at
temperature 1 with `ModelPolicy.choose` (so legality handling costs the same):

* naive: one game at a time; every ply runs the whole game so far through the model
  (`ModelPolicy.logits_full`), as a straightforward sampler does;
* batched: `--games` games in lockstep through one `Session`: one cached forward step per ply
  for all of them (how the evaluators play).

Rounds alternate so that load from other processes hits both alike; the medians give moves/s and
the ratio batched / naive (target >= 10).

    python benchmarks/batched_play.py                      # a random-init model of the default size
    python benchmarks/batched_play.py runs/human-small     # a trained checkpoint or run directory
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import chess
import torch

from chessdt.config import Config
from chessdt.model import GPT
from chessdt.play.policy import ModelPolicy, MoveStats, Sampling, Session
from chessdt.tokenizer import Vocab


def naive_moves_per_s(policy: ModelPolicy, plies: int, rating: int, seed: int) -> float:
    """One game of `plies` half-moves, recomputing the whole game at every ply."""
    gen = torch.Generator().manual_seed(seed)
    board = chess.Board()
    moves = 0
    start = time.perf_counter()
    for _ in range(plies):
        if board.is_game_over():
            break
        prompt = policy.player_prompt(board.turn, rating, None)
        logits = policy.logits_full(board, prompt)
        board.push(policy.choose(logits[None], [board], Sampling(), gen, MoveStats())[0])
        moves += 1
    return moves / (time.perf_counter() - start)


def batched_moves_per_s(policy: ModelPolicy, games: int, plies: int, rating: int, seed: int) -> float:
    """`games` games of `plies` half-moves in lockstep through one cached Session."""
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    session = Session(policy, [policy.prompt(rating, rating)] * games)
    moves = 0
    for _ in range(plies):
        live = [i for i, b in enumerate(session.boards) if not b.is_game_over()]
        if not live:
            break
        chosen = policy.choose(session.logits[live], [session.boards[i] for i in live], Sampling(), gen, MoveStats())
        step: list[chess.Move | None] = [None] * games
        for i, m in zip(live, chosen):
            step[i] = m
        session.push(step)
        moves += len(live)
    return moves / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", help="checkpoint or run directory (default: random-init default-size model)")
    ap.add_argument("--games", type=int, default=64, help="games in the batched session (default 64, the evals' batch size)")
    ap.add_argument("--plies", type=int, default=80, help="half-moves per game (default 80)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--rating", type=int, default=1500, help="prompted rating (default 1500)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        policy = ModelPolicy.from_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        cfg = Config(name="bench")
        policy = ModelPolicy(GPT(cfg.model, Vocab(cfg.data.rating_bucket).size), Vocab(cfg.data.rating_bucket), cfg,
                             model_id="random-init")
    m = policy.cfg.model
    print(f"model {policy.model_id}: {policy.model.num_params() / 1e6:.1f}M parameters, {m.n_layer} layers, "
          f"d_model {m.d_model}, context {m.context}; {args.games} games x {args.plies} plies; "
          f"{args.threads} thread(s)")
    naive, batched = [], []
    for r in range(args.rounds):
        naive.append(naive_moves_per_s(policy, args.plies, args.rating, seed=r))
        batched.append(batched_moves_per_s(policy, args.games, args.plies, args.rating, seed=r))
    n, b = statistics.median(naive), statistics.median(batched)
    print(f"naive one-game full recompute: {n:8.1f} moves/s")
    print(f"batched KV-cached session:     {b:8.1f} moves/s")
    print(f"ratio batched / naive:         {b / n:8.1f}x (target >= 10x)")
    return 0 if b / n >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
