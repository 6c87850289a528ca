"""Variety measures: line bootstrap, exact per-position distributions, the simulated quantilizer, good moves."""

import math

import chess
import numpy as np
import pytest

import fake_uci
from chessdt.evals.variety import (ScoredPosition, line_bootstrap, line_variety, model_distribution, position_values,
                                   position_variety, quantilizer_distribution, sample_positions, score_position)
from chessdt.play.policy import Prompted, Sampling
from chessdt.stockfish.engine import Engine
from tiny_policy import tiny_policy

M = chess.Move.from_uci


def test_line_bootstrap_brackets_the_plug_in_entropy():
    lines = [("e2e4", "e7e5")] * 50 + [("d2d4", "d7d5")] * 50
    v, draws = line_variety(lines, 2, 400, seed=1)
    assert v.entropy.value == pytest.approx(1.0) and v.distinct.value == 2 and v.games == 100
    assert v.entropy.lo < 1.0 <= v.entropy.hi and 0.9 < v.entropy.lo
    assert len(draws) == 400
    same, distinct = line_bootstrap([("e2e4",)] * 30, 1, 50)
    assert np.all(same == 0) and np.all(distinct == 1)
    # lines shorter than k are left out; none left -> nan
    assert np.all(np.isnan(line_bootstrap([("e2e4",)], 2, 5)[0]))


def test_quantilizer_distribution_matches_best_of_k_and_the_base():
    base = {M("e2e4"): 0.1, M("d2d4"): 0.6, M("g1f3"): 0.3}
    scores = {M("e2e4"): 50.0, M("d2d4"): 0.0, M("g1f3"): -30.0}
    k = 4
    best_of_k = quantilizer_distribution(base, scores, k, 1 / k, draws=20000, seed=3)
    # best of k draws is e2e4 unless none of the k draws is e2e4
    expected = 1 - 0.9 ** k
    assert best_of_k[M("e2e4")] == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / 20000))
    assert best_of_k.get(M("g1f3"), 0.0) == pytest.approx(0.3 ** k, abs=0.01)  # only when all draws are g1f3
    whole = quantilizer_distribution(base, scores, k, 1.0, draws=20000, seed=3)
    for m, p in base.items():  # q = 1 keeps every draw: the base distribution
        assert whole[m] == pytest.approx(p, abs=0.015)


def test_position_values_are_exact_on_a_hand_made_position():
    pos = ScoredPosition(chess.Board(), {M("e2e4"): 40.0, M("d2d4"): 30.0, M("a2a3"): -100.0})
    dist = {M("e2e4"): 0.25, M("d2d4"): 0.25, M("a2a3"): 0.5}
    (entropy, mass, good_entropy, loss), = position_values([dist], [pos], good_cp=50)
    assert entropy == pytest.approx(1.5) and mass == pytest.approx(0.5) and good_entropy == pytest.approx(1.0)
    assert loss == pytest.approx(0.25 * 0 + 0.25 * 10 + 0.5 * 140)
    pv, draws = position_variety(np.array([[1.0, 0.5, 1.0, 70.0]] * 5), [pos] * 5, 50, 20)
    assert pv.entropy.value == pv.entropy.lo == pv.entropy.hi == 1.0 and pv.good_moves == 2 and draws.shape == (20, 4)


def test_model_distribution_is_what_the_model_plays():
    policy = tiny_policy(context=64)
    board = chess.Board()
    board.push_uci("e2e4")
    greedy = model_distribution(Prompted(policy, 1500, None, Sampling(temperature=0.0, mask_illegal=True)), board)
    assert len(greedy) == 1 and next(iter(greedy.values())) == 1.0 and next(iter(greedy)) in board.legal_moves
    warm = model_distribution(Prompted(policy, 1500, None, Sampling(temperature=1.0, mask_illegal=True)), board)
    assert set(warm) == set(board.legal_moves) and sum(warm.values()) == pytest.approx(1.0, abs=1e-5)
    guided = model_distribution(Prompted(policy, 1500, None, Sampling(guidance=2.0, mask_illegal=True)), board)
    assert max(abs(guided[m] - warm[m]) for m in warm) > 1e-4  # guidance changes the distribution


def test_positions_are_scored_for_every_legal_move(tmp_path):
    from conftest import random_game
    from chessdt.evals.heldout import HeldOutGame

    games = [HeldOutGame(tuple(random_game(i, max_plies=40).mainline_moves()), 1500, 1500) for i in range(6)]
    boards = sample_positions(games, 4, seed=0, min_ply=4, max_ply=30)
    assert 1 <= len(boards) <= 4 and all(4 <= b.ply() < 30 for b in boards)
    with Engine(fake_uci.command()) as engine:
        scored = [score_position(engine, b, nodes=10) for b in boards]
    for b, s in zip(boards, scored):
        assert set(s.scores) == set(b.legal_moves)
        assert s.best == max(s.scores.values()) and s.good(0) <= set(b.legal_moves)
