import bz2
import gzip
from pathlib import Path

import pytest
import zstandard

from chessdt.data.archives import CountingReader, TruncatedArchive, byte_chunks, expand_inputs, text_blocks
from chessdt.data.pgn import iter_games
from chessdt.errors import UserError
from conftest import random_pgn


def read_all(path: Path) -> list:
    counter = CountingReader(open(path, "rb"))
    try:
        return list(iter_games(text_blocks(byte_chunks(path, counter))))
    finally:
        counter.close()


@pytest.mark.parametrize("suffix,compress", [
    (".pgn", lambda b: b), (".pgn.gz", gzip.compress), (".pgn.bz2", bz2.compress),
    (".pgn.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_all_compressions_read_the_same(tmp_path, suffix, compress):
    raw = random_pgn(30, seed=5).encode()
    path = tmp_path / f"g{suffix}"
    path.write_bytes(compress(raw))
    games = read_all(path)
    assert len(games) == 30
    assert [g.headers["Site"] for g in games] == [f"https://example.org/game{5 + i}" for i in range(30)]


def test_multi_frame_zstd(tmp_path):
    c = zstandard.ZstdCompressor()
    path = tmp_path / "m.pgn.zst"
    path.write_bytes(c.compress(random_pgn(5, seed=0).encode()) + c.compress(random_pgn(7, seed=100).encode()))
    assert len(read_all(path)) == 12


@pytest.mark.parametrize("suffix,compress", [
    (".pgn.gz", gzip.compress), (".pgn.bz2", bz2.compress),
    (".pgn.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_truncated_archive_raises_with_position(tmp_path, suffix, compress):
    data = compress(random_pgn(200, seed=1).encode())
    path = tmp_path / f"t{suffix}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(TruncatedArchive) as info:
        read_all(path)
    assert info.value.path == path and 0 < info.value.bytes_read <= len(data)


def test_non_utf8_bytes_are_replaced_not_fatal():
    raw = '[White "M\u00fcller"]\n[Result "1-0"]\n\n1. e4 1-0\n'.encode("latin-1")
    (game,) = iter_games(text_blocks([raw[:12], raw[12:]]))
    assert game.headers["White"] == "M\ufffdller" and game.movetext == "1. e4 1-0"


def test_utf8_split_across_chunks_decodes():
    raw = '[White "\u00e9\u00e9\u00e9"]\n\n1. e4 *\n'.encode()
    cut = raw.index(b"\xc3") + 1  # split inside a two-byte character
    (game,) = iter_games(text_blocks([raw[:cut], raw[cut:]]))
    assert game.headers["White"] == "\u00e9\u00e9\u00e9"


def test_expand_inputs_dirs_globs_and_non_pgn(tmp_path):
    (tmp_path / "a.pgn").write_text(random_pgn(1))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.pgn.zst").write_bytes(zstandard.ZstdCompressor().compress(b"x"))
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "sub" / "img.png").write_bytes(b"\x89PNG")
    paths, skipped = expand_inputs([str(tmp_path)])
    assert [p.name for p in paths] == ["a.pgn", "b.pgn.zst"]
    assert skipped["not_pgn_file"] == 2
    paths, _ = expand_inputs([str(tmp_path / "*.pgn"), str(tmp_path / "a.pgn")])
    assert [p.name for p in paths] == ["a.pgn"]  # a file named twice is read once
    with pytest.raises(UserError, match="no such file"):
        expand_inputs([str(tmp_path / "missing.pgn")])


def test_a_fifo_given_to_prepare_is_named_as_such(tmp_path, capsys):
    """Issue 24, case 9: a FIFO given to prepare was reported as 'no such file'."""
    import os

    from chessdt import cli

    fifo = tmp_path / "games.pgn"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match=r"games.pgn is a FIFO \(named pipe\), not a regular file"):
        expand_inputs([str(fifo)])
    with pytest.raises(UserError, match=r"matches only a FIFO \(named pipe\)"):
        expand_inputs([str(tmp_path / "*.pgn")])
    assert cli.main(["prepare", str(fifo), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "is a FIFO (named pipe), not a regular file" in err and "no such file" not in err
    assert err.count("\n") == 1 and not (tmp_path / "data").exists()
