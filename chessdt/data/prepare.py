"""`chessdt prepare`: PGN archives -> train/val token shards with a condition prefix.

The pipeline streams every input once. The main process decompresses each file and cuts the text
into game-aligned chunks (:func:`game_chunks`, a few MiB each, cut from the bytes alone); worker
processes turn a chunk into tokens: split it into games (pgn.games_in_text), drop games on their
headers, parse the survivors' moves (compiled reader, one thread each), drop games on their moves
and write each as ``<bos> condition... moves... <end>``. The main process takes the chunks' results
back in input order, drops repeats (:class:`chessdt.data.dedupe.SeenFilter`, bounded memory) and
appends each game to the split its identity hashes to, so the output is the same byte for byte
whatever the number of workers. Output goes to a temporary directory that is renamed into place
only after ``meta.json`` is written, so an interrupted run never leaves something that loads as
complete.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from chessdt.config import DataConfig, to_dict
from chessdt.errors import UserError
from chessdt.files import (MARK_NAME, durable_rename, exclusive_beside, made_as, mark, partial_path,
                           remove_stale_partials)
from chessdt.data.archives import CountingReader, TruncatedArchive, byte_chunks, expand_inputs, max_games
from chessdt.data.dedupe import SeenFilter, filter_bits
from chessdt.data.pgn import (condition_tokens, game_identity, games_in_text, header_skip_reason, in_val_split,
                              parse_moves, parse_rating, ply_skip_reason)
from chessdt.data.shards import FORMAT_VERSION, SPLITS, SplitWriter
from chessdt.rules import white_class
from chessdt.tokenizer import Vocab, condition_slots

CHUNK_BYTES = 1 << 22  # decompressed bytes per chunk (about 4,000 Lichess games): the unit of work


@dataclass
class PrepareSummary:
    """What a prepare run kept and skipped; also written to meta.json."""

    games: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    tokens: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    skipped: Counter[str] = field(default_factory=Counter)
    rating_buckets: Counter[int] = field(default_factory=Counter)  # games by mean-rating bucket
    games_seen: int = 0
    seconds: float = 0.0
    workers: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def games_per_s(self) -> float:
        return self.games_seen / self.seconds if self.seconds > 0 else 0.0


# -- cutting the byte stream ---------------------------------------------------------------------
class GameChunks:
    """Game-aligned chunks of a decompressed stream: each ends just before a line that starts a game.

    A cut goes before the first ``[`` line at or after `size` bytes into the chunk whose previous line
    is not a header (``[``) or escape (``%``) line: there pgn.iter_games always starts a new game, so
    reading the chunks one by one yields the same games as reading the stream whole. The cuts depend
    on the bytes alone. After the source raises (a truncated archive), :attr:`rest` holds the bytes
    after the last cut.
    """

    def __init__(self, source: Iterable[bytes], size: int = CHUNK_BYTES) -> None:
        self.source, self.size, self.rest = source, size, b""

    def __iter__(self) -> Iterator[bytes]:
        buf = bytearray()  # grows in place: appending does not copy what is there
        try:
            for data in self.source:
                buf += data
                while (cut := _cut(buf, self.size)) > 0:
                    yield bytes(memoryview(buf)[:cut])
                    del buf[:cut]
        except Exception:
            self.rest = bytes(buf)
            raise
        if buf:
            yield bytes(buf)


def _cut(buf: bytes | bytearray, size: int) -> int:
    """Offset of the first game start at or after `size` in buf, or 0 if none is there yet."""
    i = max(size, 1) - 1
    while (i := buf.find(b"\n[", i)) >= 0:
        line_start = buf.rfind(b"\n", 0, i) + 1
        prev = [p for p in buf[line_start:i].split(b"\r") if p][-1:]  # a lone CR also ends a line
        if not prev or prev[0][:1] not in (b"[", b"%"):
            return i + 1
        i += 1
    return 0


# -- one chunk, in a worker ------------------------------------------------------------------------
@dataclass
class ChunkResult:
    """A chunk's games after the header and move checks, in input order (nothing deduplicated yet)."""

    games_seen: int
    skipped: Counter[str]  # header skip reasons
    identities: np.ndarray  # (K, 16) uint8: every game that passed the header checks
    reasons: list[str]  # the move and length skip reasons that occur in the chunk
    error: np.ndarray  # (K,) int16 index into reasons of each game's, -1 when kept
    tokens: np.ndarray  # uint16: the kept games' sequences back to back
    lengths: np.ndarray  # (k,) int64 sequence length of each kept game
    results: np.ndarray  # (k,) int8 result class from White's side
    val: np.ndarray  # (k,) bool in the validation split
    rating_bucket: np.ndarray  # (k,) int64 bucket of the mean known rating, -1 when none


@functools.cache
def _vocab(rating_bucket: int) -> Vocab:
    return Vocab(rating_bucket=rating_bucket)


def process_chunk(data: bytes, cfg: DataConfig, first: bool = False, drop_last: bool = False) -> ChunkResult:
    """Tokens of one chunk's games (see :class:`ChunkResult`); `first`: the chunk opens a file (a BOM
    is dropped); `drop_last`: the last game was cut by a truncated archive and is left out."""
    text = data.decode("utf-8", "replace")
    if first and text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    games = list(games_in_text(text))
    if drop_last and games:
        games.pop()
    vocab = _vocab(cfg.rating_bucket)
    skipped: Counter[str] = Counter()
    passed = []
    for game in games:
        reason = header_skip_reason(game.headers, cfg, game.malformed_headers)
        if reason:
            skipped[reason] += 1
        else:
            passed.append(game)
    identities = [game_identity(g) for g in passed]
    parts = [parse_moves(passed[i : i + cfg.batch_games], cfg, vocab, threads=1)
             for i in range(0, len(passed), cfg.batch_games)]
    moves = np.concatenate([p.moves for p in parts]) if parts else np.zeros(0, np.int32)
    n_moves = np.concatenate([np.diff(p.offsets) for p in parts]) if parts else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_moves)]).astype(np.int64)
    parse_errors = [e for p in parts for e in p.errors]
    errors: list[str | None] = []
    kept, prefixes, results, val, buckets = [], [], [], [], []
    for i, game in enumerate(passed):
        reason = parse_errors[i] or ply_skip_reason(int(n_moves[i]), cfg)
        errors.append(reason)
        if reason:
            continue
        kept.append(i)
        prefixes.append(condition_tokens(game.headers, cfg, vocab))
        results.append(white_class(game.headers.get("Result")))
        val.append(in_val_split(identities[i], cfg))
        known = [r for r in (parse_rating(game.headers.get("WhiteElo")),
                             parse_rating(game.headers.get("BlackElo"))) if r is not None]
        buckets.append(int(sum(known) / len(known)) // cfg.rating_bucket * cfg.rating_bucket if known else -1)
    idx = np.asarray(kept, np.int64)
    n_prefix = len(prefixes[0]) if prefixes else 0  # the same for every game: fixed by the label setting
    tokens, lengths = _sequences(np.asarray(prefixes, np.int32).reshape(len(kept), n_prefix), moves, offsets,
                                 idx, vocab.end)
    reasons = sorted(set(e for e in errors if e))
    code = {reason: i for i, reason in enumerate(reasons)}
    error = np.array([code[e] if e else -1 for e in errors], np.int16)
    return ChunkResult(games_seen=len(games), skipped=skipped,
                       identities=np.frombuffer(b"".join(identities), np.uint8).reshape(-1, 16),
                       reasons=reasons, error=error, tokens=tokens, lengths=lengths, results=np.asarray(results, np.int8),
                       val=np.asarray(val, bool), rating_bucket=np.asarray(buckets, np.int64))


def _sequences(prefix: np.ndarray, moves: np.ndarray, offsets: np.ndarray, idx: np.ndarray,
               end: int) -> tuple[np.ndarray, np.ndarray]:
    """Games `idx` of a parsed batch as <bos> condition... moves... <end>, back to back (vectorized),
    and their lengths."""
    n_prefix = prefix.shape[1]
    n_moves = np.diff(offsets)[idx]
    seq_len = n_prefix + n_moves + 1
    row = np.repeat(np.arange(len(idx)), seq_len)  # which game each output position belongs to
    k = np.arange(int(seq_len.sum())) - np.repeat(np.cumsum(seq_len) - seq_len, seq_len)  # position in game
    move_at = np.clip(offsets[idx][row] + k - n_prefix, 0, max(len(moves) - 1, 0))
    tokens = np.where(k < n_prefix, prefix[row, np.minimum(k, max(n_prefix - 1, 0))] if n_prefix else 0,
                      np.where(k < n_prefix + n_moves[row], moves[move_at] if len(moves) else 0, end))
    return tokens.astype(np.uint16), seq_len.astype(np.int64)


# -- the ordered pipeline --------------------------------------------------------------------------
class _Pending(Protocol):
    def get(self) -> ChunkResult: ...


@dataclass
class _Done:
    """A chunk processed in this process (one worker): the same interface as a pool's AsyncResult."""

    result: ChunkResult

    def get(self) -> ChunkResult:
        return self.result


class _Pipeline:
    """Sends chunks to the workers, takes their results back in order, dedupes and writes."""

    def __init__(self, directory: Path, cfg: DataConfig, workers: int, max_games: int) -> None:
        self.cfg, self.workers = cfg, workers
        self.writers = {s: SplitWriter(directory, s) for s in SPLITS}
        self.summary = PrepareSummary(workers=workers)
        self.seen = SeenFilter(filter_bits(max_games, cfg.dedupe_bits)) if cfg.dedupe else None
        _vocab(cfg.rating_bucket)  # built once, before the workers fork
        self.pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        self.in_flight: deque[_Pending] = deque()

    def submit(self, data: bytes, first: bool = False, drop_last: bool = False) -> None:
        """Queue a chunk; keeps at most two per worker in flight (bounded memory)."""
        if self.pool is None:
            self.in_flight.append(_Done(process_chunk(data, self.cfg, first, drop_last)))
        else:
            self.in_flight.append(self.pool.apply_async(process_chunk, (data, self.cfg, first, drop_last)))
        while len(self.in_flight) > 2 * self.workers:
            self._take(self.in_flight.popleft().get())

    def drain(self) -> None:
        """Take every chunk in flight."""
        while self.in_flight:
            self._take(self.in_flight.popleft().get())

    def _take(self, r: ChunkResult) -> None:
        s = self.summary
        s.games_seen += r.games_seen
        s.skipped.update(r.skipped)
        dup = self.seen.seen(r.identities) if self.seen is not None else np.zeros(len(r.error), bool)
        if dup.any():
            s.skipped["duplicate"] += int(dup.sum())
        counts = np.bincount(r.error[~dup & (r.error >= 0)], minlength=len(r.reasons))
        s.skipped.update({reason: int(n) for reason, n in zip(r.reasons, counts) if n})
        mask = ~dup[r.error < 0]  # (k,) the parsed games that are not repeats
        for split in SPLITS:
            games = mask & (r.val if split == "val" else ~r.val)
            if games.any():
                self.writers[split].write(r.tokens[np.repeat(games, r.lengths)], r.lengths[games], r.results[games])
                s.games[split] += int(games.sum())
                s.tokens[split] += int(r.lengths[games].sum())
        buckets, n = np.unique(r.rating_bucket[mask & (r.rating_bucket >= 0)], return_counts=True)
        s.rating_buckets.update(dict(zip(buckets.tolist(), n.tolist())))

    def close(self, directory: Path | None) -> None:
        """Stop the workers; close the writers when `directory` is given (the run completed)."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        if directory is not None:
            for split, w in self.writers.items():
                w.close(directory, split)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename tmp to out, replacing an old out only after the new one is complete (and on disk), and
    only if the old one is a prepared data set chessdt marked (or an empty folder)."""
    old = partial_path(out, "old")
    if out.exists():
        if not _is_marked_set(out) and any(out.iterdir()):
            raise UserError(f"{out} changed while preparing and is no longer a prepared data set; "
                            "nothing was replaced; choose another --out")
        out.rename(old)
    durable_rename(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def _is_marked_set(out: Path) -> bool:
    record = made_as(out)
    return record is not None and record["kind"] == "prepared"


def _check_output(out: Path, force: bool) -> None:
    """Refuse an output that is a file, or a prepared data set without `force`; never replace
    anything chessdt did not mark as a prepared data set (a folder may hold anything, a checkpoint
    has a meta.json too, and a set from before the mark cannot be told from a copy the user edited)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the prepared data set")
    if not out.exists() or not any(out.iterdir()):
        return
    if _is_marked_set(out):
        if not force:
            raise UserError(f"{out} already holds a prepared data set; pass --force to replace it")
        return
    if (out / "model.safetensors").exists() or (out / "meta.json").is_file() and _meta_says(out, "step"):
        raise UserError(f"{out} is a checkpoint, not a prepared data set; chessdt never replaces it, even with "
                        "--force; choose another --out")
    if (out / "meta.json").is_file() and _meta_says(out, "prefix") and (out / "train.offsets").is_file():
        raise UserError(f"{out} holds a prepared data set from an older chessdt, without the {MARK_NAME} mark that "
                        "lets --force replace it; delete it yourself if you mean to, or choose another --out")
    raise UserError(f"{out} exists and is not a prepared data set (no {MARK_NAME}), so chessdt will not "
                    "replace it, even with --force; choose another --out")


def _meta_says(out: Path, key: str) -> bool:
    """Whether out/meta.json is a JSON object with `key` (its kind: a checkpoint has 'step')."""
    try:
        meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and key in meta


def prepare(inputs: list[str], out: Path, cfg: DataConfig, workers: int | None = None, force: bool = False,
            progress: bool = True, chunk_bytes: int = CHUNK_BYTES) -> PrepareSummary:
    """Stream inputs into a prepared data directory at `out` (see shards.py for the format).

    `workers` (default cfg.workers; 0 = every core) processes parse chunks of `chunk_bytes`; one
    worker runs in this process. The output does not depend on either.

    Raises UserError for missing inputs, an output that is not a prepared data set, one that is
    without `force`, another prepare writing the same output, or a truncated archive (unless
    cfg.keep_truncated, which keeps the games read before the break).
    """
    out = Path(out).resolve()  # '.' and 'a/..' have no name to put a partial folder beside
    if out.parent == out:
        raise UserError(f"--out {out}: cannot write a prepared data set over a file system root")
    _check_output(out, force)
    paths, skipped_files = expand_inputs(inputs)
    if not paths:
        raise UserError(f"no PGN files among the inputs ({', '.join(inputs)})")
    n = cfg.workers if workers is None else workers
    n = n if n > 0 else len(os.sched_getaffinity(0))
    out.parent.mkdir(parents=True, exist_ok=True)
    # the lock sits beside `out` (hidden), since `out` itself is replaced by a rename
    with exclusive_beside(out, f"prepare output {out}"):
        _check_output(out, force)  # again: another run may have finished while we waited
        remove_stale_partials(out)
        tmp = partial_path(out, "partial")
        if tmp.exists():  # a folder of our own name and pid: a dead process's (ours runs), if it bears the mark
            if made_as(tmp) is None:
                raise UserError(f"{tmp} is in the way and chessdt did not write it; move it and run again")
            shutil.rmtree(tmp)
        tmp.mkdir()
        mark(tmp, "partial")
        try:
            summary = _prepare_into(tmp, paths, skipped_files, cfg, n, chunk_bytes, progress)
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return summary


def _prepare_into(tmp: Path, paths: list[Path], skipped_files: Counter[str], cfg: DataConfig, workers: int,
                  chunk_bytes: int, progress: bool) -> PrepareSummary:
    """Write shards and meta.json into `tmp`."""
    pipe = _Pipeline(tmp, cfg, workers, max_games(paths))
    pipe.summary.skipped.update(skipped_files)
    start = time.perf_counter()
    try:
        _run(paths, pipe, cfg, chunk_bytes, progress)
    finally:
        pipe.close(None)
    pipe.close(tmp)
    summary = pipe.summary
    summary.seconds = time.perf_counter() - start
    if sum(summary.games.values()) == 0:
        raise UserError("no game passed the filters; nothing written. Skipped: "
                        + ", ".join(f"{k}={v}" for k, v in summary.skipped.most_common()))
    meta = _meta(paths, cfg, _vocab(cfg.rating_bucket), summary)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    mark(tmp, "prepared")  # what lets a later --force replace it
    return summary


def _run(paths: list[Path], pipe: _Pipeline, cfg: DataConfig, chunk_bytes: int, progress: bool) -> None:
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc="prepare", disable=not progress,
              smoothing=0.1) as bar:
        start = time.perf_counter()
        for path in paths:
            counter = CountingReader(open(path, "rb"))
            chunks = GameChunks(byte_chunks(path, counter), chunk_bytes)
            pipe.drain()  # so that games_seen counts up to this file
            last, first, games_before = 0, True, pipe.summary.games_seen
            try:
                for chunk in chunks:
                    pipe.submit(chunk, first=first)
                    first = False
                    if counter.count - last >= 1 << 20:
                        bar.update(counter.count - last)
                        last = counter.count
                        rate = pipe.summary.games_seen / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(games=f"{pipe.summary.games_seen:,}", games_s=f"{rate:,.0f}")
            except TruncatedArchive as e:
                # The bytes after the last cut end with the game the break cut; the ones before it
                # are complete: keep them all.
                pipe.submit(chunks.rest, first=first, drop_last=True)
                pipe.drain()
                games = pipe.summary.games_seen - games_before
                if not cfg.keep_truncated:
                    raise UserError(
                        f"{path} is truncated: the compressed stream stops after {e.bytes_read:,} bytes "
                        f"({games:,} games read). Nothing was written. Re-download the file, or pass "
                        "--keep-truncated (data.keep_truncated = true) to keep the games before the break."
                    ) from None
                pipe.summary.games_seen += 1
                pipe.summary.skipped["truncated"] += 1
                pipe.summary.notes.append(f"{path}: truncated after {e.bytes_read:,} compressed bytes; "
                                          f"read the {games:,} complete games before the break, dropped "
                                          "the one cut by it")
            finally:
                counter.close()
            bar.update(counter.count - last)
        pipe.drain()


def _meta(paths: list[Path], cfg: DataConfig, vocab: Vocab, s: PrepareSummary) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "inputs": [str(p) for p in paths],
        "games": dict(s.games),
        "tokens": dict(s.tokens),
        "games_seen": s.games_seen,
        "skipped": dict(s.skipped.most_common()),
        "vocab_size": vocab.size,
        "vocab_hash": vocab.hash,
        "rating_bucket": cfg.rating_bucket,
        "label": cfg.label,
        "prefix": condition_slots(cfg.label_parts),
        "results": True,  # {split}.results: each game's result (the value head's target)
        "rating_buckets": {str(k): v for k, v in sorted(s.rating_buckets.items())},
        "config": to_dict(cfg),
        "seconds": round(s.seconds, 3),
        "notes": s.notes,
    }
