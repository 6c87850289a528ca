"""Metric functions against hand-computed values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from chessdt.metrics import (Z95, bootstrap_ratio, elo_difference, entropy_bits, expected_score, fit_elo, js_divergence,
                             mean_interval, normal_interval, paired_score, pearson, percentile_interval, ranks,
                             resample, resample_strata, slope, spearman, wilson_interval)

K = math.log(10) / 400


def test_expected_score_and_inverse() -> None:
    assert expected_score(0) == 0.5
    assert expected_score(400) == pytest.approx(10 / 11)
    for d in (-700.0, -123.0, 0.0, 55.5, 800.0):
        assert elo_difference(expected_score(d)) == pytest.approx(d)
    assert elo_difference(1.0) == math.inf and elo_difference(0.0) == -math.inf


def test_fit_one_free_player_against_an_anchor() -> None:
    # 3 wins and 1 loss against a 1000 anchor: p = 3/4, so d = 400 log10(3); the observed
    # information is n p (1 - p) K^2, so the 95% half-width is 1.96 / (K sqrt(4 * 3/16)).
    games = [("x", "a", 1.0)] * 3 + [("a", "x", 1.0)]
    fit = fit_elo(games, {"a": 1000})
    x = fit["x"]
    assert x.elo == pytest.approx(1000 + 400 * math.log10(3), abs=1e-6)
    half = Z95 / (K * math.sqrt(4 * 0.75 * 0.25))
    assert x.hi - x.elo == pytest.approx(half, rel=1e-6)
    assert x.elo - x.lo == pytest.approx(half, rel=1e-6)
    assert (x.games, x.points, x.anchored) == (4, 3.0, False)
    assert fit["a"].elo == 1000 and fit["a"].anchored and fit["a"].lo == fit["a"].hi == 1000


def test_fit_chain_and_draws() -> None:
    # B draws A (anchor 1000) twice and wins one, loses one: 50% -> 1000; C scores 3/4 vs B.
    games = [("A", "B", 0.5), ("B", "A", 0.5), ("A", "B", 1.0), ("B", "A", 1.0)]
    games += [("C", "B", 1.0), ("B", "C", 0.0), ("C", "B", 0.5), ("C", "B", 0.5), ("C", "B", 1.0), ("B", "C", 1.0)]
    fit = fit_elo(games, {"A": 1000})
    # C: 1 + 1 + 0.5 + 0.5 + 1 + 0 = 4 of 6; B has 2/4 vs A; the table is a tree, so each edge fits exactly.
    assert fit["B"].elo == pytest.approx(1000.0, abs=1e-6)
    assert fit["C"].elo == pytest.approx(1000 + elo_difference(4 / 6), abs=1e-6)


def test_fit_between_two_anchors_is_their_midpoint() -> None:
    games = [("x", "lo", 0.5)] * 5 + [("x", "hi", 0.5)] * 5
    fit = fit_elo(games, {"lo": 1000, "hi": 1400})
    assert fit["x"].elo == pytest.approx(1200.0, abs=1e-6)


def test_fit_perfect_score_infinite_without_prior_and_finite_with() -> None:
    games = [("x", "a", 1.0)] * 3
    assert fit_elo(games, {"a": 0})["x"].elo == math.inf
    # one virtual draw: 3.5 points of 4 -> 400 log10(7)
    assert fit_elo(games, {"a": 0}, virtual_draws=1.0)["x"].elo == pytest.approx(400 * math.log10(7), abs=1e-6)


def test_fit_unanchored_component_is_nan() -> None:
    fit = fit_elo([("a", "b", 1.0), ("b", "a", 1.0), ("c", "d", 1.0), ("d", "c", 0.5)], {"a": 1500})
    assert fit["b"].elo == pytest.approx(1500.0)
    assert math.isnan(fit["c"].elo) and math.isnan(fit["d"].elo)


def test_fit_group_cut_off_by_a_perfect_player() -> None:
    # x wins every game (+inf); y and z met only each other and x: without x, no path to the anchor
    games = [("x", "a", 1.0)] * 2 + [("x", "y", 1.0), ("y", "z", 1.0), ("z", "y", 1.0)]
    fit = fit_elo(games, {"a": 1000})
    assert fit["x"].elo == math.inf
    assert math.isnan(fit["y"].elo) and math.isnan(fit["z"].elo)
    # a pair that together beat everyone else: their ratings diverge to +inf
    games = [("p", "a", 1.0), ("q", "a", 1.0), ("p", "q", 1.0), ("q", "p", 1.0), ("a", "b", 0.5)]
    fit = fit_elo(games, {"a": 1000})
    assert fit["b"].elo == pytest.approx(1000.0) and fit["p"].elo == fit["q"].elo == math.inf


def test_fit_rejects_bad_rows() -> None:
    with pytest.raises(ValueError):
        fit_elo([("a", "b", 1.5)], {"a": 0})
    with pytest.raises(ValueError):
        fit_elo([("a", "a", 1.0)], {"a": 0})


def test_fit_recovers_simulated_ratings() -> None:
    rng = random.Random(3)
    true = {"anchor": 1500.0, "p": 1300.0, "q": 1700.0}
    games = []
    for _ in range(3000):
        a, b = rng.sample(sorted(true), 2)
        games.append((a, b, 1.0 if rng.random() < expected_score(true[a] - true[b]) else 0.0))
    fit = fit_elo(games, {"anchor": 1500})
    for name in ("p", "q"):
        est = fit[name]
        assert est.lo < true[name] < est.hi
        assert abs(est.elo - true[name]) < 60


def test_ranks_spearman_slope() -> None:
    assert ranks([3, 1, 2]).tolist() == [3.0, 1.0, 2.0]
    # d^2 = 0 + 1 + 1 + 0 = 2 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [5, 5, 5]) != spearman([1, 2, 3], [5, 5, 5])  # nan: no variance
    assert spearman([1, 2, 3, 4], [1, math.inf, 2, 3]) == pytest.approx(1.0)  # non-finite pairs dropped
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert math.isnan(slope([1], [1]))
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)


def test_entropy_of_known_distributions() -> None:
    assert entropy_bits([1] * 8) == pytest.approx(3.0)
    assert entropy_bits([2, 1, 1]) == pytest.approx(1.5)
    assert entropy_bits([7, 0]) == 0.0
    assert math.isnan(entropy_bits([]))
    with pytest.raises(ValueError):
        entropy_bits([1, -1])


def test_js_divergence_values_and_bounds() -> None:
    assert js_divergence({"a": 1, "b": 3}, {"a": 2, "b": 6}) == pytest.approx(0.0)
    assert js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): JS = (log2(4/3) + 0.5 log2(2/3) + 0.5) / 2
    expected = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert js_divergence({"a": 1}, {"a": 1, "b": 1}) == pytest.approx(expected)
    rng = random.Random(0)
    for _ in range(50):
        p = {k: rng.random() for k in "abcde" if rng.random() < 0.8}
        q = {k: rng.random() for k in "abcdef" if rng.random() < 0.8}
        if p and q:
            v = js_divergence(p, q)
            assert 0.0 <= v <= 1.0
            assert v == pytest.approx(js_divergence(q, p))


def test_intervals() -> None:
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 10)[0] == 0.0
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(Z95 * 1.0 / math.sqrt(3))


def test_resample_rows_are_the_draws_of_a_loop() -> None:
    # The evaluators drew their resamples one row per call (variety) or all at once (value); both are
    # these rows, so moving them onto resample() left every interval unchanged for a seed.
    for n, samples, seed in ((1, 3, 0), (7, 5, 3), (101, 33, 9)):
        rng = np.random.default_rng(seed)
        rows = resample(n, samples, seed)
        assert rows.shape == (samples, n) and rows.min() >= 0 and rows.max() < n
        assert np.array_equal(rows, np.array([rng.integers(0, n, n) for _ in range(samples)]))


def test_resample_strata_draws_as_the_match_bootstrap_did() -> None:
    # bradley_terry drew rng.choice(stratum) unit by unit, stratum after stratum, on random.Random(seed)
    strata = [list("ab"), list("cde"), list("f")]
    rng = random.Random(4)
    before = [[[rng.choice(s) for _ in s] for s in strata] for _ in range(20)]
    after = [[[s[i] for i in rows] for s, rows in zip(strata, picks)]
             for picks in resample_strata([len(s) for s in strata], 20, 4)]
    assert after == before


def test_percentile_and_normal_intervals() -> None:
    draws = np.arange(1.0, 1001.0)
    assert percentile_interval(draws) == (pytest.approx(25.975), pytest.approx(975.025))
    assert percentile_interval(draws, method="inverted_cdf") == (25.0, 975.0)  # observed draws
    assert percentile_interval(np.array([1.0, 2.0, math.inf]), method="inverted_cdf")[1] == math.inf
    assert all(math.isnan(v) for v in percentile_interval(np.array([])))
    assert all(math.isnan(v) for v in percentile_interval(np.array([1.0, math.nan])))
    lo, hi = normal_interval(10.0, np.array([1.0, 2.0, 3.0]))
    assert (lo, hi) == (pytest.approx(10.0 - Z95), pytest.approx(10.0 + Z95))  # sd 1
    assert all(math.isnan(v) for v in normal_interval(1.0, np.array([5.0])))
    est, lo, hi = bootstrap_ratio([1.0, 3.0, 2.0, 6.0], [1, 1, 1, 1], resamples=400, seed=2)
    assert est == 3.0 and 1.0 <= lo < est < hi <= 6.0


def test_paired_score_elo_is_elo_difference_including_the_ends() -> None:
    for pairs in ([[1, 0.5], [0.5, 0.5], [1, 1], [0, 0.5]], [[1, 1]] * 4, [[0, 0]] * 4):
        p = paired_score(pairs)
        assert (p.elo, p.elo_lo, p.elo_hi) == (elo_difference(p.score), elo_difference(p.lo), elo_difference(p.hi))
    assert paired_score([[1, 1]] * 4).elo == math.inf and paired_score([[0, 0]] * 4).elo == -math.inf
