"""Games out of PGN text: split a stream into games, filter them on their headers, parse their moves.

Reading is line based and constant in memory: a game is its header lines plus the movetext
lines that follow, up to the next header line. Headers are parsed here (a regex per line);
moves are parsed in batches by a compiled reader (``rust``) or by python-chess (``python-chess``,
the reference). Every game that is dropped is dropped for a named reason, counted by the caller.

>>> games = list(iter_games(io.StringIO('[White "a"]\\n[Result "1-0"]\\n\\n1. e4 1-0\\n')))
>>> games[0].headers, games[0].movetext
({'White': 'a', 'Result': '1-0'}, '1. e4 1-0')
>>> time_control_class("180+2")
'blitz'
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import chess
import chess.pgn
import numpy as np

from chessdt.config import DataConfig
from chessdt.rules import RESULTS
from chessdt.data.archives import CountingReader, TruncatedArchive, byte_chunks, expand_inputs, max_games, text_blocks
from chessdt.data.dedupe import SeenFilter, filter_bits
from chessdt.tokenizer import NUM_MOVES, Vocab, board_array, condition_prefix

_HEADERS = re.compile(r'^\[\s*([A-Za-z0-9_]+)\s+"((?:[^"\\\n]|\\.)*)"\s*\]\s*$', re.MULTILINE)


# -- splitting a stream into games ----------------------------------------------------------------
@dataclass
class RawGame:
    """One game as read: parsed headers and its movetext, not yet checked."""

    headers: dict[str, str]
    movetext: str
    malformed_headers: int = 0  # header-looking lines that did not parse


def _make_game(header_lines: list[str], moves: list[str]) -> RawGame:
    """A RawGame from its header lines (parsed with one regex call) and movetext lines."""
    text = "\n".join(header_lines)
    pairs = _HEADERS.findall(text)
    if "\\" in text:
        headers = {k: (v.replace('\\"', '"').replace("\\\\", "\\") if "\\" in v else v) for k, v in pairs}
    else:
        headers = dict(pairs)
    return RawGame(headers, "\n".join(moves), len(header_lines) - len(pairs))


def iter_games(source: Iterable[str] | Iterable[list[str]] | IO[str]) -> Iterator[RawGame]:
    """Group lines into games: header lines, then movetext until the next header line.

    `source` is lines (a text stream works) or lists of lines (from text_blocks). Lines starting
    with '%' are escapes and are dropped; a header line that does not parse is counted on the game
    (it is not silently taken as movetext).
    """
    header_lines: list[str] = []
    moves: list[str] = []
    in_moves = False
    for block in source:
        for line in ([block.rstrip("\r\n")] if isinstance(block, str) else block):
            if line.startswith("["):
                if in_moves:
                    yield _make_game(header_lines, moves)
                    header_lines, moves, in_moves = [], [], False
                header_lines.append(line.rstrip())
            elif not line or line.isspace():
                if header_lines:
                    in_moves = True
            elif not line.startswith("%"):
                moves.append(line)
                in_moves = True
    if header_lines or moves:
        yield _make_game(header_lines, moves)


def games_in_text(text: str) -> Iterator[RawGame]:
    """The games of a whole text without CRs: the same as ``iter_games([text.split("\\n")])``, faster.

    A blank line followed by a ``[`` line always starts a game (or follows nothing), so the text
    is cut there first; a piece made of header lines, a blank line and movetext without ``[`` or
    ``%`` lines (every game of a Lichess dump) is then read without a per-line loop, and any other
    piece by iter_games.

    >>> [g.headers for g in games_in_text('[A "1"]\\n\\n1. e4 *\\n\\n[B "2"]\\n[C "3"]\\n1. d4 *\\n')]
    [{'A': '1'}, {'B': '2', 'C': '3'}]
    """
    for k, piece in enumerate(text.split("\n\n[")):
        if k:
            piece = "[" + piece
        head, sep, body = piece.partition("\n\n")
        if (sep and head[:1] == "[" and head.count("\n") == head.count("\n[") and body[:1] not in ("[", "%")
                and "\n[" not in body and "\n%" not in body):
            yield _make_game([line.rstrip() for line in head.split("\n")],
                             [line for line in body.split("\n") if line and not line.isspace()])
        else:
            yield from iter_games([piece.split("\n")])


# -- header facts and filters ---------------------------------------------------------------------
def parse_rating(value: str | None) -> int | None:
    """A rating tag as an int; None for missing, '?', '-', 0 or junk.

    >>> parse_rating("1500"), parse_rating("?"), parse_rating("0"), parse_rating("1500.7")
    (1500, None, None, 1500)
    """
    if not value:
        return None
    try:
        r = int(float(value))
    except ValueError:
        return None
    return r if r > 0 else None


def time_control_class(tc: str | None) -> str:
    """Lichess's class of a TimeControl tag: base seconds + 40 x increment.

    >>> [time_control_class(t) for t in ("15+0", "60+0", "300+3", "600+0", "1800+20", "-", None)]
    ['ultrabullet', 'bullet', 'blitz', 'rapid', 'classical', 'correspondence', 'unknown']
    """
    if not tc or tc == "?":
        return "unknown"
    if tc == "-":
        return "correspondence"
    base, _, inc = tc.partition("+")
    try:
        total = float(base) + 40 * float(inc or 0)
    except ValueError:
        return "unknown"
    if total < 30:
        return "ultrabullet"
    if total < 180:
        return "bullet"
    if total < 480:
        return "blitz"
    if total < 1500:
        return "rapid"
    return "classical"


def game_identity(game: RawGame) -> bytes:
    """A 16-byte identity: the Site URL when it names one game, else headers + moves."""
    site = game.headers.get("Site", "")
    if "://" in site:
        key = site
    else:
        h = game.headers
        key = "\x1f".join([h.get(k, "") for k in ("Event", "Site", "Date", "Round", "White", "Black", "Result")]
                          + [" ".join(game.movetext.split())])
    return hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=16).digest()


def in_val_split(identity: bytes, cfg: DataConfig) -> bool:
    """Validation membership from a salted hash of the identity: stable across runs and machines."""
    h = hashlib.blake2b(identity, digest_size=8, key=cfg.split_salt.encode()[:64]).digest()
    return int.from_bytes(h, "little") / 2.0**64 < cfg.val_fraction


def header_skip_reason(headers: dict[str, str], cfg: DataConfig, malformed: int = 0) -> str | None:
    """Why a game is dropped on its headers alone, or None to keep it."""
    if malformed:
        return "malformed_header"
    variant = headers.get("Variant", "Standard").strip().lower()
    if variant not in ("standard", "chess", ""):
        return "non_standard_variant"
    if "FEN" in headers or headers.get("SetUp", "0").strip() == "1":
        return "setup_position"
    if headers.get("Result", "*") not in RESULTS:
        return "missing_result"
    white, black = parse_rating(headers.get("WhiteElo")), parse_rating(headers.get("BlackElo"))
    if cfg.require_both_elo and (white is None or black is None):
        return "missing_elo"
    for r in (white, black):
        if r is not None and not cfg.min_elo <= r <= cfg.max_elo:
            return "elo_out_of_range"
    if cfg.rated_only:
        event = headers.get("Event", "").lower()
        if "casual" in event or "unrated" in event:
            return "unrated"
    if cfg.time_controls and time_control_class(headers.get("TimeControl")) not in cfg.time_controls:
        return "time_control"
    if headers.get("Termination", "") in cfg.drop_terminations:
        return "termination"
    if "engine" in cfg.label_parts:
        tw, tb = cfg.engine_tags
        if parse_rating(headers.get(tw)) is None or parse_rating(headers.get(tb)) is None:
            return "missing_engine_rating"
    return None


def condition_tokens(headers: dict[str, str], cfg: DataConfig, vocab: Vocab) -> list[int]:
    """<bos> followed by the condition tokens the label setting asks for, from a game's headers."""

    def ratings(part: str) -> tuple[int | None, int | None]:
        tw, tb = ("WhiteElo", "BlackElo") if part == "elo" else cfg.engine_tags
        return parse_rating(headers.get(tw)), parse_rating(headers.get(tb))

    return condition_prefix(vocab, cfg.label_parts, ratings, headers.get("Result"))


# -- move parsing -----------------------------------------------------------------------------------
@dataclass
class ParsedBatch:
    """Moves of a batch of games, back to back, with per-game offsets and error reasons."""

    moves: np.ndarray  # (M,) int32 move token ids
    offsets: np.ndarray  # (G+1,) int64 into moves
    boards: np.ndarray | None  # (M+G, 64) uint8: each game's start position then one per move
    errors: list[str | None]  # skip reason per game, None when the game parsed

    def game_moves(self, i: int) -> np.ndarray:
        return self.moves[self.offsets[i] : self.offsets[i + 1]]

    def game_boards(self, i: int) -> np.ndarray:
        """(n_moves + 1, 64) boards of game i: start position, then after each move."""
        assert self.boards is not None
        return self.boards[self.offsets[i] + i : self.offsets[i + 1] + i + 1]


def _error_reason(message: str) -> str:
    m = message.lower()
    if "san" in m or "legal move" in m or "illegal" in m or "ambiguous" in m:  # python-chess: "no matching legal move"
        return "illegal_move"
    return "unparsable_movetext"


def parse_rust(games: list[RawGame], vocab: Vocab, threads: int, boards: bool) -> ParsedBatch:
    """Parse with the compiled reader (shakmaty, via rust_pgn_reader_python_binding)."""
    import rust_pgn_reader_python_binding as rpr

    texts = [g.movetext if g.movetext.strip() else "*" for g in games]  # it drops empty strings
    parsed = rpr.parse_games_from_strings(texts, num_threads=max(threads, 1))
    if parsed.num_games != len(texts):  # the reader drops or splits odd inputs: align one by one
        return _concat([parse_rust([g], vocab, 1, boards) for g in games])
    move_parts, board_parts, lengths, errors = [], [], [], []
    table = vocab.move_table
    for chunk in parsed.chunks:
        promo = chunk.promotions.astype(np.int32)
        idx = (chunk.from_squares.astype(np.int32) * 64 + chunk.to_squares) * 5 + np.where(promo < 0, 0, promo - 1)
        move_parts.append(table[idx])
        lengths.append(np.diff(chunk.move_offsets.astype(np.int64)))
        if boards:
            board_parts.append(chunk.boards.reshape(-1, 64))
            assert chunk.num_positions == chunk.num_moves + chunk.num_games
        valid = chunk.valid
        for ok, err in zip(valid, chunk.parse_errors):
            errors.append(None if ok and err is None else _error_reason(err or "unparsable"))
    lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    moves = np.concatenate(move_parts) if move_parts else np.zeros(0, np.int32)
    # A move outside the vocabulary (e.g. castling written king-takes-rook) would be -1.
    for i in np.unique(np.searchsorted(offsets, np.flatnonzero(moves < 0), side="right") - 1):
        errors[int(i)] = errors[int(i)] or "move_not_in_vocab"
    board_arr = np.concatenate(board_parts) if boards and board_parts else (np.zeros((len(games), 64), np.uint8) if boards else None)
    return ParsedBatch(moves, offsets, board_arr, errors)


def parse_python_chess(games: list[RawGame], vocab: Vocab, boards: bool) -> ParsedBatch:
    """Reference parser: python-chess's read_game, one game at a time."""
    move_parts: list[np.ndarray] = []
    board_parts: list[np.ndarray] = []
    errors: list[str | None] = []
    for g in games:
        game = chess.pgn.read_game(io.StringIO(g.movetext if g.movetext.strip() else "*"))
        ids: list[int] = []
        positions: list[np.ndarray] = []
        error: str | None = None
        if game is None:
            error = "unparsable_movetext"
        else:
            board = game.board()
            if boards:
                positions.append(board_array(board))
            for move in game.mainline_moves():
                if not move:
                    error = "illegal_move"  # a null move is not a chess move
                    break
                try:
                    ids.append(vocab.encode_move(move))
                except KeyError:
                    error = "move_not_in_vocab"
                    break
                board.push(move)
                if boards:
                    positions.append(board_array(board))
            if error is None and game.errors:
                error = _error_reason(str(game.errors[0]))
        errors.append(error)
        move_parts.append(np.asarray(ids, np.int32))
        if boards:
            board_parts.append(np.stack(positions) if positions else np.zeros((1, 64), np.uint8))
    lens = np.array([len(m) for m in move_parts], np.int64)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    moves = np.concatenate(move_parts) if move_parts else np.zeros(0, np.int32)
    board_arr = np.concatenate(board_parts) if boards and board_parts else None
    return ParsedBatch(moves, offsets, board_arr, errors)


def _concat(batches: list[ParsedBatch]) -> ParsedBatch:
    lens = np.concatenate([np.diff(b.offsets) for b in batches])
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    boards = None if batches[0].boards is None else np.concatenate([b.boards for b in batches if b.boards is not None])
    return ParsedBatch(np.concatenate([b.moves for b in batches]), offsets, boards,
                       [e for b in batches for e in b.errors])


def parse_moves(games: list[RawGame], cfg: DataConfig, vocab: Vocab, threads: int = 1,
                boards: bool = False) -> ParsedBatch:
    """Parse a batch of games with the configured reader (and each position's board, if asked:
    prepare does not store them, the tests compare the readers on them)."""
    if not games:
        return ParsedBatch(np.zeros(0, np.int32), np.zeros(1, np.int64),
                           np.zeros((0, 64), np.uint8) if boards else None, [])
    if cfg.reader == "rust":
        return _reread_illegal(games, parse_rust(games, vocab, threads, boards), vocab, boards)
    return parse_python_chess(games, vocab, boards)


def _reread_illegal(games: list[RawGame], batch: ParsedBatch, vocab: Vocab, boards: bool) -> ParsedBatch:
    """`batch` with the games the compiled reader calls illegal read again by python-chess, so the two
    readers agree: python-chess also accepts moves written in UCI ('e2e4') inside the movetext, which
    shakmaty's SAN parser rejects. Such games are rare, so the slower reader costs little."""
    retry = [i for i, e in enumerate(batch.errors) if e == "illegal_move"]
    if not retry:
        return batch
    parts, start = [], 0
    for i in retry:
        if i > start:
            parts.append(_games_of(batch, start, i))
        parts.append(parse_python_chess([games[i]], vocab, boards))
        start = i + 1
    if start < len(games):
        parts.append(_games_of(batch, start, len(games)))
    return _concat(parts)


def _games_of(batch: ParsedBatch, lo: int, hi: int) -> ParsedBatch:
    """Games lo..hi-1 of a batch, as a batch of their own."""
    a, b = int(batch.offsets[lo]), int(batch.offsets[hi])
    return ParsedBatch(batch.moves[a:b], batch.offsets[lo : hi + 1] - a,
                       None if batch.boards is None else batch.boards[a + lo : b + hi], batch.errors[lo:hi])


def ply_skip_reason(n_plies: int, cfg: DataConfig) -> str | None:
    if n_plies == 0:
        return "no_moves"
    if n_plies < cfg.min_plies:
        return "too_short"
    if n_plies > cfg.max_plies:
        return "too_long"
    return None


assert NUM_MOVES == 1968


# -- stats ------------------------------------------------------------------------------------------
@dataclass
class GameStats:
    """What `chessdt games stats` reports about a set of files."""

    files: list[str] = field(default_factory=list)
    games: int = 0
    kept: int = 0
    ratings: Counter[int] = field(default_factory=Counter)  # per player, 100-Elo buckets
    time_controls: Counter[str] = field(default_factory=Counter)
    time_control_tags: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    terminations: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "games": self.games, "kept": self.kept,
            "ratings": {str(k): v for k, v in sorted(self.ratings.items())},
            "time_controls": dict(self.time_controls.most_common()),
            "time_control_tags": dict(self.time_control_tags.most_common(20)),
            "results": dict(self.results.most_common()),
            "terminations": dict(self.terminations.most_common()),
            "skipped": dict(self.skipped.most_common()), "notes": self.notes,
        }

    def format(self) -> str:
        """Plain-text tables for the terminal."""
        out = [f"files: {len(self.files)}", f"games: {self.games:,}",
               f"kept by the filters: {self.kept:,}"]

        def table(title: str, counts: dict[Any, int], total: int, order: list[Any] | None = None) -> None:
            if not counts:
                return
            out.append(f"\n{title}:")
            keys = order if order is not None else [k for k, _ in Counter(counts).most_common()]
            peak = max(counts.values())
            for k in keys:
                n = counts[k]
                bar = "#" * max(1, round(30 * n / peak)) if n else ""
                out.append(f"  {str(k):>16} {n:>10,} {100.0 * n / max(total, 1):5.1f}%  {bar}")

        players = sum(self.ratings.values())
        table("player ratings (Elo bucket)", dict(self.ratings), players, sorted(self.ratings))
        table("time control class", dict(self.time_controls), self.games)
        table("most common TimeControl tags", dict(self.time_control_tags.most_common(10)), self.games)
        table("results", dict(self.results), self.games)
        table("terminations", dict(self.terminations), self.games)
        table("skipped (reason)", dict(self.skipped), self.games)
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)


def collect_stats(inputs: list[str], cfg: DataConfig, with_moves: bool = False,
                  progress: bool = True) -> GameStats:
    """Header statistics over files (moves parsed only when asked), with the config's skip reasons."""
    from tqdm import tqdm

    vocab = Vocab(rating_bucket=cfg.rating_bucket)
    paths, skipped_files = expand_inputs(inputs)
    stats = GameStats(files=[str(p) for p in paths])
    stats.skipped.update(skipped_files)
    seen = SeenFilter(filter_bits(max_games(paths), cfg.dedupe_bits))
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, disable=not progress, desc="stats") as bar:
        for path in paths:
            counter = CountingReader(open(path, "rb"))
            passed: list[RawGame] = []  # passed the header checks; deduplicated and counted a batch at a time
            last = 0
            try:
                for game in iter_games(text_blocks(byte_chunks(path, counter))):
                    stats.games += 1
                    h = game.headers
                    for tag in ("WhiteElo", "BlackElo"):
                        r = parse_rating(h.get(tag))
                        if r is not None:
                            stats.ratings[r // 100 * 100] += 1
                    stats.time_controls[time_control_class(h.get("TimeControl"))] += 1
                    stats.time_control_tags[h.get("TimeControl", "(none)")] += 1
                    stats.results[h.get("Result", "(none)")] += 1
                    stats.terminations[h.get("Termination", "(none)")] += 1
                    reason = header_skip_reason(h, cfg, game.malformed_headers)
                    if reason:
                        stats.skipped[reason] += 1
                    else:
                        passed.append(game)
                        if len(passed) >= cfg.batch_games:
                            _stats_passed(passed, cfg, vocab, stats, seen, with_moves)
                            passed = []
                    if counter.count != last:
                        bar.update(counter.count - last)
                        last = counter.count
            except TruncatedArchive as e:
                stats.notes.append(f"{path}: truncated after {e.bytes_read:,} compressed bytes; "
                                   "counts cover the games before the break")
                stats.skipped["truncated"] += 1
            finally:
                counter.close()
            _stats_passed(passed, cfg, vocab, stats, seen, with_moves)
            bar.update(counter.count - last)
    return stats


def _stats_passed(games: list[RawGame], cfg: DataConfig, vocab: Vocab, stats: GameStats, seen: SeenFilter,
                  with_moves: bool) -> None:
    """Count games that passed the header checks: repeats (with cfg.dedupe), then the move checks."""
    if not games:
        return
    dup = seen.seen(np.frombuffer(b"".join(game_identity(g) for g in games), np.uint8).reshape(-1, 16)) \
        if cfg.dedupe else np.zeros(len(games), bool)
    stats.skipped["duplicate"] += int(dup.sum())
    if not stats.skipped["duplicate"]:
        del stats.skipped["duplicate"]
    fresh = [g for g, d in zip(games, dup) if not d]
    if with_moves:
        _stats_moves(fresh, cfg, vocab, stats)
    else:
        stats.kept += len(fresh)


def _stats_moves(games: list[RawGame], cfg: DataConfig, vocab: Vocab, stats: GameStats) -> None:
    parsed = parse_moves(games, cfg, vocab, threads=os.cpu_count() or 1)
    for i, err in enumerate(parsed.errors):
        reason = err or ply_skip_reason(int(parsed.offsets[i + 1] - parsed.offsets[i]), cfg)
        if reason:
            stats.skipped[reason] += 1
        else:
            stats.kept += 1
