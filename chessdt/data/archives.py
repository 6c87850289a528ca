"""PGN archives as byte and text streams: find the files, decompress them, count the bytes read.

Plain, gzip, bzip2 and zstd files are read in chunks of about a megabyte, constant in memory; a
compressed file that ends before its end-of-stream marker raises :class:`TruncatedArchive` (the
caller decides whether to keep the games read so far).
"""

from __future__ import annotations

import bz2
import codecs
import glob
import gzip
import io
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, TextIO, cast

import zstandard

from chessdt.errors import UserError

PGN_SUFFIXES = (".pgn", ".pgn.gz", ".pgn.bz2", ".pgn.zst", ".pgn.zstd")
CHUNK_BYTES = 1 << 20


class TruncatedArchive(UserError):
    """A compressed file ended before its end-of-stream marker (`prepare` may keep what came before;
    everywhere else it is the user's error: the file needs downloading again)."""

    def __init__(self, path: Path, bytes_read: int, games_read: int = 0) -> None:
        self.path, self.bytes_read, self.games_read = path, bytes_read, games_read
        super().__init__(f"{path}: compressed stream is truncated after {bytes_read:,} compressed bytes "
                         "(an interrupted download or copy?); nothing after the break was read")


# -- finding and opening files ---------------------------------------------------------------------
def is_pgn_path(path: Path) -> bool:
    return path.name.lower().endswith(PGN_SUFFIXES)


# fewest bytes on disk a game takes (what sizes the dedupe filter): a Lichess game is about 130
# bytes in zstd and 650 as text; any game needs at least a header line and a result
MIN_GAME_BYTES = {"compressed": 40, "text": 120}


def max_games(paths: Iterable[Path]) -> int:
    """An upper bound on the games in PGN files, from their sizes."""
    def least(p: Path) -> int:
        return MIN_GAME_BYTES["compressed" if p.name.lower().endswith((".gz", ".bz2", ".zst", ".zstd")) else "text"]
    return sum(p.stat().st_size // least(p) + 1 for p in paths)


def _kind(path: Path) -> str:
    """What a path that is neither a file nor a folder is, in words."""
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "a special file"


def expand_inputs(inputs: Iterable[str]) -> tuple[list[Path], Counter[str]]:
    """Files, directories (searched recursively) and globs -> PGN files, plus skipped-file counts.

    A path that does not exist and matches nothing is a UserError; non-PGN files inside a
    directory are skipped and counted as ``not_pgn_file``.
    """
    paths: list[Path] = []
    skipped: Counter[str] = Counter()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                if is_pgn_path(f):
                    paths.append(f)
                else:
                    skipped["not_pgn_file"] += 1
        elif p.is_file():
            paths.append(p)
        elif p.exists():  # a FIFO, socket or device: it exists, so "no such file" would mislead
            raise UserError(f"{item} is {_kind(p)}, not a regular file: give PGN files, folders or globs")
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            files = [m for m in matches if m.is_file()]
            special = [m for m in matches if m.exists() and not m.is_file() and not m.is_dir()]
            if not files and special:
                raise UserError(f"{item} matches only {_kind(special[0])} ({special[0]}), not a regular file")
            if not files:
                raise UserError(f"no such file, directory or glob match: {item}")
            for f in files:
                if is_pgn_path(f):
                    paths.append(f)
                else:
                    skipped["not_pgn_file"] += 1
    unique: dict[Path, Path] = {}  # resolved -> first spelling, in input order
    for p in paths:
        unique.setdefault(p.resolve(), p)
    return list(unique.values()), skipped


class _Readable(Protocol):
    """A binary stream: a file, a decompressor's reader, a CountingReader."""

    def read(self, size: int = -1, /) -> bytes | None: ...


class CountingReader(io.RawIOBase):
    """Wraps a binary file and counts the bytes read from it (progress on compressed input)."""

    def __init__(self, f: io.BufferedIOBase) -> None:
        self.f = f
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)
        self.count += n or 0
        return n or 0

    def close(self) -> None:
        self.f.close()
        super().close()


def _zstd_chunks(raw: _Readable, path: Path, counter: CountingReader) -> Iterator[bytes]:
    """Decompress a (multi-frame) zstd stream; raise TruncatedArchive if it stops mid-frame."""
    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    fed = False
    while data := raw.read(CHUNK_BYTES):
        while data:
            fed = True
            try:
                out = dobj.decompress(data)
            except zstandard.ZstdError as e:
                raise UserError(f"{path}: not a valid zstd stream ({e})") from None
            if out:
                yield out
            if dobj.eof:
                data = dobj.unused_data
                dobj = dctx.decompressobj()
                fed = False
            else:
                data = b""
    if fed and not dobj.eof:
        raise TruncatedArchive(path, counter.count)


def _stream_chunks(stream: _Readable, path: Path, counter: CountingReader) -> Iterator[bytes]:
    try:
        while data := stream.read(CHUNK_BYTES):
            yield data
    except EOFError:
        raise TruncatedArchive(path, counter.count) from None
    except (OSError, ValueError) as e:  # gzip.BadGzipFile, bz2 invalid data
        raise UserError(f"{path}: cannot decompress ({e})") from None


def byte_chunks(path: Path, counter: CountingReader) -> Iterator[bytes]:
    """Decompressed bytes of a file, in chunks; the format comes from the file name."""
    name = path.name.lower()
    if name.endswith((".zst", ".zstd")):
        yield from _zstd_chunks(counter, path, counter)
    elif name.endswith(".gz"):
        yield from _stream_chunks(gzip.GzipFile(fileobj=counter), path, counter)
    elif name.endswith(".bz2"):
        yield from _stream_chunks(bz2.BZ2File(counter), path, counter)
    else:
        yield from _stream_chunks(counter, path, counter)


def text_blocks(chunks: Iterable[bytes]) -> Iterator[list[str]]:
    """Lists of complete lines of UTF-8 text, one list per chunk, without line ends.

    Bad bytes become U+FFFD, CR LF becomes LF, a leading BOM is dropped. Lines come in lists so
    the per-line loop downstream stays a plain for loop (this is the hot path of `prepare`).
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    carry = ""
    first = True
    for chunk in chunks:
        text = carry + decoder.decode(chunk)
        if first and text.startswith("\ufeff"):
            text = text[1:]
        first = False
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        carry = lines.pop()
        yield lines
    text = carry + decoder.decode(b"", final=True)
    if text:
        yield text.replace("\r", "").split("\n")


def text_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines of text from byte chunks (see text_blocks)."""
    for block in text_blocks(chunks):
        yield from block


def open_text(path: str | Path) -> TextIO:
    """A text stream over a PGN file of any supported compression (bad bytes replaced). Reading it
    raises TruncatedArchive at a truncated file's break and UserError on data that does not
    decompress, as :func:`byte_chunks` does."""
    path = Path(path)
    counter = CountingReader(open(path, "rb"))
    return io.TextIOWrapper(io.BufferedReader(_ChunkStream(byte_chunks(path, counter), counter)),
                            encoding="utf-8", errors="replace")


class _ChunkStream(io.RawIOBase):
    """A readable binary stream over an iterator of byte chunks (closing it closes `source`)."""

    def __init__(self, chunks: Iterator[bytes], source: io.RawIOBase) -> None:
        super().__init__()
        self.chunks, self.source, self.pending = chunks, source, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.pending = chunk
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self.pending))
        view[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self.source.close()
        super().close()
