"""The model as a move chooser: prompts of a Prompted model, cached sessions against full recomputation."""

from __future__ import annotations

import chess
import pytest
import torch

from chessdt.errors import UserError
from chessdt.play.policy import MoveStats, Prompted, Sampling, Session
from tiny_policy import tiny_policy


def test_prompted_prompts_each_colour_as_a_winner() -> None:
    policy = tiny_policy(label="elo+outcome")
    v = policy.vocab
    model = Prompted(policy, 1800, 1200)
    assert model.prompt(chess.WHITE) == [v.bos, v.rating_token(1800), v.rating_token(1200), v.result_token("1-0")]
    assert model.prompt(chess.BLACK) == [v.bos, v.rating_token(1200), v.rating_token(1800), v.result_token("0-1")]
    same = Prompted(policy, 1800)  # no opponent rating: the same as its own
    assert same.prompt(chess.BLACK)[1:3] == [v.rating_token(1800)] * 2
    assert policy.prompt_len == 4
    assert Prompted(policy, 1800, 1200) == model and Prompted(policy, 1800, 1300) != model
    assert model.name == "tiny0(rating=1800, T=1.0, top_p=1.0)"
    assert Prompted(policy, None, None, Sampling(guidance=2.0)).name == "tiny0(rating=None, T=1.0, top_p=1.0, w=2.0)"


def test_session_steps_match_full_recomputation_with_guidance() -> None:
    policy = tiny_policy(context=24)
    prompts = [Prompted(policy, r).prompt(chess.WHITE) for r in (1000, 2400)]
    session = Session(policy, prompts, guidance=1.5)
    uncond = [policy.vocab.unknown_rating] * 2
    rng = torch.Generator().manual_seed(0)
    for ply in range(24 - 3):  # every ply that fits in the context (past it the session re-encodes)
        for g, prompt in enumerate(prompts):
            board = session.boards[g]
            cond = policy.logits_full(board, prompt)
            free = policy.logits_full(board, [prompt[0], *uncond])
            want = cond + 1.5 * (cond - free)
            assert torch.allclose(session.logits[g], want, atol=1e-4), ply
        moves = policy.choose(session.logits, session.boards, Sampling(mask_illegal=True), rng)
        session.push(list(moves))


def test_choose_counts_and_replaces_illegal_samples() -> None:
    policy = tiny_policy()
    board = chess.Board()
    logits = torch.full((1, 1968), -10.0)
    logits[0, policy.vocab.encode_move(chess.Move.from_uci("e2e5"))] = 10.0  # an illegal favourite
    logits[0, policy.vocab.encode_move(chess.Move.from_uci("d2d4"))] = 5.0  # the best legal move
    stats = MoveStats()
    gen = torch.Generator().manual_seed(0)
    move = policy.choose(logits, [board], Sampling(temperature=0.0), gen, stats)[0]
    assert move == chess.Move.from_uci("d2d4") and (stats.moves, stats.illegal, stats.masked) == (1, 1, 0)
    move = policy.choose(logits, [board], Sampling(temperature=0.0, mask_illegal=True), gen, stats)[0]
    assert move == chess.Move.from_uci("d2d4") and (stats.moves, stats.illegal, stats.masked) == (2, 1, 1)
    assert stats.illegal_rate == pytest.approx(0.5)


def test_sampling_is_checked_once_and_is_the_one_distribution() -> None:
    for bad in (dict(temperature=1e-300), dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5),
                dict(guidance=float("nan"))):
        with pytest.raises(UserError):
            Sampling(**bad)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    legal = torch.tensor([[False, True, True, True]])
    raw = Sampling(temperature=0.5).probabilities(logits)
    assert torch.allclose(raw, torch.softmax(logits / 0.5, -1))
    masked = Sampling(mask_illegal=True).probabilities(logits, legal)
    assert masked[0, 0] == 0 and torch.allclose(masked.sum(), torch.tensor(1.0))
    nucleus = Sampling(top_p=0.5).probabilities(logits)  # the top move alone holds 0.64 >= 0.5
    assert torch.equal(nucleus, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    played = Sampling().played(logits, legal)  # the illegal draw goes to the best legal move
    p = torch.softmax(logits, -1)[0]
    assert played[0, 0] == 0 and float(played[0, 1]) == pytest.approx(float(p[0] + p[1]), abs=1e-6)
    lp = Sampling(temperature=0.5, mask_illegal=True).log_probabilities(logits, legal)
    assert torch.allclose(lp.exp(), Sampling(temperature=0.5, mask_illegal=True).probabilities(logits, legal), atol=1e-6)
    with pytest.raises(ValueError):
        Sampling(top_p=0.9).log_probabilities(logits, legal)
