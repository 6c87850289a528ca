"""Fixed token vocabulary derived from the rules of chess.

Layout (ids are stable for a given rating bucket width):

* ``0 .. 1967``: every UCI move that can occur in a standard game (queen and knight moves from
  every square, plus under- and queen-promotions), sorted by (from, to, promotion).
* specials: ``<pad>``, ``<bos>``, ``<end>``.
* condition tokens: ``<rating:?>`` and one ``<rating:R>`` per bucket, then the game results
  ``<result:1-0>``, ``<result:0-1>``, ``<result:1/2-1/2>``, ``<result:?>``.

Moves come first so that a move's id never depends on the condition settings.

>>> vocab = Vocab()
>>> vocab.size
2004
>>> vocab.encode_move(chess.Move.from_uci("e2e4"))
378
>>> vocab.decode_move(378)
Move.from_uci('e2e4')
>>> vocab.rating_token(1549), vocab.token_str(vocab.rating_token(1549))
(1983, '<rating:1500>')
>>> vocab.token_str(vocab.rating_token(None))
'<rating:?>'
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import chess
import numpy as np

RATING_MIN = 400  # ratings below fold into the lowest bucket
RATING_MAX = 3200  # ratings at or above fold into the highest bucket
RESULTS = ("1-0", "0-1", "1/2-1/2", "?")
SPECIALS = ("<pad>", "<bos>", "<end>")
NUM_MOVES = 1968


@functools.cache
def all_moves() -> tuple[chess.Move, ...]:
    """Every move that can be written in UCI for a standard game: 1,968 in all.

    A move is possible iff a queen or a knight could travel from its origin to its target on an
    empty board (kings, rooks, bishops and pawns move along those lines; castling is e1g1 etc.),
    plus pawn promotions from the 7th (2nd) rank to the 8th (1st) rank, straight or capturing.
    """
    moves: set[chess.Move] = set()
    empty = chess.BaseBoard.empty()
    for sq in chess.SQUARES:
        reach = chess.BB_EMPTY
        for piece in (chess.QUEEN, chess.KNIGHT):
            empty.set_piece_at(sq, chess.Piece(piece, chess.WHITE))
            reach |= int(empty.attacks(sq))
            empty.remove_piece_at(sq)
        for to in chess.scan_forward(reach):
            moves.add(chess.Move(sq, to))
    for color, from_rank, to_rank in ((chess.WHITE, 6, 7), (chess.BLACK, 1, 0)):
        for file in range(8):
            origin = chess.square(file, from_rank)
            for df in (-1, 0, 1):
                if 0 <= file + df < 8:
                    target = chess.square(file + df, to_rank)
                    for promo in (chess.KNIGHT, chess.BISHOP, chess.ROOK, chess.QUEEN):
                        moves.add(chess.Move(origin, target, promo))
    return tuple(sorted(moves, key=lambda m: (m.from_square, m.to_square, m.promotion or 0)))


@dataclass(frozen=True)
class Vocab:
    """The token vocabulary for one rating bucket width; encodes and decodes both ways."""

    rating_bucket: int = 100  # width of a rating bucket in Elo points
    _tokens: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.rating_bucket <= 0:
            raise ValueError(f"rating_bucket must be positive, got {self.rating_bucket}")
        tokens = [m.uci() for m in all_moves()]
        tokens += SPECIALS
        tokens.append("<rating:?>")
        tokens += [f"<rating:{r}>" for r in self.rating_levels()]
        tokens += [f"<result:{r}>" for r in RESULTS]
        object.__setattr__(self, "_tokens", tuple(tokens))
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(tokens)})

    # -- sizes and ids ---------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._tokens)

    @property
    def pad(self) -> int:
        return self._index["<pad>"]

    @property
    def bos(self) -> int:
        return self._index["<bos>"]

    @property
    def end(self) -> int:
        return self._index["<end>"]

    @property
    def unknown_rating(self) -> int:
        return self._index["<rating:?>"]

    def rating_levels(self) -> list[int]:
        """Lower edge of every rating bucket, from RATING_MIN to the last below RATING_MAX."""
        return list(range(RATING_MIN, RATING_MAX, self.rating_bucket))

    @functools.cached_property
    def hash(self) -> str:
        """Short sha256 over the token strings: two vocabularies with equal hash are identical."""
        return hashlib.sha256("\n".join(self._tokens).encode()).hexdigest()[:16]

    # -- moves -------------------------------------------------------------------------------
    def encode_move(self, move: chess.Move) -> int:
        """Token id of a move; raises KeyError for a move no standard game can contain."""
        return self._index[move.uci()]

    def decode_move(self, token: int) -> chess.Move:
        """The move a move token stands for; raises ValueError for a non-move token."""
        if not 0 <= token < NUM_MOVES:
            raise ValueError(f"token {token} ({self.token_str(token)}) is not a move")
        return chess.Move.from_uci(self._tokens[token])

    def is_move(self, token: int) -> bool:
        return 0 <= token < NUM_MOVES

    @functools.cached_property
    def move_table(self) -> np.ndarray:
        """Lookup table (from * 64 + to) * 5 + promo_index -> move id, -1 where impossible.

        promo_index is 0 for no promotion, 1..4 for knight, bishop, rook, queen. This is what
        turns a parser's (from, to, promotion) arrays into tokens in one vectorized step.
        """
        table = np.full(64 * 64 * 5, -1, dtype=np.int32)
        for i, m in enumerate(all_moves()):
            promo = 0 if m.promotion is None else m.promotion - 1
            table[(m.from_square * 64 + m.to_square) * 5 + promo] = i
        return table

    # -- conditions --------------------------------------------------------------------------
    def rating_token(self, rating: int | None) -> int:
        """Token of the bucket that holds a rating; None means unknown."""
        if rating is None:
            return self.unknown_rating
        clipped = min(max(rating, RATING_MIN), RATING_MAX - 1)
        level = RATING_MIN + (clipped - RATING_MIN) // self.rating_bucket * self.rating_bucket
        return self._index[f"<rating:{level}>"]

    def rating_of_token(self, token: int) -> int | None:
        """Lower edge of a rating token's bucket (None for unknown); ValueError otherwise."""
        s = self.token_str(token)
        if not s.startswith("<rating:"):
            raise ValueError(f"token {token} ({s}) is not a rating")
        value = s[len("<rating:") : -1]
        return None if value == "?" else int(value)

    def is_rating(self, token: int) -> bool:
        return self.token_str(token).startswith("<rating:")

    def result_token(self, result: str | None) -> int:
        """Token of a PGN result string; anything but 1-0, 0-1, 1/2-1/2 is unknown."""
        return self._index[f"<result:{result if result in RESULTS else '?'}>"]

    # -- generic -----------------------------------------------------------------------------
    def token_str(self, token: int) -> str:
        return self._tokens[token]

    def token_id(self, text: str) -> int:
        """Id of a token string: a UCI move or a special/condition token such as '<bos>'."""
        try:
            return self._index[text]
        except KeyError:
            raise KeyError(f"{text!r} is not in the vocabulary") from None

    def encode_moves(self, moves: list[chess.Move]) -> list[int]:
        return [self.encode_move(m) for m in moves]

    def decode(self, tokens: list[int] | np.ndarray) -> list[str]:
        """Token ids to their strings, e.g. for printing a sequence."""
        return [self._tokens[int(t)] for t in tokens]
