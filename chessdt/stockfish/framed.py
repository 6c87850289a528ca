"""Append-only game files written in whole batches: one zstd frame per batch (.zst) or plain text.

A crash can only tear the last batch; `read_whole` returns the complete part and `repair` cuts the
torn tail off, so resumable jobs (ladder generation, labeling) never lose or duplicate finished games.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import zstandard

_GAME_END = re.compile(r"(1-0|0-1|1/2-1/2|\*)\n\n")


def read_whole(path: Path) -> tuple[str, int]:
    """Text of the complete batches in `path` and the number of bytes they cover."""
    data = path.read_bytes()
    if path.suffix != ".zst":
        text = data.decode("utf-8", errors="replace")
        ends = [m.end() for m in _GAME_END.finditer(text)]  # each game ends: result, blank line
        whole = text[:ends[-1]] if ends else ""
        return whole, len(whole.encode("utf-8", errors="replace"))
    texts: list[bytes] = []
    pos = 0
    while pos < len(data):
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            chunk = d.decompress(data[pos:])
        except zstandard.ZstdError:
            break
        if not d.eof:
            break
        texts.append(chunk)
        pos = len(data) - len(d.unused_data)
    return b"".join(texts).decode("utf-8", errors="replace"), pos


def repair(path: Path) -> str:
    """Cut a torn final batch off `path` (if any); returns the text of the whole batches."""
    if not path.exists():
        return ""
    text, good = read_whole(path)
    if good < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)
    return text


class FramedWriter:
    """Buffers whole games and appends them as one batch (a zstd frame for .zst), fsynced."""

    def __init__(self, path: Path, level: int = 19) -> None:
        self.path = path
        self.level = level
        self.buffer: list[str] = []

    def add(self, text: str) -> None:
        """Queue one whole game (PGN text ending in a blank line)."""
        self.buffer.append(text)

    def flush(self) -> None:
        if not self.buffer:
            return
        data = "".join(self.buffer).encode()
        if self.path.suffix == ".zst":
            data = zstandard.ZstdCompressor(level=self.level).compress(data)
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.buffer.clear()
