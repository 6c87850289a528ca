"""Which training games an epoch draws, and how often: rating bands and oversampling (issue 27).

Every option works per game, on the ratings in its prefix (lower edges of the rating buckets), and
becomes a repeat count: 0 = never drawn, 1 = once per epoch (the default), k = k times. The batcher
repeats each game's segments that many times, so batches stay length-bucketed and an epoch's
order stays a pure function of the seed.

* ``train.rating_bands``: keep only games whose two players' ratings lie in one band (a
  learnability check: train on the extreme bands and see whether the prompt can matter at all).
* ``train.oversample = "rating"``: draw each 200-point band of the players' mean rating about as
  often as the most common band, each game at most ``oversample_max`` times (the rare top and
  bottom bands are otherwise a few percent of the data).
* ``train.oversample = "cross"``: games between players of different strength, 1 more repeat per
  200 points of rating gap (Maia-2's idea: such games are where the prompt, not the history, tells
  the two movers apart).
* ``train.band_cap``: at most that many draws per 200-point band of mean rating in one epoch, a
  fresh random sample each epoch (applied last). A large source for one band, such as the elite
  games for the top band, then adds variety to that band instead of drowning the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from chessdt.config import OVERSAMPLES
from chessdt.data.shards import PreparedData, Split
from chessdt.errors import UserError
from chessdt.tokenizer import RATING_PARTS, Vocab

BAND_WIDTH = 200  # rating points per band of "rating" oversampling and band_cap, per repeat of "cross"

EpochRepeats = Callable[[int], np.ndarray]  # epoch -> (G,) int64 draws of each game in that epoch


def game_ratings(data: PreparedData, split: Split) -> np.ndarray:
    """(G, 2) int64 White's and Black's rating of every game of `split` (bucket lower edges), -1
    where unknown; UserError when the data's prefix holds no player ratings (an outcome label)."""
    slots = list(data.meta["prefix"])
    cols = []
    for color in ("white", "black"):
        names = [f"{color}_{part}" for part in RATING_PARTS if f"{color}_{part}" in slots]
        if not names:
            raise UserError(f"{data.path}: its prefix ({', '.join(slots) or 'none'}) holds no player ratings, "
                            "and train.rating_bands / train.oversample choose games by them")
        cols.append(1 + slots.index(names[0]))
    firsts = split.offsets[:-1]
    table = _rating_table(data.vocab)
    return np.stack([table[split.tokens[firsts + c].astype(np.int64)] for c in cols], axis=1)


def _rating_table(vocab: Vocab) -> np.ndarray:
    """Token id -> rating (bucket lower edge), -1 for every token that is not a known rating."""
    table = np.full(vocab.size, -1, dtype=np.int64)
    for r in vocab.rating_levels():
        table[vocab.rating_token(r)] = r
    return table


def repeats(ratings: np.ndarray, bands: Sequence[tuple[int, int]] = (), oversample: str = "none",
            oversample_max: int = 4) -> np.ndarray:
    """(G,) int64 how many times each game is drawn per epoch, from its (G, 2) ratings.

    >>> r = np.array([[1200, 1200], [2300, 2400], [1500, 1600], [1200, 2000], [-1, 1500]])
    >>> repeats(r, bands=[(0, 1299), (2200, 4000)]).tolist()
    [1, 1, 0, 0, 0]
    >>> repeats(r, oversample="cross").tolist()
    [1, 1, 1, 4, 1]
    """
    if oversample not in OVERSAMPLES:
        raise ValueError(f"oversample {oversample!r}: use one of {', '.join(OVERSAMPLES)}")
    white, black = ratings[:, 0], ratings[:, 1]
    known = (white >= 0) & (black >= 0)
    out = np.ones(len(ratings), dtype=np.int64)
    if bands:
        inside = np.zeros(len(ratings), dtype=bool)
        for lo, hi in bands:
            inside |= (white >= lo) & (white <= hi) & (black >= lo) & (black <= hi)
        out[~(known & inside)] = 0
    if oversample == "cross":
        gap = np.abs(white - black) // BAND_WIDTH
        out = np.where(known, out * np.minimum(1 + gap, oversample_max), out)
    elif oversample == "rating":
        drawn = known & (out > 0)
        band = mean_band(ratings[drawn])
        if len(band):
            counts = np.bincount(band)  # games per band; each band drawn about as often as the largest
            out[drawn] *= np.minimum(np.rint(counts.max() / counts[band]).astype(np.int64), oversample_max)
    return out


def mean_band(ratings: np.ndarray) -> np.ndarray:
    """(G,) the 200-point band of each game's mean rating (band k = [200k, 200k + 199]), from (G, 2) known ratings."""
    return ratings.sum(axis=1) // 2 // BAND_WIDTH


def cap_bands(reps: np.ndarray, ratings: np.ndarray, cap: int, seed: int, epoch: int) -> np.ndarray:
    """`reps` with at most `cap` draws in each 200-point band of mean rating: a band over the cap
    keeps a random `cap` of its draws, drawn afresh for each (seed, epoch). Games with an unknown
    rating, and every game when cap is 0, keep their draws.

    >>> r = np.array([[2400, 2500]] * 5 + [[1200, 1300]] * 2)
    >>> out = cap_bands(np.ones(7, dtype=np.int64), r, cap=2, seed=0, epoch=0)
    >>> int(out[:5].sum()), out[5:].tolist()
    (2, [1, 1])
    """
    if cap <= 0:
        return reps
    out = reps.copy()
    known = (ratings >= 0).all(axis=1) & (reps > 0)
    band = np.where(known, mean_band(ratings), -1)
    rng = np.random.default_rng([seed, 2, epoch])
    for b in np.unique(band[band >= 0]):
        games = np.flatnonzero(band == b)
        if int(reps[games].sum()) <= cap:
            continue
        kept = rng.choice(np.repeat(games, reps[games]), size=cap, replace=False)
        out[games] = 0
        np.add.at(out, kept, 1)
    return out


def epoch_repeats(ratings: np.ndarray, bands: Sequence[tuple[int, int]] = (), oversample: str = "none",
                  oversample_max: int = 4, band_cap: int = 0, seed: int = 0) -> EpochRepeats:
    """The training mix as the batcher takes it: epoch -> draws of each game (`repeats`, then
    `cap_bands` with that epoch's sample)."""
    base = repeats(ratings, bands, oversample, oversample_max)
    return lambda epoch: cap_bands(base, ratings, band_cap, seed, epoch)


def describe(reps: np.ndarray) -> str:
    """One line on what the mix did: games kept, dropped and repeated, draws per epoch."""
    kept = int((reps > 0).sum())
    return (f"{kept:,} of {len(reps):,} games drawn ({len(reps) - kept:,} outside train.rating_bands "
            f"or over train.band_cap), {int((reps > 1).sum()):,} of them repeated; "
            f"{int(reps.sum()):,} game draws per epoch")
