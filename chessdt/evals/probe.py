"""Does a sequence model hold the board? A linear probe from the residual stream to the pieces, per layer.

On held-out game prefixes (teacher-forced, as the legality evaluation reads them), the residual
stream at the position that predicts move j is taken after the embeddings (layer 0) and after every
block; a ridge-regression probe maps it to the 64 squares' contents (empty, or one of the mover's or
the opponent's six piece types: 13 classes a square, read from the side to move, as Othello-GPT's
"mine / theirs" probes). Fitted on the positions of the first half of the games and scored on the
second half, next to the best constant guess per square. A pure-sequence model that plays legally
must track the board somewhere; a rule-fed one is handed it at the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import torch

from chessdt.evals.heldout import HeldOutGame, teacher_forced
from chessdt.evals.legality import input_line, model_inputs
from chessdt.evals.results import JsonResult, fmt
from chessdt.play.policy import ModelPolicy

CLASSES = 13  # empty, the mover's P N B R Q K, the opponent's P N B R Q K


def square_classes(board: chess.Board) -> torch.Tensor:
    """(64,) class of every square from the side to move: 0 empty, 1-6 the mover's pawn..king, 7-12 the opponent's.

    >>> square_classes(chess.Board())[[0, 4, 12, 28, 60]].tolist()
    [4, 6, 1, 0, 12]
    """
    out = torch.zeros(64, dtype=torch.long)
    for sq, piece in board.piece_map().items():
        out[sq] = piece.piece_type + (0 if piece.color == board.turn else 6)
    return out


@dataclass(frozen=True)
class ProbeLayer:
    """Held-out accuracy of the probe on one layer's residual stream."""

    layer: int  # 0 = after the embeddings, k = after block k
    accuracy: float  # share of (position, square) pairs classified right
    occupied: float  # the same over squares holding a piece


@dataclass(frozen=True)
class ProbeResult(JsonResult):
    inputs: str  # model_inputs of the probed model
    fit_positions: int
    test_positions: int
    baseline: float  # accuracy of the most common class per square (from the fitting positions)
    baseline_occupied: float
    layers: tuple[ProbeLayer, ...]

    def format(self) -> str:
        out = [input_line(self.inputs), "",
               f"Linear probe (ridge regression) from the residual stream to the 64 squares' contents, fitted on "
               f"{self.fit_positions:,} held-out positions, scored on {self.test_positions:,} positions of other games; "
               f"the best constant guess per square scores {fmt(self.baseline, 1, True)} "
               f"({fmt(self.baseline_occupied, 1, True)} on occupied squares)", "",
               "| layer | squares right | occupied squares right |", "|---:|---:|---:|"]
        for r in self.layers:
            out.append(f"| {'embeddings' if r.layer == 0 else f'block {r.layer}'} | {fmt(r.accuracy, 1, True)} | "
                       f"{fmt(r.occupied, 1, True)} |")
        return "\n".join(out) + "\n"


@torch.no_grad()
def residuals(policy: ModelPolicy, games: Sequence[HeldOutGame], positions: int) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
    """(per layer (N, d) residual vectors, (N, 64) square classes, game index of each row) for the
    first `positions` held-out positions, read with forward hooks on the model's blocks."""
    blocks = policy.model.blocks
    caught: list[torch.Tensor] = [torch.empty(0)] * (len(blocks) + 1)
    hooks = [blocks[0].register_forward_pre_hook(lambda _m, args: caught.__setitem__(0, args[0]))]
    for k, block in enumerate(blocks):
        hooks.append(block.register_forward_hook(lambda _m, _a, out, k=k: caught.__setitem__(k + 1, out)))
    feats: list[list[torch.Tensor]] = [[] for _ in caught]
    labels: list[torch.Tensor] = []
    owner: list[int] = []
    n = 0
    try:
        prompts = [policy.prompt(g.white, g.black, g.result) for g in games]
        for i, logits, _ in teacher_forced(policy, games, prompts, batch_size=1):  # one game a forward: its hooks
            m = min(len(logits), positions - n)
            if m <= 0:
                break
            p = len(prompts[i])
            for k, x in enumerate(caught):
                feats[k].append(x[0, p - 1 : p - 1 + m].float().cpu())  # (m, d)
            board = chess.Board()
            for j in range(m):
                labels.append(square_classes(board))
                board.push(games[i].moves[j])
            owner += [i] * m
            n += m
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(f) for f in feats], torch.stack(labels) if labels else torch.zeros(0, 64, dtype=torch.long), owner


def ridge_probe(x_fit: torch.Tensor, y_fit: torch.Tensor, x_test: torch.Tensor, ridge: float = 1e-2) -> torch.Tensor:
    """(N_test, 64) predicted classes: least squares from standardised features to one-hot square contents."""
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    a = torch.cat([(x_fit - mu) / sd, torch.ones(len(x_fit), 1)], 1).double()  # (N, d + 1)
    target = torch.nn.functional.one_hot(y_fit, CLASSES).flatten(1).double()  # (N, 64 * 13)
    w = torch.linalg.solve(a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=a.dtype), a.T @ target)
    b = torch.cat([(x_test - mu) / sd, torch.ones(len(x_test), 1)], 1).double()
    return (b @ w).view(len(b), 64, CLASSES).argmax(-1)


def probe_board(policy: ModelPolicy, games: Sequence[HeldOutGame], positions: int = 4000,
                out: Path | None = None) -> ProbeResult:
    """Probe every layer; fit on the games holding the first half of the positions, test on the rest."""
    feats, labels, owner = residuals(policy, games, positions)
    if len(labels) < 4:
        raise ValueError("too few held-out positions to fit and test a probe")
    cut = owner.index(owner[len(owner) // 2]) if owner[len(owner) // 2] != owner[0] else len(owner) // 2
    y_fit, y_test = labels[:cut], labels[cut:]
    common = torch.mode(y_fit, dim=0).values  # (64,) most common class per square
    occ = y_test != 0

    def share(hit: torch.Tensor, where: torch.Tensor | None = None) -> float:
        h = hit if where is None else hit[where]
        return float(h.float().mean()) if h.numel() else math.nan

    base = common[None].expand_as(y_test) == y_test
    layers = []
    for k, x in enumerate(feats):
        hit = ridge_probe(x[:cut], y_fit, x[cut:]) == y_test
        layers.append(ProbeLayer(layer=k, accuracy=share(hit), occupied=share(hit, occ)))
    result = ProbeResult(inputs=model_inputs(policy.cfg.model), fit_positions=cut, test_positions=len(y_test),
                         baseline=share(base), baseline_occupied=share(base, occ), layers=tuple(layers))
    if out is not None:
        result.save(out)
    return result
