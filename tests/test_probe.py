"""The board probe: the ridge probe on synthetic features, the residual stream read from a tiny model."""

from __future__ import annotations

import chess
import pytest
import torch

from chessdt.evals.heldout import HeldOutGame
from chessdt.evals.probe import CLASSES, probe_board, residuals, ridge_probe, square_classes
from tiny_policy import tiny_policy

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ridge_probe_reads_a_board_that_is_there_and_not_one_that_is_not() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, CLASSES, (3000, 64), generator=gen)
    there = torch.nn.functional.one_hot(y, CLASSES).flatten(1).float() + 0.1 * torch.randn(3000, 64 * CLASSES, generator=gen)
    assert (ridge_probe(there[:2500], y[:2500], there[2500:]) == y[2500:]).float().mean() > 0.99
    noise = torch.randn(3000, 32, generator=gen)
    assert (ridge_probe(noise[:2500], y[:2500], noise[2500:]) == y[2500:]).float().mean() < 0.15  # chance is 1/13


def test_residuals_line_up_with_the_positions(games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    feats, labels, owner = residuals(policy, games, 150)
    assert len(feats) == policy.cfg.model.n_layer + 1 and all(f.shape == (150, policy.cfg.model.d_model) for f in feats)
    assert torch.equal(labels[0], square_classes(chess.Board()))  # row 0 predicts the first move: the start
    g = games[0]
    assert torch.equal(labels[5], square_classes(g.board(5)))
    assert owner[: len(g.moves)] == [0] * min(len(g.moves), 150)
    result = probe_board(policy, games, 150)
    assert result.fit_positions + result.test_positions == 150 and len(result.layers) == 2
    assert result.format().startswith("**Model inputs: rule features (")
