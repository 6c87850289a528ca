"""Which games were seen before, in memory that does not grow with the games: a Bloom filter.

Every game has a 16-byte identity (:func:`chessdt.data.pgn.game_identity`: its Lichess URL when
Site names one, else its headers and moves). The filter is ``2**bits`` bits with :data:`HASHES`
bit positions per game taken from the identity itself (it is already a uniform hash). Its size is
fixed before the first game: :data:`BITS_PER_GAME` bits for each game the input can hold at most
(:func:`filter_bits`, from the input's size on disk), but never more than ``2**data.dedupe_bits``
(default 32: 512 MiB), so memory does not grow with the games. It never misses a repeat; it may
call a new game seen with probability about ``(1 - exp(-HASHES * n / 2**bits)) ** HASHES`` after n
games (:func:`false_positive_rate`): at most 1.7e-6 while the input fits the estimate, and with
the default cap 3e-20 at a million games, 1.7e-6 at 100 million (about 170 of a monthly dump's
games dropped by mistake).

Games are checked a chunk at a time, in input order: a game is a duplicate if its identity came
earlier in the same chunk, or the filter holds it from earlier chunks. Chunks are cut from the
input bytes alone, so the result does not depend on how many workers parsed them.
"""

from __future__ import annotations

import math

import numpy as np

HASHES = 7  # bit positions per game: optimal for ~2**32 bits at ~400 million games, fine below
BITS_PER_GAME = 43  # filter bits per game the input can hold: a false-positive rate of 1.7e-6 when full
MIN_BITS = 20  # 128 KiB: small inputs


def filter_bits(max_games: int, cap: int) -> int:
    """log2 of the filter size for an input of at most `max_games` games, at most `cap`."""
    return min(cap, max(MIN_BITS, math.ceil(math.log2(max(max_games, 1) * BITS_PER_GAME))))


def false_positive_rate(games: int, bits: int) -> float:
    """Chance that a game not seen before is taken for a duplicate after `games` distinct games."""
    return (1.0 - math.exp(-HASHES * games / 2.0**bits)) ** HASHES


class SeenFilter:
    """A Bloom filter over 16-byte identities, checked and filled a chunk at a time."""

    def __init__(self, bits: int = 32) -> None:
        if not 10 <= bits <= 40:
            raise ValueError(f"dedupe bits must be in [10, 40], got {bits}")
        self.mask = np.uint64((1 << bits) - 1)
        self.table = np.zeros(1 << (bits - 3), np.uint8)  # zero pages cost no memory until touched

    def _positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, HASHES) byte index and bit mask of each identity's positions (double hashing)."""
        halves = np.ascontiguousarray(ids).view(np.uint64)  # (K, 2): two independent 64-bit hashes
        step = np.arange(HASHES, dtype=np.uint64)
        pos = (halves[:, :1] + step * (halves[:, 1:] | np.uint64(1))) & self.mask  # (K, HASHES)
        return (pos >> np.uint64(3)).astype(np.int64), (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8))

    def seen(self, ids: np.ndarray) -> np.ndarray:
        """(K,) bool: whether each of (K, 16) uint8 identities came before (earlier in `ids`, or in an
        earlier call); the ones that did not are added."""
        ids = np.asarray(ids, np.uint8).reshape(-1, 16)
        dup = np.ones(len(ids), bool)
        if not len(ids):
            return dup
        halves = ids.view(np.uint64)  # (K, 2)
        order = np.lexsort((np.arange(len(ids)), halves[:, 1], halves[:, 0]))  # equal ids together, first first
        same = (halves[order[1:]] == halves[order[:-1]]).all(axis=1)
        first = order[np.concatenate([[True], ~same])]
        dup[first] = False  # repeats within the chunk
        byte, bit = self._positions(ids[first])
        dup[first] = ((self.table[byte] & bit) != 0).all(axis=1)
        new = ~dup[first]
        np.bitwise_or.at(self.table, byte[new].ravel(), bit[new].ravel())
        return dup
