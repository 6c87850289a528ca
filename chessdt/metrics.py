"""Pure math for the evaluators: Elo from game results, rank correlation, entropy, divergence, the bootstrap.

No chess, no model, no I/O: every function takes numbers (or counts) and returns numbers, so each
can be checked against a hand computation.

Elo uses the logistic model: the expected score of a player rated ``d`` points above the opponent
is ``1 / (1 + 10 ** (-d / 400))``; a draw counts as half a point (the Bradley-Terry likelihood with
half wins). Entropies and divergences are in bits.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

ELO_K = math.log(10.0) / 400.0  # d(log-odds)/d(rating): 400 points = a factor 10 in the odds
K = TypeVar("K", bound=Hashable)  # keys of a distribution (lines, moves)
Z95 = 1.959963984540054  # two-sided 95% normal quantile


def expected_score(diff: float) -> float:
    """Expected score of a player rated `diff` points above the opponent.

    >>> expected_score(0.0)
    0.5
    >>> round(expected_score(400.0), 4)
    0.9091
    """
    return 1.0 / (1.0 + 10.0 ** (-diff / 400.0))


def elo_difference(score: float) -> float:
    """Rating difference implied by an expected score (inverse of expected_score); +-inf at 1 and 0.

    >>> round(elo_difference(0.75), 2)
    190.85
    """
    if score <= 0.0:
        return -math.inf
    if score >= 1.0:
        return math.inf
    return 400.0 * math.log10(score / (1.0 - score))


# -- Elo fit -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EloEstimate:
    """One player's fitted rating."""

    name: str
    elo: float  # maximum-likelihood rating; +-inf for a perfect score, nan if not tied to an anchor
    lo: float  # lower end of the 95% interval (Wald, from the observed information)
    hi: float  # upper end of the 95% interval
    games: int  # real games played (virtual draws not counted)
    points: float  # points scored in them
    anchored: bool  # rating fixed by the caller, not fitted

    @property
    def score(self) -> float:
        return self.points / self.games if self.games else math.nan


@dataclass(frozen=True)
class EloFit:
    """Ratings of every player in a game table, on the scale set by the anchors."""

    players: tuple[EloEstimate, ...]
    anchors: dict[str, float]
    virtual_draws: float  # draws added per pair of opponents that met (a weak prior; 0 = pure ML)
    iterations: int  # Newton steps taken

    def __getitem__(self, name: str) -> EloEstimate:
        for p in self.players:
            if p.name == name:
                return p
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.players)


def _components(names: list[str], pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Connected component id of every player in the graph of who played whom."""
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    roots: dict[str, int] = {}
    return {n: roots.setdefault(find(n), len(roots)) for n in names}


def fit_elo(games: Iterable[tuple[str, str, float]], anchors: Mapping[str, float], *,
            virtual_draws: float = 0.0, max_iter: int = 100, tol: float = 1e-9) -> EloFit:
    """Maximum-likelihood ratings of every player from (white, black, white's score) rows.

    Anchored players keep their given ratings; the others are fitted jointly by Newton's method on
    the logistic (Bradley-Terry) likelihood with draws as half points. 95% intervals are Wald
    intervals from the inverse observed information of the free players (anchors have no error).
    With ``virtual_draws = v``, every pair of players that met also gets ``v`` drawn games, a weak
    prior (as BayesElo does) that keeps a perfect score finite; with 0 the fit is pure ML and a
    player with a perfect (or zero) score gets +inf (-inf). A player in a part of the table with no
    anchor gets nan.

    >>> fit = fit_elo([("a", "b", 1.0), ("a", "b", 1.0), ("a", "b", 1.0), ("a", "b", 0.0)], {"b": 1000})
    >>> round(fit["a"].elo, 1), fit["a"].games, fit["a"].points
    (1190.8, 4, 3.0)
    """
    anchors = {k: float(v) for k, v in anchors.items()}
    n: dict[tuple[str, str], float] = defaultdict(float)  # (i, j) with i < j: games
    s: dict[tuple[str, str], float] = defaultdict(float)  # points of i against j
    played: dict[str, int] = defaultdict(int)
    points: dict[str, float] = defaultdict(float)
    for white, black, score in games:
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"score {score} of {white} vs {black} is not in [0, 1]")
        if white == black:
            raise ValueError(f"{white} cannot play itself")
        played[white] += 1
        played[black] += 1
        points[white] += score
        points[black] += 1.0 - score
        i, j, si = (white, black, score) if white < black else (black, white, 1.0 - score)
        n[(i, j)] += 1.0
        s[(i, j)] += si
    if virtual_draws:
        for key in list(n):
            n[key] += virtual_draws
            s[key] += virtual_draws / 2.0
    names = sorted(set(played) | set(anchors))
    comp = _components(names, n)
    anchored_comps = {comp[a] for a in anchors if a in comp}
    elo: dict[str, float] = {name: anchors.get(name, math.nan) for name in names}

    # Players with a perfect or zero score (among the remaining table) have their ML rating at
    # +-inf; take them out one at a time, since removing one can leave another perfect, or leave a
    # group of free players with no path to an anchor (their ratings are then undefined: nan).
    active = [x for x in names if x not in anchors and comp[x] in anchored_comps]
    while True:
        tot: dict[str, float] = defaultdict(float)
        pts: dict[str, float] = defaultdict(float)
        live = set(active) | set(anchors)
        live_pairs = [(i, j) for (i, j) in n if i in live and j in live]
        for i, j in live_pairs:
            tot[i] += n[(i, j)]
            tot[j] += n[(i, j)]
            pts[i] += s[(i, j)]
            pts[j] += n[(i, j)] - s[(i, j)]
        live_comp = _components(sorted(live), live_pairs)
        tied = {live_comp[a] for a in anchors}
        orphans = [x for x in active if live_comp[x] not in tied]
        extreme = [x for x in active if x not in orphans and pts[x] in (0.0, tot[x])]
        if not orphans and not extreme:
            break
        for x in orphans:
            active.remove(x)
        for x in extreme:
            elo[x] = math.inf if pts[x] == tot[x] else -math.inf
            active.remove(x)

    index = {name: k for k, name in enumerate(active)}
    pair_list = [(i, j, nij, s[(i, j)]) for (i, j), nij in n.items()
                 if (i in index or i in anchors) and (j in index or j in anchors)
                 and (i in index or j in index)]
    r = np.zeros(len(active))
    if active:  # start each free player at the mean anchor of its component
        mean_anchor = float(np.mean(list(anchors.values())))
        r[:] = mean_anchor
    cov: np.ndarray = np.zeros((len(active), len(active)))
    it = 0
    converged = not active
    for it in range(1, max_iter + 1):
        if not active:
            break
        grad = np.zeros(len(active))
        hess = np.zeros((len(active), len(active)))
        for i, j, nij, sij in pair_list:
            ri = r[index[i]] if i in index else anchors[i]
            rj = r[index[j]] if j in index else anchors[j]
            p = expected_score(ri - rj)
            g = ELO_K * (sij - nij * p)
            h = ELO_K * ELO_K * nij * p * (1.0 - p)
            if i in index:
                grad[index[i]] += g
                hess[index[i], index[i]] -= h
            if j in index:
                grad[index[j]] -= g
                hess[index[j], index[j]] -= h
            if i in index and j in index:
                hess[index[i], index[j]] += h
                hess[index[j], index[i]] += h
        try:
            step = np.linalg.solve(hess, -grad)
        except np.linalg.LinAlgError:  # information vanished: some ratings are running off to infinity
            break
        step = np.clip(step, -400.0, 400.0)  # damp early steps far from the optimum
        r += step
        if np.max(np.abs(step)) < tol * 400.0:
            converged = True
            break
    if active:
        cov = np.linalg.pinv(-hess)
    origin = float(np.mean(list(anchors.values()))) if anchors else 0.0
    for name, k in index.items():
        # Without convergence a group scored perfectly against the rest: its ratings run off to infinity.
        far = not converged and abs(r[k] - origin) > 4000  # beyond any finite ML fit of a real table
        elo[name] = float(math.copysign(math.inf, r[k] - origin)) if far else float(r[k])

    out = []
    for name in names:
        value = elo[name]
        if name in anchors:
            lo = hi = value
        elif name in index and math.isfinite(value):
            half = Z95 * math.sqrt(max(cov[index[name], index[name]], 0.0))
            lo, hi = value - half, value + half
        elif value == math.inf:
            lo, hi = math.nan, math.inf
        elif value == -math.inf:
            lo, hi = -math.inf, math.nan
        else:
            lo = hi = math.nan
        out.append(EloEstimate(name=name, elo=value, lo=lo, hi=hi, games=played.get(name, 0),
                               points=points.get(name, 0.0), anchored=name in anchors))
    return EloFit(players=tuple(out), anchors=anchors, virtual_draws=virtual_draws, iterations=it)


# -- correlation --------------------------------------------------------------------------------------
def ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank.

    >>> ranks([10, 30, 20, 20]).tolist()
    [1.0, 4.0, 2.5, 2.5]
    """
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="stable")
    out = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return out


def _finite_pairs(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation over the pairs where both are finite; nan if undefined."""
    xa, ya = _finite_pairs(x, y)
    if len(xa) < 2 or np.std(xa) == 0 or np.std(ya) == 0:
        return math.nan
    return float(np.corrcoef(xa, ya)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties) over pairs where both are finite.

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    xa, ya = _finite_pairs(x, y)
    if len(xa) < 2:
        return math.nan
    return pearson(ranks(xa), ranks(ya))


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y on x over pairs where both are finite; nan if undefined.

    >>> slope([0, 1, 2], [1, 3, 5])
    2.0
    """
    xa, ya = _finite_pairs(x, y)
    if len(xa) < 2 or np.var(xa) == 0:
        return math.nan
    return float(np.sum((xa - xa.mean()) * (ya - ya.mean())) / np.sum((xa - xa.mean()) ** 2))


# -- proportions and means -----------------------------------------------------------------------------
def wilson_interval(k: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n; (nan, nan) for n = 0.

    >>> tuple(round(v, 4) for v in wilson_interval(5, 10))
    (0.2366, 0.7634)
    """
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean with a 95% normal interval (mean +- 1.96 standard errors).

    >>> tuple(round(v, 3) for v in mean_interval([1.0, 3.0]))
    (2.0, 0.04, 3.96)
    """
    a = np.asarray(values, dtype=float)
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    m = float(a.mean())
    if len(a) == 1:
        return m, math.nan, math.nan
    half = Z95 * float(a.std(ddof=1)) / math.sqrt(len(a))
    return m, m - half, m + half


T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)  # Student t, 97.5%, 1..10 df


def seeds_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi) across a few independent runs (seeds): a 95% Student-t interval, which stays honest
    for three seeds where 1.96 standard errors would be far too narrow; nan bounds for one run.

    >>> tuple(round(v, 2) for v in seeds_interval([1.0, 2.0, 3.0]))
    (2.0, -0.48, 4.48)
    """
    a = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(a) == 0:
        return math.nan, math.nan, math.nan
    m = float(a.mean())
    if len(a) == 1:
        return m, math.nan, math.nan
    t = T975[len(a) - 2] if len(a) - 1 <= len(T975) else Z95
    half = t * float(a.std(ddof=1)) / math.sqrt(len(a))
    return m, m - half, m + half


def bootstrap_ratio(num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray, *,
                    resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(sum(num) / sum(den), lo, hi): a ratio of sums over clusters (e.g. per-game sums of a
    per-position quantity and per-game position counts) with a 95% percentile interval from
    resampling the clusters. A mean per position is the case den = counts; a ratio of two means
    over the same positions is the case den = the other quantity's sums. nan when there is no data.

    >>> est, lo, hi = bootstrap_ratio([2.0, 4.0, 6.0], [1, 2, 3]); round(est, 3), round(lo, 3), round(hi, 3)
    (2.0, 2.0, 2.0)
    >>> bootstrap_ratio([], [])
    (nan, nan, nan)
    """
    n_arr, d_arr = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if len(n_arr) != len(d_arr):
        raise ValueError("one numerator and one denominator per cluster")
    if len(n_arr) == 0 or d_arr.sum() == 0:
        return math.nan, math.nan, math.nan
    est = float(n_arr.sum() / d_arr.sum())
    draws = resample(len(n_arr), resamples, seed)
    d_boot = d_arr[draws].sum(1)
    ok = d_boot != 0
    lo, hi = percentile_interval(n_arr[draws].sum(1)[ok] / d_boot[ok])
    return est, lo, hi


# -- the bootstrap ---------------------------------------------------------------------------------------
# Resample the independent units (games, game pairs, positions), recompute the statistic on each
# resample, and read the interval off the spread of those draws. The evaluators compute their own
# statistic per resample; the drawing of resamples and the reading of intervals live here.
def resample(n: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n) indices: each row is one bootstrap resample of n units, drawn with replacement.

    Row i is what the i-th call ``rng.integers(0, n, n)`` on ``np.random.default_rng(seed)`` gives,
    so a statistic computed row by row sees the same resamples as one computed in a loop.

    >>> resample(3, 2, seed=0).shape
    (2, 3)
    """
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def resample_strata(sizes: Sequence[int], samples: int, seed: int) -> list[list[list[int]]]:
    """For each of `samples` resamples, indices into every stratum, drawn with replacement within it:
    a stratified bootstrap that keeps the size of every stratum (e.g. the game pairs of each pairing
    of a match, so every pairing stays in every resample).

    Drawn with Python's generator (one ``randrange(size)`` per unit, stratum after stratum): the
    match ratings' intervals have always come from it, and a seed still gives the same intervals.

    >>> [[len(s) for s in draw] for draw in resample_strata([2, 3], 2, seed=0)]
    [[2, 3], [2, 3]]
    """
    rng = random.Random(seed)
    return [[[rng.randrange(k) for _ in range(k)] for k in sizes] for _ in range(samples)]


QuantileMethod = Literal["linear", "inverted_cdf"]  # numpy's interpolated quantile, or an observed draw


def percentile_interval(draws: np.ndarray, *, method: QuantileMethod = "linear") -> tuple[float, float]:
    """The 95% percentile interval (2.5% and 97.5% quantiles) of bootstrap draws; (nan, nan) for none.

    A nan draw makes both ends nan (filter them first where an undefined resample should not count);
    ``method="inverted_cdf"`` takes observed draws as the ends, which keeps an infinite draw meaningful.

    >>> percentile_interval(np.arange(101.0))
    (2.5, 97.5)
    >>> percentile_interval(np.array([]))
    (nan, nan)
    """
    if len(draws) == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(draws, [0.025, 0.975], method=method)
    return float(lo), float(hi)


def normal_interval(value: float, draws: np.ndarray) -> tuple[float, float]:
    """value +- 1.96 bootstrap standard errors (the draws' sample standard deviation); (nan, nan) for
    fewer than two draws. For plug-in statistics that resampling biases (an entropy of lines: a
    resample repeats some games and loses rare ones, so a percentile interval can miss the estimate;
    the spread of the resamples still measures the sampling error).

    >>> normal_interval(0.0, np.array([-1.0, 1.0]))[1] == Z95 * math.sqrt(2)
    True
    """
    if len(draws) < 2:
        return math.nan, math.nan
    half = Z95 * float(draws.std(ddof=1))
    return float(value - half), float(value + half)


# -- information ----------------------------------------------------------------------------------------
def entropy_bits(weights: Iterable[float]) -> float:
    """Shannon entropy in bits of a distribution given by nonnegative weights (counts or probabilities).

    >>> entropy_bits([1, 1, 1, 1]), entropy_bits([5]), entropy_bits([0.5, 0.25, 0.25])
    (2.0, 0.0, 1.5)
    """
    w = np.asarray(list(weights), dtype=float)
    if np.any(w < 0):
        raise ValueError("weights must be nonnegative")
    total = w.sum()
    if total <= 0:
        return math.nan
    p = w[w > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def js_divergence(p: Mapping[K, float], q: Mapping[K, float]) -> float:
    """Jensen-Shannon divergence in bits between two distributions given as {outcome: weight}.

    Weights are normalised; the result lies in [0, 1]: 0 for equal distributions, 1 for disjoint ones.

    >>> js_divergence({"a": 1}, {"a": 3}), js_divergence({"a": 1}, {"b": 1})
    (0.0, 1.0)
    """
    keys = list(set(p) | set(q))
    pa = np.array([float(p.get(k, 0.0)) for k in keys])
    qa = np.array([float(q.get(k, 0.0)) for k in keys])
    if pa.sum() <= 0 or qa.sum() <= 0:
        return math.nan
    pa, qa = pa / pa.sum(), qa / qa.sum()
    m = (pa + qa) / 2.0

    def kl(a: np.ndarray) -> float:
        keep = a > 0
        return float((a[keep] * np.log2(a[keep] / m[keep])).sum())

    return min(1.0, max(0.0, 0.5 * kl(pa) + 0.5 * kl(qa)))


# -- paired games: pentanomial intervals and the SPRT ------------------------------------------------------------
@dataclass(frozen=True)
class PairedScore:
    """A's score against B over game pairs (one opening played with each colour).

    The two games of a pair share their opening, so their results are correlated; the interval
    comes from the variance of the per-pair score (the pentanomial model of engine testing), not
    from independent games, and is narrower when openings favour one colour.
    """

    pairs: int  # game pairs (an unpaired game counts as a pair of one)
    games: int
    wins: int
    draws: int
    losses: int
    score: float  # A's mean score per game
    lo: float  # 95% interval of the score
    hi: float
    elo: float  # logistic Elo difference A - B at that score
    elo_lo: float
    elo_hi: float
    pentanomial: tuple[int, int, int, int, int]  # pairs of two games scoring 0, 0.5, 1, 1.5, 2 points

    @property
    def draw_rate(self) -> float:
        return self.draws / self.games if self.games else math.nan


def paired_score(pairs: Sequence[Sequence[float]]) -> PairedScore:
    """A's score from its results per pair, e.g. [[1, 0.5], [0, 0], ...] (each 0, 0.5 or 1).

    >>> p = paired_score([[1, 0.5], [0.5, 0.5], [1, 1], [0, 0.5]])
    >>> p.score, p.pentanomial, round(p.elo, 1)
    (0.625, (0, 1, 1, 1, 1), 88.7)
    """
    per_pair = np.array([float(np.mean(p)) for p in pairs if len(p)])
    results = [r for p in pairs for r in p]
    wins, draws = sum(r == 1.0 for r in results), sum(r == 0.5 for r in results)
    penta = [0] * 5
    for p in pairs:
        if len(p) == 2:
            penta[int(round(2 * sum(p)))] += 1
    n = len(per_pair)
    if n == 0:
        nan = math.nan
        return PairedScore(0, 0, 0, 0, 0, nan, nan, nan, nan, nan, nan, (0, 0, 0, 0, 0))
    # mean per game, weighting each pair by its games (pairs of one and two mix after resumes)
    score = float(sum(results) / len(results))
    # Every pair scoring the same (a handful of drawn pairs) estimates the spread as 0, which would
    # claim certainty; then take the largest spread a pair score can have (sd 0.5) instead.
    sd = float(per_pair.std(ddof=1)) if n > 1 else math.inf
    half = Z95 * (sd if sd > 0 else 0.5) / math.sqrt(n)
    lo, hi = max(0.0, score - half), min(1.0, score + half)
    return PairedScore(pairs=n, games=len(results), wins=wins, draws=draws, losses=len(results) - wins - draws,
                       score=score, lo=lo, hi=hi, elo=elo_difference(score), elo_lo=elo_difference(lo),
                       elo_hi=elo_difference(hi), pentanomial=(penta[0], penta[1], penta[2], penta[3], penta[4]))


def sprt_llr(pairs: Sequence[Sequence[float]], elo0: float, elo1: float) -> float:
    """Log-likelihood ratio of 'A is elo1 stronger' over 'A is elo0 stronger' from paired results.

    The generalized SPRT of engine testing (Van den Bergh's normal approximation on the per-pair
    score): LLR = n (s1 - s0) (2 m - s0 - s1) / (2 v), with s0, s1 the expected scores at elo0 and
    elo1 and m, v the mean and variance of the per-pair score. 0 before there are two pairs.

    >>> round(sprt_llr([[1, 0.5], [0.5, 0.5], [1, 1], [0, 0.5]] * 25, 0, 20), 2)
    4.07
    """
    per_pair = np.array([float(np.mean(p)) for p in pairs if len(p)])
    if len(per_pair) < 2:
        return 0.0
    var = float(per_pair.var())
    if var <= 0:
        var = 1e-6  # every pair scored the same: the data carry no spread, only a mean
    s0, s1 = expected_score(elo0), expected_score(elo1)
    return float(len(per_pair) * (s1 - s0) * (2 * per_pair.mean() - s0 - s1) / (2 * var))


def sprt_bounds(alpha: float = 0.05, beta: float = 0.05) -> tuple[float, float]:
    """(lower, upper) LLR bounds: accept H0 below the lower, H1 above the upper (Wald's SPRT).

    >>> tuple(round(b, 3) for b in sprt_bounds(0.05, 0.05))
    (-2.944, 2.944)
    """
    return math.log(beta / (1 - alpha)), math.log((1 - beta) / alpha)
