"""Tokens/s of chessdt's training step against a minimal plain-PyTorch GPT step of identical shape.

Both run in the same process on the same random batches (B x T from the config's batch_tokens and
context), interleaved round by round so that load from other processes hits both alike; the
median step time of each gives tokens/s, and the ratio ours / plain must be >= 1.0.

The plain step is what a from-scratch nanoGPT-style loop does: token + position embeddings,
pre-norm blocks (LayerNorm with bias, SDPA, GELU MLP), tied head, fp32, torch.optim.AdamW with
its defaults. Ours is chessdt.model.GPT as configured (board input and move features included)
with the training loop's choices: fused AdamW, the configured precision, and torch.compile if set.

    python benchmarks/train_throughput.py experiments/human-small.toml [--set train.precision=bf16]

With ``--data DIR`` (a prepared set) it instead times whole training steps on real batches, batch
assembly included, two ways in the same run: boards replayed from the moves when a batch is drawn
(chessdt since prepared format 2) against the stated baseline of the format-1 path, boards read per
token from a stored (tokens, 64) array (held in memory here, so the baseline pays no disk reads);
the ratio replayed / stored is the target (>= 0.90):

    python benchmarks/train_throughput.py experiments/quickstart.toml --data /tmp/qs-data
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import numpy as np

from chessdt.config import Config, ModelConfig, load_config
from chessdt.data.batches import Batch, Batcher
from chessdt.data.boards import replay
from chessdt.data.shards import PreparedData
from chessdt.model import GPT
from chessdt.tokenizer import NUM_MOVES, Vocab
from chessdt.train import autocast_for


class PlainBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.attn(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList([PlainBlock(cfg.d_model, cfg.n_head) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.ln_f(x) @ self.wte.weight.T


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="experiments/human-small.toml")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds (median over them)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    ap.add_argument("--data", help="a prepared set: time real batches, replayed boards vs stored boards")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if args.data:
        return data_paths(cfg, PreparedData.open(args.data), args.rounds, args.steps)
    vocab = Vocab(rating_bucket=cfg.data.rating_bucket)
    T = cfg.model.context
    B = max(1, cfg.train.batch_tokens // T)
    torch.manual_seed(0)
    tokens = torch.randint(0, NUM_MOVES, (B, T))
    targets = torch.randint(0, NUM_MOVES, (B, T))
    boards = torch.randint(0, 13, (B, T, 64), dtype=torch.uint8)
    plies = torch.arange(T).expand(B, T).contiguous()
    device = torch.device("cpu")

    ours = GPT(cfg.model, vocab.size)
    fwd = torch.compile(ours) if cfg.train.compile else ours
    opt_ours = torch.optim.AdamW(ours.optimizer_groups(cfg.train.weight_decay), lr=1e-4, fused=True)
    plain = PlainGPT(cfg.model, vocab.size)
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-4)

    def step_ours() -> None:
        with autocast_for(device, cfg.train.precision):
            logits = fwd(tokens, boards, plies)
        F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1)).backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_plain() -> None:
        logits = plain(tokens)
        F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1)).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        opt_plain.step()
        opt_plain.zero_grad(set_to_none=True)

    def timed(fn: Callable[[], None]) -> float:
        t = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return (time.perf_counter() - t) / args.steps

    for fn in (step_ours, step_plain):  # warm up (and compile)
        fn()
        fn()
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(args.rounds):
        times["ours"].append(timed(step_ours))
        times["plain"].append(timed(step_plain))
    tps = {k: B * T / statistics.median(v) for k, v in times.items()}
    print(f"shape: B={B} T={T} d={cfg.model.d_model} layers={cfg.model.n_layer} heads={cfg.model.n_head}; "
          f"params ours {ours.num_params() / 1e6:.2f}M, plain "
          f"{sum(p.numel() for p in plain.parameters()) / 1e6:.2f}M; threads {torch.get_num_threads()}; "
          f"precision {cfg.train.precision}; compile {cfg.train.compile}")
    print(f"ours : {tps['ours']:10,.0f} tokens/s")
    print(f"plain: {tps['plain']:10,.0f} tokens/s")
    ratio = tps["ours"] / tps["plain"]
    print(f"ratio: {ratio:.2f}")
    return 0 if ratio >= 1.0 else 1


def stored_boards(data: PreparedData, split: str) -> np.ndarray:
    """(tokens, 64) uint8: the board after every token, laid out as format 1 stored it."""
    sp, P = data.splits[split], data.prefix_len
    n_moves = np.diff(sp.offsets) - P - 1
    body = np.ones(len(sp.tokens), bool)
    body[(sp.offsets[:-1, None] + np.arange(P)).ravel()] = False
    body[sp.offsets[1:] - 1] = False  # <end>
    rows = replay(np.asarray(sp.tokens[body], np.int64), np.concatenate([[0], np.cumsum(n_moves)]))
    game = np.repeat(np.arange(sp.n_games), np.diff(sp.offsets))
    k = np.arange(len(sp.tokens)) - sp.offsets[game]  # position in the game
    row = sp.offsets[game] - game * (P + 1) + game + np.clip(k - P + 1, 0, n_moves[game])
    return rows[row]


def stored_batch(b: Batcher, stored: np.ndarray, ids: np.ndarray, key: tuple[int, ...]) -> Batch:
    """The format-1 batch: tokens as today, boards copied per token from the stored array."""
    plain = b.batch(ids, dropout_key=key)
    boards = np.zeros((*plain.tokens.shape, 64), np.uint8)
    P, off = b.prefix_len, b.split.offsets
    for r, (g, s, n_in) in enumerate(b.segs[ids]):
        base = int(off[g])
        boards[r, :P] = stored[base + P + s - 1] if s > 0 else stored[base : base + P]
        boards[r, P:n_in] = stored[base + P + s : base + P + s + n_in - P]
    return Batch(tokens=plain.tokens, targets=plain.targets, boards=torch.from_numpy(boards), plies=plain.plies,
                 n_real=plain.n_real, values=plain.values)


def data_paths(cfg: Config, data: PreparedData, rounds: int, steps: int) -> int:
    """Tokens/s of whole training steps (batch + forward + backward + update), boards replayed vs stored."""
    tc, mc = cfg.train, cfg.model
    replayed = Batcher(data, "train", mc.context, tc.batch_tokens, True, tc.cond_dropout, tc.seed, mc.value_head)
    plain = Batcher(data, "train", mc.context, tc.batch_tokens, False, tc.cond_dropout, tc.seed, mc.value_head)
    stored = stored_boards(data, "train")
    plan = replayed.epoch_plan(0)
    # the two paths give the same boards
    for i in range(3):
        a, b = replayed.batch(plan[i], (0, 0, i)), stored_batch(plain, stored, plan[i], (0, 0, i))
        assert a.boards is not None and b.boards is not None and torch.equal(a.boards, b.boards)
    torch.manual_seed(0)
    model = GPT(mc, data.vocab.size)
    opt = torch.optim.AdamW(model.optimizer_groups(tc.weight_decay), lr=1e-4, fused=True)
    device = torch.device("cpu")
    counter = {"i": 0}

    def step(batch_of: Callable[[np.ndarray, tuple[int, ...]], Batch]) -> int:
        i = counter["i"] % len(plan)
        counter["i"] += 1
        b = batch_of(plan[i], (0, 0, i))
        with autocast_for(device, tc.precision):
            if mc.value_head:
                logits, vlogits = model(b.tokens, b.boards, b.plies, with_value=True)
            else:
                logits = model(b.tokens, b.boards, b.plies)
        F.cross_entropy(logits.float().view(-1, logits.size(-1)), b.targets.view(-1), ignore_index=-100).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return b.n_real

    paths: dict[str, Callable[[np.ndarray, tuple[int, ...]], Batch]] = {
        "replayed": lambda ids, key: replayed.batch(ids, dropout_key=key),
        "stored": lambda ids, key: stored_batch(plain, stored, ids, key)}
    for fn in paths.values():
        step(fn)
    tps: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}  # tokens per CPU-second (all threads): steadier under load
    for r in range(rounds):
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            counter["i"] = r * steps  # both paths run the same batches in a round
            t, c = time.perf_counter(), time.process_time()
            n = sum(step(paths[name]) for _ in range(steps))
            tps[name].append(n / (time.perf_counter() - t))
            cpu[name].append(n / (time.process_time() - c))
    # batch assembly alone, in CPU time: what the replay adds to a step
    build: dict[str, float] = {}
    for name, fn in paths.items():
        c = time.process_time()
        for i in range(min(len(plan), 30)):
            fn(plan[i], (0, 0, i))
        build[name] = (time.process_time() - c) / min(len(plan), 30)
    med = {k: statistics.median(v) for k, v in tps.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratio = med["replayed"] / med["stored"]
    per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(tps["replayed"], tps["stored"]))
    per_round_cpu = ", ".join(f"{a / b:.2f}" for a, b in zip(cpu["replayed"], cpu["stored"]))
    print(f"data {data.path}: {data.splits['train'].n_games:,} train games; batch_tokens {tc.batch_tokens}, context "
          f"{mc.context}, d={mc.d_model} layers={mc.n_layer}; threads {torch.get_num_threads()}; {rounds} rounds x "
          f"{steps} steps")
    print(f"stored boards (format 1): {med['stored']:10,.0f} real tokens/s")
    print(f"replayed boards:          {med['replayed']:10,.0f} real tokens/s")
    print(f"ratio replayed / stored: {ratio:.3f} (per round {per_round}; target >= 0.90)")
    print(f"per CPU-second: stored {med_cpu['stored']:,.0f}, replayed {med_cpu['replayed']:,.0f} tokens; ratio "
          f"{med_cpu['replayed'] / med_cpu['stored']:.3f} (per round {per_round_cpu})")
    print(f"batch assembly alone, CPU ms per batch: stored {1e3 * build['stored']:.1f}, replayed "
          f"{1e3 * build['replayed']:.1f}")
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
