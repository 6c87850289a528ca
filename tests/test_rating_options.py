"""The rating-conditioning options of issue 27: the rating at the output (model.rating_film) and an
auxiliary head that reads the mover's rating off the last hidden state (model.rating_head)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chessdt.config import ModelConfig
from chessdt.model import GPT, RATING_CENTRE, RATING_SCALE, param_count
from chessdt.tokenizer import Vocab

VOCAB = Vocab()
BASE = dict(n_layer=2, n_head=2, d_model=32, context=48)


def inputs(white: int | None, black: int | None, batch: int = 2, length: int = 12) -> tuple[torch.Tensor, ...]:
    """Rows of <bos>, White's and Black's rating token, then moves; boards empty, plies counting moves."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 1968, (batch, length), generator=g)
    tokens[:, 0] = VOCAB.bos
    tokens[:, 1], tokens[:, 2] = VOCAB.rating_token(white), VOCAB.rating_token(black)
    boards = torch.zeros(batch, length, 64, dtype=torch.uint8)
    plies = (torch.arange(length) - 2).clamp(min=0).expand(batch, length).contiguous()
    return tokens, boards, plies


@pytest.mark.parametrize("features", [{"rating_film": True}, {"rating_head": True},
                                      {"rating_film": True, "rating_head": True, "rating_every": True}])
def test_param_count_is_exact(features: dict[str, bool]) -> None:
    cfg = ModelConfig(**BASE, **features)  # type: ignore[arg-type]
    assert param_count(cfg, VOCAB.size) == GPT(cfg, VOCAB.size, VOCAB).num_params()


def test_options_start_as_the_model_without_them() -> None:
    """Zero-initialised and built off the global generator: the same weights and outputs at step 0."""
    tokens, boards, plies = inputs(1200, 2400)
    torch.manual_seed(5)
    plain = GPT(ModelConfig(**BASE), VOCAB.size, VOCAB).eval()  # type: ignore[arg-type]
    torch.manual_seed(5)
    both = GPT(ModelConfig(**BASE, rating_film=True, rating_head=True), VOCAB.size, VOCAB).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        torch.testing.assert_close(both(tokens, boards, plies), plain(tokens, boards, plies))


def test_film_makes_the_output_depend_on_the_mover_rating_and_caches() -> None:
    model = GPT(ModelConfig(**BASE, rating_film=True), VOCAB.size, VOCAB).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        model.rating_film.weight.normal_(0, 0.5)
        low, high = inputs(1200, 1800), inputs(2400, 1800)  # only White's rating differs
        a, b = model(*low), model(*high)
        white_to_move = (low[2] % 2 == 0) & (torch.arange(12) >= 2)
        assert (a - b)[white_to_move].abs().max() > 1e-2  # the output layer sees the mover's rating
        cache = model.new_cache(2, 48)
        parts = [model(low[0][:, :4], low[1][:, :4], low[2][:, :4], cache)]
        parts += [model.step(low[0][:, t], cache, low[1][:, t], low[2][:, t])[:, None] for t in range(4, 12)]
        torch.testing.assert_close(torch.cat(parts, 1), a, atol=1e-4, rtol=1e-4)


def test_rating_head_loss_reads_the_mover_rating_and_skips_unknown_ones() -> None:
    model = GPT(ModelConfig(**BASE, rating_head=True), VOCAB.size, VOCAB).train()  # type: ignore[arg-type]
    tokens, boards, plies = inputs(1200, 2400)
    model(tokens, boards, plies)
    loss = model.last_rating_loss
    assert loss is not None
    # the head starts at 0: the loss is the mean square of the standardised targets, half White's, half Black's
    z = [(r + 50 - RATING_CENTRE) / RATING_SCALE for r in (1200, 2400)]  # the middle of the 100-point bucket
    n_white = int((plies[0] % 2 == 0).sum())
    expected = (n_white * z[0] ** 2 + (12 - n_white) * z[1] ** 2) / 12
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert model.rating_head.bias.grad is not None and float(model.rating_head.bias.grad.abs()) > 0
    # a rating dropped for guidance is no target: only Black's positions count
    tokens[:, 1] = VOCAB.unknown_rating
    model(tokens, boards, plies)
    assert model.last_rating_loss is not None
    assert float(model.last_rating_loss.detach()) == pytest.approx(z[1] ** 2, rel=1e-5)
    tokens[:, 2] = VOCAB.unknown_rating
    model(tokens, boards, plies)
    assert model.last_rating_loss is not None and float(model.last_rating_loss.detach()) == 0.0
    model.eval()
    model.last_rating_loss = None
    with torch.no_grad():
        model(tokens, boards, plies)
    assert model.last_rating_loss is None  # nothing computed outside training


def test_training_with_both_options_learns_and_reloads(tmp_path_factory: pytest.TempPathFactory) -> None:
    from conftest import _tiny_trained

    from chessdt.checkpoint import load_model

    path: Path = _tiny_trained(tmp_path_factory, "model.rating_film=true", "model.rating_head=true",
                               "train.rating_weight=1.0")
    model, cfg, _ = load_model(path)
    assert cfg.model.rating_film and cfg.model.rating_head
    assert float(model.rating_film.weight.detach().abs().max()) > 0  # trained away from its zero start
    assert float(model.rating_head.weight.detach().abs().max()) > 0
