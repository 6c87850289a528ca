"""Tokens/s of chessdt's training step against a minimal plain-PyTorch GPT step of identical shape.

Both run in the same process on the same random batches (B x T from the config's batch_tokens and
context), interleaved round by round so that load from other processes hits both alike; the
median step time of each gives tokens/s, and the ratio ours / plain must be >= 1.0.

The plain step is what a from-scratch nanoGPT-style loop does: token + position embeddings,
pre-norm blocks (LayerNorm with bias, SDPA, GELU MLP), tied head, fp32, torch.optim.AdamW with
its defaults. Ours is chessdt.model.GPT as configured (board input and move features included)
with the training loop's choices: fused AdamW, the configured precision, and torch.compile if set.

    python benchmarks/train_throughput.py experiments/human-small.toml [--set train.precision=bf16]
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

from chessdt.config import ModelConfig, load_config
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
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
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


if __name__ == "__main__":
    sys.exit(main())
