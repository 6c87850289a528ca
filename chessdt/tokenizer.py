"""The sequence format: a vocabulary derived from the rules of chess, the condition prefix, model inputs.

A game is ``<bos> <condition tokens...> move move ... <end>``; which condition slots exist, and in
which order, is decided here (:func:`condition_slots`), as is every other fact of the format: the
board codes each position carries (:func:`board_array`), the inputs of a batch of games
(:func:`game_inputs`) and the legal-move mask of a board (:meth:`Vocab.legal_mask`).

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
>>> vocab.decode(condition_prefix(vocab, ("elo", "outcome"), lambda part: (1500, None), "1-0"))
['<bos>', '<rating:1500>', '<rating:?>', '<result:1-0>']
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import chess
import numpy as np
import torch

from chessdt.rules import RESULTS

RATING_MIN = 400  # ratings below fold into the lowest bucket
RATING_MAX = 3200  # ratings at or above fold into the highest bucket
RESULT_SLOTS = (*RESULTS, "?")  # values of a result slot: the game results and unknown
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
        tokens += [f"<result:{r}>" for r in RESULT_SLOTS]
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
        return self._index[f"<result:{result if result in RESULT_SLOTS else '?'}>"]

    def result_of_token(self, token: int) -> str | None:
        """The result a result token stands for (None for unknown); ValueError otherwise."""
        s = self.token_str(token)
        if not s.startswith("<result:"):
            raise ValueError(f"token {token} ({s}) is not a result")
        value = s[len("<result:") : -1]
        return None if value == "?" else value

    def is_result(self, token: int) -> bool:
        return self.token_str(token).startswith("<result:")

    def legal_ids(self, board: chess.Board) -> frozenset[int]:
        """The move tokens that are legal moves of `board` (castling rights, en passant and pins included)."""
        return frozenset(self.encode_move(m) for m in board.legal_moves)

    def legal_mask(self, board: chess.Board) -> torch.Tensor:
        """(1968,) bool: :meth:`legal_ids` as a mask over the move tokens."""
        mask = torch.zeros(NUM_MOVES, dtype=torch.bool)
        mask[sorted(self.legal_ids(board))] = True
        return mask

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


# -- the condition prefix ------------------------------------------------------------------------------
RATING_PARTS = ("elo", "engine")  # label parts that put a (white, black) rating pair in the prefix


def check_rating(rating: int) -> int:
    """A prompted rating the vocabulary has a bucket for; ValueError otherwise (the one range check
    of the CLI, the UCI options and the terminal game).

    >>> check_rating(1500)
    1500
    """
    if not RATING_MIN <= rating < RATING_MAX:
        raise ValueError(f"must be between {RATING_MIN} and {RATING_MAX - 1}")
    return rating


def condition_slots(label_parts: Sequence[str]) -> list[str]:
    """Names of the prefix positions for a label setting, after <bos>: the order of the prefix.

    >>> condition_slots(("elo", "outcome"))
    ['white_elo', 'black_elo', 'result']
    """
    slots: list[str] = []
    for part in label_parts:
        if part in RATING_PARTS:
            slots += [f"white_{part}", f"black_{part}"]
        elif part == "outcome":
            slots.append("result")
    return slots


def condition_prefix(vocab: Vocab, label_parts: Sequence[str],
                     ratings: Callable[[str], tuple[int | None, int | None]], result: str | None) -> list[int]:
    """<bos> and the condition tokens of :func:`condition_slots`, in that order.

    `ratings(part)` gives the (white, black) ratings of a rating part ('elo' or 'engine'; None =
    unknown), `result` fills an outcome slot (anything but a game result = unknown).
    """
    out = [vocab.bos]
    for part in label_parts:
        if part in RATING_PARTS:
            white, black = ratings(part)
            out += [vocab.rating_token(white), vocab.rating_token(black)]
        elif part == "outcome":
            out.append(vocab.result_token(result))
    return out


@dataclass(frozen=True)
class Conditions:
    """What a prefix says about a game: ratings (lower bucket edges; None = unknown) and result."""

    white: int | None
    black: int | None
    result: str | None


def read_prefix(vocab: Vocab, slots: Sequence[str], prefix: Sequence[int] | np.ndarray) -> Conditions:
    """The conditions of a stored prefix ``<bos> cond...`` laid out as `slots`: each side's rating
    from its first rating slot (elo before engine), the result from the result slot."""

    def rating(color: str) -> int | None:
        for part in RATING_PARTS:
            name = f"{color}_{part}"
            if name in slots:
                return vocab.rating_of_token(int(prefix[1 + list(slots).index(name)]))
        return None

    result = vocab.result_of_token(int(prefix[1 + list(slots).index("result")])) if "result" in slots else None
    return Conditions(rating("white"), rating("black"), result)


def unconditional(vocab: Vocab, prompt: Sequence[int]) -> list[int]:
    """The same prompt with every condition token replaced by its unknown token (guidance's second row)."""
    out = []
    for t in prompt:
        if vocab.is_rating(t):
            out.append(vocab.unknown_rating)
        elif vocab.is_result(t):
            out.append(vocab.result_token(None))
        else:
            out.append(t)
    return out


# -- model inputs -------------------------------------------------------------------------------------
def board_array(board: chess.BaseBoard) -> np.ndarray:
    """64 piece codes of a board (a1..h8): 0 empty, 1-6 white PNBRQK, 7-12 black pnbrqk."""
    out = np.zeros(64, dtype=np.uint8)
    for sq, piece in board.piece_map().items():
        out[sq] = piece.piece_type + (0 if piece.color == chess.WHITE else 6)
    return out


def position_inputs(prefix: Sequence[int], board: chess.Board, context: int,
                    vocab: Vocab) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs for the game that led to ``board`` (from its root), laid out as in training.

    Returns tokens (T,), boards (T, 64) uint8 and plies (T,) for ``<bos> cond... moves`` where the
    last position predicts the next move; position t holds token t and the board after it. A game
    longer than the context keeps its prefix and the most recent moves, the prefix carrying the
    board before them, like a training segment.
    """
    moves = board.move_stack
    replay = board.root()
    boards = [board_array(replay)]
    for m in moves:
        replay.push(m)
        boards.append(board_array(replay))
    P = len(prefix)
    keep = min(len(moves), context - P)
    s = len(moves) - keep  # moves dropped from the front
    tokens = np.array(list(prefix) + vocab.encode_moves(moves[s:]), dtype=np.int64)
    out_boards = np.stack([boards[s]] * P + boards[s + 1 :]).astype(np.uint8)
    plies = np.array([s] * P + list(range(s + 1, len(moves) + 1)), dtype=np.int64)
    return tokens, out_boards, plies


def game_inputs(prompts: Sequence[Sequence[int]], boards: Sequence[chess.Board], context: int, vocab: Vocab, *,
                cut_front: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's inputs for a batch of games: tokens (B, T), boards (B, T, 64), plies (B, T).

    Row i is :func:`position_inputs` of ``prompts[i]`` and the game that led to ``boards[i]``.
    Rows of different lengths are padded at the end (``<pad>``, empty board, ply 0), or with
    `cut_front` cut from the front to the shortest (the rows of a KV-cached session share positions).
    """
    rows = [position_inputs(p, b, context, vocab) for p, b in zip(prompts, boards)]
    if cut_front:
        n = min(len(t) for t, _, _ in rows)
        return (np.stack([t[-n:] for t, _, _ in rows]), np.stack([b[-n:] for _, b, _ in rows]),
                np.stack([p[-n:] for _, _, p in rows]))
    width = max(len(t) for t, _, _ in rows)
    tokens = np.full((len(rows), width), vocab.pad, np.int64)
    out_boards = np.zeros((len(rows), width, 64), np.uint8)
    plies = np.zeros((len(rows), width), np.int64)
    for r, (t, b, p) in enumerate(rows):
        tokens[r, : len(t)], out_boards[r, : len(t)], plies[r, : len(t)] = t, b, p
    return tokens, out_boards, plies
