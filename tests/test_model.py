from __future__ import annotations

from pathlib import Path

import chess
import pytest
import torch

from chessdt.config import ModelConfig, load_config
from chessdt.features import MOVE_FACTS
from chessdt.model import FACT_SCALE, GPT, NUM_MOVES, PRIOR_SCALE, board_indices
from chessdt.tokenizer import board_array
from chessdt.tokenizer import Vocab

ROOT = Path(__file__).resolve().parents[1]
VOCAB = Vocab()
TINY = ModelConfig(n_layer=2, n_head=2, d_model=32, context=48)


def _inputs(B: int, T: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, NUM_MOVES, (B, T), generator=g)
    boards = torch.randint(0, 13, (B, T, 64), generator=g).to(torch.uint8)
    plies = torch.arange(T).expand(B, T) + torch.randint(0, 3, (B, 1), generator=g)
    return tokens, boards, plies


def _randomized(cfg: ModelConfig) -> GPT:
    torch.manual_seed(0)
    model = GPT(cfg, VOCAB.size).eval()
    with torch.no_grad():  # the move prior starts at zero; give it values so the test sees it
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("board", [True, False])
def test_cached_logits_equal_uncached(board: bool) -> None:
    cfg = ModelConfig(n_layer=2, n_head=2, d_model=32, context=48, board_input=board, board_head=board,
                      attack_features=board)
    model = _randomized(cfg)
    tokens, boards, plies = _inputs(3, 20)
    if not board:
        boards = plies = None  # type: ignore[assignment]
    with torch.no_grad():
        full = model(tokens, boards, plies)  # (3, 20, V)
        cache = model.new_cache(3, 32)
        # a 5-token prompt at once, then 4 tokens together, then one token per step
        parts = [model(tokens[:, :5], None if boards is None else boards[:, :5],
                       None if plies is None else plies[:, :5], cache)]
        parts.append(model(tokens[:, 5:9], None if boards is None else boards[:, 5:9],
                           None if plies is None else plies[:, 5:9], cache))
        for t in range(9, 20):
            step = model.step(tokens[:, t], cache, None if boards is None else boards[:, t],
                              None if plies is None else plies[:, t])
            parts.append(step[:, None])
    cached = torch.cat(parts, dim=1)
    assert cache.length == 20
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(full[:, 0], full[:, 1])  # positions differ: the test can fail


def test_cache_select_keeps_rows() -> None:
    model = _randomized(TINY)
    tokens, boards, plies = _inputs(3, 6)
    with torch.no_grad():
        full = model(tokens, boards, plies)
        cache = model.new_cache(3, 8)
        model(tokens[:, :5], boards[:, :5], plies[:, :5], cache)
        sub = cache.select(torch.tensor([0, 2]))
        last = model.step(tokens[[0, 2], 5], sub, boards[[0, 2], 5], plies[[0, 2], 5])
    torch.testing.assert_close(last, full[[0, 2], 5], atol=1e-4, rtol=1e-4)


def test_logits_depend_only_on_the_past() -> None:
    model = _randomized(TINY)
    tokens, boards, plies = _inputs(2, 12)
    other = tokens.clone()
    other[:, 8:] = (other[:, 8:] + 1) % NUM_MOVES
    with torch.no_grad():
        a, b = model(tokens, boards, plies), model(other, boards, plies)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_move_prior_matches_a_direct_lookup() -> None:
    model = _randomized(ModelConfig(n_layer=2, n_head=2, d_model=32, context=48, attack_features=False))
    board = chess.Board()
    for uci in ("e2e4", "e7e5", "g1f3"):
        board.push_uci(uci)
    boards = torch.from_numpy(board_array(board))[None, None]  # (1, 1, 64), black to move
    plies = torch.tensor([[3]])
    got = model.move_prior_logits(boards, plies)[0, 0]
    prior = model.move_prior.detach() * PRIOR_SCALE  # (turn, from/to, code, move)
    for uci in ("b8c6", "e5e4", "f3g5"):
        m = chess.Move.from_uci(uci)
        code = lambda sq: 0 if board.piece_at(sq) is None else (
            board.piece_at(sq).piece_type + (0 if board.piece_at(sq).color == chess.BLACK else 6))
        i = VOCAB.encode_move(m)
        want = prior[1, 0, code(m.from_square), i] + prior[1, 1, code(m.to_square), i]
        torch.testing.assert_close(got[i], want)


def test_board_indices_are_relative_to_the_side_to_move() -> None:
    board = torch.zeros(1, 2, 64, dtype=torch.uint8)
    board[0, :, chess.E2] = 1  # white pawn
    board[0, :, chess.E7] = 7  # black pawn
    idx = board_indices(board, torch.tensor([[0, 1]]))
    # white to move: the white pawn is "own pawn" (code 1); black to move: the black pawn is
    own = lambda sq: 1 + sq * 12 + 0
    opp = lambda sq: 1 + sq * 12 + 6
    assert idx[0, 0, chess.E2] == own(chess.E2) and idx[0, 0, chess.E7] == opp(chess.E7)
    assert idx[0, 1, chess.E7] == own(chess.E7) and idx[0, 1, chess.E2] == opp(chess.E2)
    assert idx[0, 0, chess.A1] == 0  # empty squares are the padding index


def test_context_overflow_is_an_error() -> None:
    model = GPT(TINY, VOCAB.size)
    tokens, boards, plies = _inputs(1, TINY.context + 1)
    with pytest.raises(ValueError, match="context"):
        model(tokens, boards, plies)


def test_board_input_required_when_configured() -> None:
    model = GPT(TINY, VOCAB.size)
    with pytest.raises(ValueError, match="boards"):
        model(torch.zeros(1, 3, dtype=torch.long))


def test_input_and_output_embeddings_are_tied() -> None:
    """One (V, d) table is both the input embedding and the output layer.

    A change of row 100 in a random direction (not a constant shift, which a bias-free LayerNorm
    hides) moves logit 100 at positions that never saw token 100 and leaves every other logit
    there as it was; at a position that reads token 100 it moves the other logits too. Tolerances:
    untouched logits are computed from identical inputs (at most float noise, < 1e-5), touched ones
    move by the dot product of a hidden state with the change, O(1) here (> 1e-2 is far from noise).
    """
    model = _randomized(TINY)
    tables = [n for n, p in model.named_parameters() if p.shape == model.tok_emb.weight.shape]
    assert tables == ["tok_emb.weight"]  # no separate output matrix
    tokens, boards, plies = _inputs(1, 4)
    tokens[tokens == 100] = 101
    tokens[0, 2] = 100  # positions 0-1 never see token 100; positions 2-3 read it
    direction = torch.randn(TINY.d_model, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(tokens, boards, plies)
        model.tok_emb.weight[100] += 0.5 * direction
        after = model(tokens, boards, plies)
    changed = (after - before).abs()[0]  # (T, V)
    others = torch.cat([changed[:2, :100], changed[:2, 101:]], dim=1)
    assert changed[:2, 100].min() > 1e-2  # the output side of the tie
    assert others.max() < 1e-5
    assert torch.cat([changed[2:, :100], changed[2:, 101:]], dim=1).max() > 1e-2  # the input side


def test_shipped_configs_have_the_promised_sizes() -> None:
    small = GPT(load_config(ROOT / "experiments" / "human-small.toml").model, VOCAB.size).num_params()
    gpu = GPT(load_config(ROOT / "experiments" / "gpu-25m.toml").model, VOCAB.size).num_params()
    assert 5e6 <= small <= 10e6
    assert 20e6 <= gpu <= 30e6


@pytest.mark.parametrize("fact,fen,uci", [
    ("pawn_push_onto_piece", "rnbqkbnr/pppp1ppp/8/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R b KQkq - 1 2", "e5e4"),
    ("castle_bad", "r3k2r/8/8/8/8/8/4R3/4K3 b kq - 0 1", "e8g8"),
    ("blocked", "rnbqkbnr/pppp1ppp/8/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R b KQkq - 1 2", "c8h3"),
])
def test_fact_weight_moves_exactly_the_moves_with_that_fact(fact: str, fen: str, uci: str) -> None:
    """With the piece prior at zero and one fact weight set, only moves with that fact move."""
    model = GPT(TINY, VOCAB.size).eval()
    board = chess.Board(fen)
    with torch.no_grad():
        model.fact_weights[MOVE_FACTS.index(fact)] = -0.1
    boards = torch.from_numpy(board_array(board))[None, None]
    plies = torch.tensor([[0 if board.turn == chess.WHITE else 1]])
    with torch.no_grad():
        prior = model.move_prior_logits(boards, plies)[0, 0]
    hit = VOCAB.encode_move(chess.Move.from_uci(uci))
    assert float(prior[hit]) == pytest.approx(-0.1 * FACT_SCALE)
    for m in board.legal_moves:  # no legal move carries a fact
        assert float(prior[VOCAB.encode_move(m)]) == 0.0, m.uci()


@pytest.mark.parametrize("size", [768, 50_000])  # the bincount and the index_add backward
def test_gather_gradient_equals_plain_indexing(size: int) -> None:
    from chessdt.model import _Gather

    g = torch.Generator().manual_seed(size)
    table = torch.randn(size, generator=g, requires_grad=True)
    index = torch.randint(0, size, (64, 300), generator=g)
    weights = torch.randn(64, 300, generator=g)
    (_Gather.apply(table, index) * weights).sum().backward()
    ours = table.grad.clone()
    table.grad = None
    (table[index] * weights).sum().backward()
    torch.testing.assert_close(ours, table.grad)


RATED = ModelConfig(n_layer=2, n_head=2, d_model=32, context=48, rating_every=True, rating_continuous=True)


def test_rating_every_position_cached_equals_uncached_and_reads_the_prefix() -> None:
    model = GPT(RATED, VOCAB.size, VOCAB).eval()
    with torch.no_grad():
        for p in (model.own_rating.weight, model.opp_rating.weight):
            p.normal_(0, 0.5)  # zero at init; give them values so the test sees them
    tokens, boards, plies = _inputs(2, 12)
    tokens[:, 0] = VOCAB.bos
    tokens[:, 1], tokens[:, 2] = VOCAB.rating_token(1500), VOCAB.rating_token(2000)
    plies[:, :3] = 0
    with torch.no_grad():
        full = model(tokens, boards, plies)
        cache = model.new_cache(2, 48)
        parts = [model(tokens[:, :4], boards[:, :4], plies[:, :4], cache)]
        parts += [model.step(tokens[:, t], cache, boards[:, t], plies[:, t])[:, None] for t in range(4, 12)]
        assert cache.ratings is not None and cache.ratings.shape == (2, 2, 32)
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)
        # the per-position term: White's and Black's vectors are the first two rating tokens of the row
        ratings = model.game_ratings(tokens, model.token_embeddings())
        torch.testing.assert_close(ratings[:, 0], model.rating_vectors(tokens[:, 1]))
        torch.testing.assert_close(ratings[:, 1], model.rating_vectors(tokens[:, 2]))
        outcome_first = tokens.clone()
        outcome_first[:, 1:4] = torch.tensor([VOCAB.result_token("1-0"), VOCAB.rating_token(1500),
                                              VOCAB.rating_token(2000)])
        torch.testing.assert_close(model.game_ratings(outcome_first, model.token_embeddings()), ratings)
        with pytest.raises(ValueError, match="cache holds no ratings"):
            stale = model.new_cache(2, 48)
            stale.length = 4  # positions that were fed without the ratings being kept
            model.step(tokens[:, 4], stale, boards[:, 4], plies[:, 4])


def test_continuous_rating_interpolates_between_anchors() -> None:
    model = GPT(RATED, VOCAB.size, VOCAB).eval()
    anchors = list(range(400, 3201, 200))
    with torch.no_grad():
        vec = model.rating_vectors(torch.tensor([VOCAB.rating_token(1900), VOCAB.unknown_rating, VOCAB.rating_token(100)]))
        a1800, a2000 = model.rating_emb[anchors.index(1800)], model.rating_emb[anchors.index(2000)]
    torch.testing.assert_close(vec[0], 0.25 * a1800 + 0.75 * a2000)  # bucket 1900's middle: 1950
    torch.testing.assert_close(vec[1], model.rating_emb_unknown.detach())
    torch.testing.assert_close(vec[2], model.rating_emb[0].detach() * 0.75 + model.rating_emb[1].detach() * 0.25)
    with pytest.raises(ValueError, match="need the vocabulary"):
        GPT(RATED, VOCAB.size)


@pytest.mark.parametrize("features", [
    {}, {"board_input": False, "board_head": False, "attack_features": False, "move_features": False},
    {"attack_features": False}, {"board_head": False}, {"rating_every": True, "rating_continuous": True},
    {"value_head": True, "mlp_ratio": 3}])
def test_param_count_is_exact_without_building(features: dict[str, object]) -> None:
    """The size check before allocating (issue 24, case 6) counts exactly what GPT builds."""
    from chessdt.model import param_count

    cfg = ModelConfig(n_layer=2, n_head=2, d_model=24, context=40, **features)  # type: ignore[arg-type]
    assert param_count(cfg, VOCAB.size) == GPT(cfg, VOCAB.size, VOCAB).num_params()


def test_a_model_too_big_for_memory_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24, case 6: model.n_layer=10**16 grew memory until the process was killed."""
    from chessdt import model as model_mod
    from chessdt.config import ConfigError

    with pytest.raises(ConfigError, match=r"needs about .* GiB to hold its weights, more than this machine's"):
        GPT(ModelConfig(n_layer=10**16, n_head=2, d_model=32, context=48), VOCAB.size)
    weights = model_mod.param_count(TINY, VOCAB.size) * 4
    monkeypatch.setattr(model_mod, "machine_memory", lambda: 3 * weights)  # holds the weights, not training's 4x
    assert GPT(TINY, VOCAB.size).num_params() * 4 == weights
    with pytest.raises(ConfigError, match="to train"):
        model_mod.check_fits(TINY, VOCAB.size, 4, "train")
