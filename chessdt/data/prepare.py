"""`chessdt prepare`: PGN archives -> train/val token shards with a condition prefix.

The pipeline streams every input once: read and split games (pgn.iter_games), drop games on their
headers, parse the survivors' moves in batches (compiled reader on all cores), drop games on their
moves, turn each into ``<bos> condition... moves... <end>``, and append it to the split its
identity hashes to. Output goes to a temporary directory that is renamed into place only after
``meta.json`` is written, so an interrupted run never leaves something that loads as complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from chessdt.config import DataConfig, to_dict
from chessdt.errors import UserError
from chessdt.files import (MARK_NAME, durable_rename, exclusive_beside, made_as, mark, partial_path,
                           remove_stale_partials)
from chessdt.data.archives import CountingReader, TruncatedArchive, byte_chunks, expand_inputs, text_blocks
from chessdt.data.pgn import (ParsedBatch, RawGame, condition_tokens, game_identity, header_skip_reason, in_val_split,
                              iter_games, parse_moves, parse_rating, ply_skip_reason)
from chessdt.data.shards import FORMAT_VERSION, SPLITS, SplitWriter
from chessdt.rules import white_class
from chessdt.tokenizer import Vocab, condition_slots


@dataclass
class PrepareSummary:
    """What a prepare run kept and skipped; also written to meta.json."""

    games: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    tokens: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    skipped: Counter[str] = field(default_factory=Counter)
    rating_buckets: Counter[int] = field(default_factory=Counter)  # games by mean-rating bucket
    games_seen: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def games_per_s(self) -> float:
        return self.games_seen / self.seconds if self.seconds > 0 else 0.0


class _Pipeline:
    """Holds the writers and counters while games stream through."""

    def __init__(self, directory: Path, cfg: DataConfig, vocab: Vocab, threads: int) -> None:
        self.cfg, self.vocab, self.threads = cfg, vocab, threads
        self.writers = {s: SplitWriter(directory, s, cfg.boards) for s in SPLITS}
        self.summary = PrepareSummary()
        self.seen: set[bytes] = set()
        self.pending: list[tuple[RawGame, bytes]] = []

    def add(self, game: RawGame) -> None:
        """Header checks now; moves are parsed when a batch is full."""
        self.summary.games_seen += 1
        reason = header_skip_reason(game.headers, self.cfg, game.malformed_headers)
        if reason:
            self.summary.skipped[reason] += 1
            return
        identity = game_identity(game)
        if self.cfg.dedupe:
            if identity in self.seen:
                self.summary.skipped["duplicate"] += 1
                return
            self.seen.add(identity)
        self.pending.append((game, identity))
        if len(self.pending) >= self.cfg.batch_games:
            self.flush()

    def flush(self) -> None:
        """Parse the pending games and append the good ones to their splits."""
        if not self.pending:
            return
        games = [g for g, _ in self.pending]
        parsed = parse_moves(games, self.cfg, self.vocab, threads=self.threads)
        lengths = np.diff(parsed.offsets)
        keep: dict[str, list[int]] = {s: [] for s in SPLITS}
        prefixes: list[list[int]] = []
        bucket = self.cfg.rating_bucket
        for i, (game, identity) in enumerate(self.pending):
            reason = parsed.errors[i] or ply_skip_reason(int(lengths[i]), self.cfg)
            if reason:
                self.summary.skipped[reason] += 1
                prefixes.append([])
                continue
            prefixes.append(condition_tokens(game.headers, self.cfg, self.vocab))
            keep["val" if in_val_split(identity, self.cfg) else "train"].append(i)
            known = [r for r in (parse_rating(game.headers.get("WhiteElo")),
                                 parse_rating(game.headers.get("BlackElo"))) if r is not None]
            if known:
                self.summary.rating_buckets[int(sum(known) / len(known)) // bucket * bucket] += 1
        for split, idx in keep.items():
            if idx:
                results = np.asarray([white_class(self.pending[i][0].headers.get("Result")) for i in idx], np.int8)
                self._write(split, np.asarray(idx), np.asarray([prefixes[i] for i in idx], np.int32), parsed,
                            results)
        self.pending = []

    def _write(self, split: str, idx: np.ndarray, prefix: np.ndarray, parsed: ParsedBatch,
               results: np.ndarray) -> None:
        """Append games `idx` of a parsed batch as <bos> condition... moves... <end> (vectorized)."""
        n_prefix = prefix.shape[1]  # the same for every game: fixed by the label setting
        n_moves = np.diff(parsed.offsets)[idx]
        seq_len = n_prefix + n_moves + 1
        row = np.repeat(np.arange(len(idx)), seq_len)  # which game each output position belongs to
        k = np.arange(int(seq_len.sum())) - np.repeat(np.cumsum(seq_len) - seq_len, seq_len)  # position in game
        move_at = np.clip(parsed.offsets[idx][row] + k - n_prefix, 0, max(len(parsed.moves) - 1, 0))
        tokens = np.where(k < n_prefix, prefix[row, np.minimum(k, n_prefix - 1)],
                          np.where(k < n_prefix + n_moves[row], parsed.moves[move_at], self.vocab.end))
        boards = None
        if parsed.boards is not None:
            # prefix tokens see the start position, each move the board after it, <end> the last one.
            first_board = parsed.offsets[idx] + idx
            boards = parsed.boards[first_board[row] + np.clip(k - n_prefix + 1, 0, n_moves[row])]
        self.writers[split].write(tokens, seq_len, boards, results)
        self.summary.games[split] += len(idx)
        self.summary.tokens[split] += len(tokens)

    def close(self, directory: Path) -> None:
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


def prepare(inputs: list[str], out: Path, cfg: DataConfig, workers: int = 0, force: bool = False,
            progress: bool = True) -> PrepareSummary:
    """Stream inputs into a prepared data directory at `out` (see shards.py for the format).

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
    threads = workers if workers > 0 else (os.cpu_count() or 1)
    vocab = Vocab(rating_bucket=cfg.rating_bucket)
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
            summary = _prepare_into(tmp, paths, skipped_files, cfg, vocab, threads, progress)
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return summary


def _prepare_into(tmp: Path, paths: list[Path], skipped_files: Counter[str], cfg: DataConfig, vocab: Vocab,
                  threads: int, progress: bool) -> PrepareSummary:
    """Write shards and meta.json into `tmp`."""
    pipe = _Pipeline(tmp, cfg, vocab, threads)
    pipe.summary.skipped.update(skipped_files)
    start = time.perf_counter()
    _run(paths, pipe, cfg, progress)
    pipe.flush()
    pipe.close(tmp)
    summary = pipe.summary
    summary.seconds = time.perf_counter() - start
    if sum(summary.games.values()) == 0:
        raise UserError("no game passed the filters; nothing written. Skipped: "
                        + ", ".join(f"{k}={v}" for k, v in summary.skipped.most_common()))
    meta = _meta(paths, cfg, vocab, summary)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    mark(tmp, "prepared")  # what lets a later --force replace it
    return summary


def _run(paths: list[Path], pipe: _Pipeline, cfg: DataConfig, progress: bool) -> None:
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc="prepare", disable=not progress,
              smoothing=0.1) as bar:
        start = time.perf_counter()
        for path in paths:
            counter = CountingReader(open(path, "rb"))
            last, games_before = 0, pipe.summary.games_seen
            try:
                for game in iter_games(text_blocks(byte_chunks(path, counter))):
                    pipe.add(game)
                    if counter.count - last >= 1 << 20:
                        bar.update(counter.count - last)
                        last = counter.count
                        rate = pipe.summary.games_seen / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(games=f"{pipe.summary.games_seen:,}", games_s=f"{rate:,.0f}")
            except TruncatedArchive as e:
                games = pipe.summary.games_seen - games_before
                if not cfg.keep_truncated:
                    raise UserError(
                        f"{path} is truncated: the compressed stream stops after {e.bytes_read:,} bytes "
                        f"({games:,} games read). Nothing was written. Re-download the file, or pass "
                        "--keep-truncated (data.keep_truncated = true) to keep the games before the break."
                    ) from None
                # The game at the break never reached the pipeline (iter_games yields a game only
                # when the next one starts), so every game counted so far is complete: keep them all.
                pipe.summary.games_seen += 1
                pipe.summary.skipped["truncated"] += 1
                pipe.summary.notes.append(f"{path}: truncated after {e.bytes_read:,} compressed bytes; "
                                          f"read the {games:,} complete games before the break, dropped "
                                          "the one cut by it")
            finally:
                counter.close()
            bar.update(counter.count - last)


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
        "boards": cfg.boards,
        "results": True,  # {split}.results: each game's result (the value head's target)
        "rating_buckets": {str(k): v for k, v in sorted(s.rating_buckets.items())},
        "config": to_dict(cfg),
        "seconds": round(s.seconds, 3),
        "notes": s.notes,
    }
