"""Fit a value head on the frozen trunk of a trained checkpoint (a linear probe), and save the result.

Training the value head jointly (``model.value_head = true``) is the real thing; this is what fits in
a few CPU-seconds when a whole training run does not: the trunk's last hidden states (after the final
LayerNorm, what the value head reads) at every position of the first N training games of a prepared
set, and a multinomial logistic regression from them to the game's result for the side to move.
The checkpoint written is the original one with ``model.value_head = true`` and the fitted head, so
``chessdt eval value`` and ``chessdt uci`` treat it as any model with a value head (its move
predictions are exactly the original's).

    python benchmarks/value_probe.py runs/quickstart runs/qs-data runs/qs-probe --games 300
    chessdt eval value runs/qs-probe --games runs/qs-data
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from chessdt.checkpoint import load_model, save_checkpoint
from chessdt.data.shards import PreparedData
from chessdt.model import GPT
from chessdt.rules import WHITE_RESULTS, result_class
from chessdt.tokenizer import game_inputs


def features(model: GPT, data: PreparedData, n_games: int, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, d) hidden states and (positions,) outcome classes of the first n_games training games."""
    import chess

    split, vocab, P = data.splits["train"], data.vocab, data.prefix_len
    assert split.results is not None, "prepare the set again: it has no results"
    captured: list[torch.Tensor] = []
    hook = model.ln_f.register_forward_hook(lambda mod, inp, out: captured.append(out))
    xs, ys = [], []
    rows = [i for i in range(min(n_games, split.n_games)) if split.results[i] >= 0]
    for start in range(0, len(rows), batch):
        idx = rows[start : start + batch]
        prompts, boards, counts, results = [], [], [], []
        for i in idx:
            tokens = split.game(i)
            board = chess.Board()
            moves = [vocab.decode_move(int(t)) for t in tokens[P:] if vocab.is_move(int(t))]
            n = min(len(moves), model.cfg.context - P + 1)
            for m in moves[: max(n - 1, 0)]:
                board.push(m)
            prompts.append([int(t) for t in tokens[:P]])  # the stored prefix: the game's own ratings
            boards.append(board)
            counts.append(n)
            results.append(WHITE_RESULTS[int(split.results[i])])
        t, b, p = (torch.as_tensor(a) for a in game_inputs(prompts, boards, model.cfg.context, vocab))
        captured.clear()
        with torch.no_grad():
            model(t, b, p)
        h = captured[0]
        for r, (n, result) in enumerate(zip(counts, results)):
            xs.append(h[r, P - 1 : P - 1 + n])
            ys.append(torch.tensor([result_class(result, chess.WHITE if j % 2 == 0 else chess.BLACK)
                                    for j in range(n)]))
    hook.remove()
    return torch.cat(xs), torch.cat(ys)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="trained checkpoint or run directory (without a value head)")
    ap.add_argument("data", help="prepared data set with results (its train split)")
    ap.add_argument("out", help="checkpoint directory to write")
    ap.add_argument("--games", type=int, default=300, help="training games whose positions fit the head")
    ap.add_argument("--steps", type=int, default=300, help="full-batch Adam steps")
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base, cfg, vocab = load_model(args.checkpoint)
    data = PreparedData.open(args.data)
    x, y = features(base, data, args.games)
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], 3)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=args.weight_decay)
    for _ in range(args.steps):
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y)
        loss.backward()
        opt.step()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, value_head=True))
    model = GPT(cfg.model, vocab.size, vocab)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert set(missing) == {"value_head.weight", "value_head.bias"} and not unexpected
    model.value_head.load_state_dict(head.state_dict())
    out = save_checkpoint(Path(args.out) / "checkpoints" / "best", model, cfg, vocab, step=0, tokens_seen=0,
                          extra={"value_probe": {"from": str(args.checkpoint), "games": args.games,
                                                 "positions": len(y), "train_loss": float(loss.detach())}})
    print(f"fitted on {len(y):,} positions of {args.games} games: train cross-entropy {float(loss.detach()):.4f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
