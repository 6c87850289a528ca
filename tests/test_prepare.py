import io
import json
import os
from pathlib import Path

import chess
import chess.pgn
import numpy as np
import pytest
import zstandard

from chessdt import cli
from chessdt.config import DataConfig
from chessdt.errors import UserError
from chessdt.data.dedupe import SeenFilter, false_positive_rate
from chessdt.data.prepare import GameChunks, prepare
from chessdt.data.shards import PreparedData
from chessdt.tokenizer import board_array
from conftest import FIXTURES, random_pgn


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    else:
        path.write_text(text)
    return path


def decoded_games(data: PreparedData, split: str) -> list[tuple[list[str], list[chess.Move]]]:
    out = []
    s = data.splits[split]
    for i in range(s.n_games):
        toks = [int(t) for t in s.game(i)]
        p = data.prefix_len
        assert toks[0] == data.vocab.bos and toks[-1] == data.vocab.end
        out.append((data.vocab.decode(toks[1:p]), [data.vocab.decode_move(t) for t in toks[p:-1]]))
    return out


def test_prepare_round_trips_python_chess_moves_and_boards(tmp_path):
    text = random_pgn(120, seed=7)
    src = write(tmp_path, "g.pgn.zst", text)
    summary = prepare([str(src)], tmp_path / "out", DataConfig(val_fraction=0.2), progress=False)
    data = PreparedData.open(tmp_path / "out")
    assert summary.games["train"] + summary.games["val"] == 120
    assert 5 < summary.games["val"] < 45
    expected = {}
    f = io.StringIO(text)
    while (g := chess.pgn.read_game(f)) is not None:
        expected[g.headers["Site"]] = (g.headers, list(g.mainline_moves()))
    got = decoded_games(data, "train") + decoded_games(data, "val")
    by_moves = {tuple(m.uci() for m in moves): prefix for prefix, moves in got}
    for headers, moves in expected.values():
        prefix = by_moves[tuple(m.uci() for m in moves)]
        assert prefix == [data.vocab.token_str(data.vocab.rating_token(int(headers["WhiteElo"]))),
                          data.vocab.token_str(data.vocab.rating_token(int(headers["BlackElo"])))]
    # no boards on disk: 2 bytes per token, offsets and results per game
    assert not list((tmp_path / "out").glob("*.boards"))
    assert data.meta["format_version"] == 2


def test_meta_json_contents(tmp_path):
    src = write(tmp_path, "c.pgn", (FIXTURES / "classics.pgn").read_text())
    prepare([str(src)], tmp_path / "o", DataConfig(label="elo+outcome", val_fraction=0.0), progress=False)
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["games"] == {"train": 4, "val": 0}
    assert meta["vocab_size"] == 2004 and meta["vocab_hash"] == "6066a40196eac68f"
    assert meta["label"] == "elo+outcome" and meta["prefix"] == ["white_elo", "black_elo", "result"]
    assert meta["config"]["label"] == "elo+outcome"
    assert meta["rating_buckets"] == {"1100": 1, "1500": 1, "1900": 1, "2000": 1}  # by mean rating
    data = PreparedData.open(tmp_path / "o")
    prefixes = [p for p, _ in decoded_games(data, "train")]
    assert ["<rating:2600>", "<rating:1500>", "<result:1-0>"] in prefixes
    assert ["<rating:1500>", "<rating:1600>", "<result:0-1>"] in prefixes
    # variations and comments are not moves: the Sicilian keeps its 45 mainline plies
    assert sorted(len(m) for _, m in decoded_games(data, "train")) == [4, 22, 33, 45]


def test_split_is_deterministic_and_disjoint(tmp_path):
    src = write(tmp_path, "g.pgn", random_pgn(200, seed=1))
    runs = []
    for k in range(2):
        prepare([str(src)], tmp_path / f"o{k}", DataConfig(val_fraction=0.3), progress=False)
        d = PreparedData.open(tmp_path / f"o{k}")
        runs.append({s: [tuple(d.splits[s].game(i)) for i in range(d.splits[s].n_games)] for s in ("train", "val")})
    assert runs[0] == runs[1]
    assert not set(runs[0]["train"]) & set(runs[0]["val"])


def test_bad_inputs_are_skipped_and_counted(tmp_path):
    bad = "\n".join([
        '[Result "1-0"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n\n1. e4 e5 2. Ke3 1-0\n',  # illegal
        '[Result "1-0"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n[Variant "Crazyhouse"]\n\n1. e4 1-0\n',
        '[Result "*"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n\n1. e4 e5 *\n',  # no result
        '[Result "1-0"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n\n1-0\n',  # zero moves
        '[Result "1-0"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n[White broken\n\n1. e4 e5 1-0\n',
        '[Result "1-0"]\n[WhiteElo "?"]\n[BlackElo "1500"]\n\n1. e4 e5 1-0\n',
        '[Result "1-0"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n[SetUp "1"]\n[FEN "8/8/8/8/8/8/8/K6k w - - 0 1"]\n\n1. Kb2 1-0\n',
        '[Result "0-1"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n\n1. e4 e5 2. Nf3 Nc6 0-1\n',  # good
    ])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.pgn").write_bytes(bad.encode() + b"\n[Event \"\xff\xfe\"]\n[Result \"1-0\"]\n[WhiteElo \"1500\"]\n[BlackElo \"1500\"]\n\n1. d4 d5 1-0\n")
    (tmp_path / "in" / "empty.pgn").write_text("")
    (tmp_path / "in" / "readme.txt").write_text("not a game")
    code = cli.main(["prepare", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "-q"])
    assert code == 0
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["skipped"] == {"illegal_move": 1, "non_standard_variant": 1, "missing_result": 1, "no_moves": 1,
                               "malformed_header": 1, "missing_elo": 1, "setup_position": 1, "not_pgn_file": 1}
    assert sum(meta["games"].values()) == 2  # the good game and the one with non-UTF-8 header bytes


def test_truncated_archive_clear_error_or_keep(tmp_path, capsys):
    comp = zstandard.ZstdCompressor().compressobj()
    data = b""
    for k in range(20):  # one zstd block per 25 games, so a cut leaves whole blocks to decode
        data += comp.compress(random_pgn(25, seed=100 * k, max_plies=40).encode() + b"\n")
        data += comp.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    data += comp.flush()
    src = tmp_path / "t.pgn.zst"
    src.write_bytes(data[: len(data) * 4 // 5])
    out = tmp_path / "o"
    assert cli.main(["prepare", str(src), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "t.pgn.zst is truncated" in err and "games read" in err and "--keep-truncated" in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".o.chessdt-*"))
    assert cli.main(["prepare", str(src), "--out", str(out), "-q", "--keep-truncated"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"]["truncated"] == 1 and 100 < sum(meta["games"].values()) < 500
    assert "truncated" in meta["notes"][0]


def test_interrupted_prepare_leaves_nothing_that_loads(tmp_path, monkeypatch):
    src = write(tmp_path, "g.pgn", random_pgn(50, seed=3))
    import chessdt.data.prepare as prep

    calls = {"n": 0}
    real = prep.parse_moves

    def dying(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(prep, "parse_moves", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(src)], tmp_path / "o", DataConfig(batch_games=10), workers=1, progress=False)
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.chessdt-*"))
    with pytest.raises(UserError, match="no meta.json"):
        PreparedData.open(tmp_path / "o")


def test_existing_output_needs_force_and_is_replaced_whole(tmp_path):
    src = write(tmp_path, "g.pgn", random_pgn(20, seed=4))
    prepare([str(src)], tmp_path / "o", DataConfig(), progress=False)
    with pytest.raises(UserError, match="--force"):
        prepare([str(src)], tmp_path / "o", DataConfig(), progress=False)
    prepare([str(src)], tmp_path / "o", DataConfig(label="outcome"), force=True, progress=False)
    assert PreparedData.open(tmp_path / "o").meta["label"] == "outcome"


def test_no_games_kept_is_an_error_not_an_empty_set(tmp_path, capsys):
    src = write(tmp_path, "g.pgn", random_pgn(5, seed=4))
    assert cli.main(["prepare", str(src), "--out", str(tmp_path / "o"), "--set", "data.min_elo=3999", "-q"]) == 2
    assert "no game passed the filters" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["prepare", str(tmp_path / "nope.pgn"), "--out", str(tmp_path / "o")]) == 2
    assert cli.main(["prepare", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "data.bogus=1"]) == 2
    assert cli.main(["prepare", str(tmp_path), "--out", str(tmp_path / "o"), "--label", "rating"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "valid keys" in err and "data.label" in err and "Traceback" not in err


def test_config_file_drives_prepare(tmp_path):
    (tmp_path / "games").mkdir()
    write(tmp_path / "games", "g.pgn", random_pgn(30, seed=9))
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[data]\ninputs = ["games"]\nlabel = "outcome"\nrating_bucket = 200\nmin_plies = 10\n')
    assert cli.main(["prepare", "--config", str(cfg), "--out", str(tmp_path / "o"), "-q"]) == 0
    d = PreparedData.open(tmp_path / "o")
    assert d.meta["label"] == "outcome" and d.vocab.rating_bucket == 200
    assert all(d.splits["train"].offsets[1:] - d.splits["train"].offsets[:-1] >= 10 + 3)


def test_games_stats_cli(tmp_path, capsys):
    src = write(tmp_path, "c.pgn.zst", (FIXTURES / "classics.pgn").read_text())
    assert cli.main(["games", "stats", str(src), "-q"]) == 0
    out = capsys.readouterr().out
    assert "games: 4" in out and "blitz" in out and "Time forfeit" in out
    assert cli.main(["games", "stats", str(src), "--json", "-q", "--moves"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["games"] == 4 and stats["kept"] == 4


@pytest.mark.slow
def test_both_readers_identical_on_every_shared_lichess_game(tmp_path, shared_lichess):
    """The compiled reader gives exactly python-chess's tokens on every game of the real file."""
    for reader in ("rust", "python-chess"):
        prepare([str(shared_lichess)], tmp_path / reader, DataConfig(reader=reader, boards=False), progress=False)
    a, b = PreparedData.open(tmp_path / "rust"), PreparedData.open(tmp_path / "python-chess")
    assert a.meta["games"] == b.meta["games"] and sum(a.meta["games"].values()) > 19_000
    assert a.meta["skipped"] == b.meta["skipped"]
    for split in ("train", "val"):
        assert np.array_equal(a.splits[split].offsets, b.splits[split].offsets)
        assert np.array_equal(a.splits[split].tokens, b.splits[split].tokens)


def test_force_replaces_only_a_prepared_data_set(tmp_path, capsys):
    src = write(tmp_path, "g.pgn", random_pgn(30, seed=5))
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    for flags in ([], ["--force"]):
        assert cli.main(["prepare", str(src), "--out", str(precious), "-q", *flags]) == 2
        assert "not a prepared data set" in capsys.readouterr().err
        assert (precious / "thesis.tex").read_text() == "years of work"
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    assert cli.main(["prepare", str(src), "--out", str(afile), "-q", "--force"]) == 2
    assert "is a file" in capsys.readouterr().err and afile.read_text() == "keep me"
    out = tmp_path / "o"
    assert cli.main(["prepare", str(src), "--out", str(out), "-q"]) == 0
    assert cli.main(["prepare", str(src), "--out", str(out), "-q"]) == 2  # a prepared set needs --force
    assert cli.main(["prepare", str(src), "--out", str(out), "-q", "--force"]) == 0
    assert sum(json.loads((out / "meta.json").read_text())["games"].values()) == 30


def test_prepare_refuses_an_output_another_prepare_is_writing(tmp_path, capsys):
    from chessdt.files import exclusive

    src = write(tmp_path, "g.pgn", random_pgn(10, seed=5))
    out = tmp_path / "o"
    with exclusive(tmp_path / ".o.chessdt.lock", "test"):
        assert cli.main(["prepare", str(src), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"prepare output {out} is in use by process" in err and "Traceback" not in err
    assert not out.exists()
    assert cli.main(["prepare", str(src), "--out", str(out), "-q"]) == 0  # released


def _dead_pid() -> int:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(dead.stdout)  # a process that has exited (its pid is free unless reused at once)


def test_stale_partials_of_dead_processes_are_removed(tmp_path):
    import json as json_

    from chessdt.files import MARK_NAME, mark

    src = write(tmp_path, "g.pgn", random_pgn(10, seed=5))
    pid = _dead_pid()
    stale = tmp_path / f".o.chessdt-partial-{pid}"
    stale.mkdir()
    (stale / "train.tokens").write_bytes(b"x" * 100)
    mark(stale, "partial")  # marked by "us", then given the dead pid as owner (what a killed prepare leaves)
    record = json_.loads((stale / MARK_NAME).read_text())
    (stale / MARK_NAME).write_text(json_.dumps({**record, "pid": pid}))
    stale_old = tmp_path / f".o.chessdt-old-{pid}"  # a replaced set, killed before it was deleted
    stale_old.mkdir()
    mark(stale_old, "prepared")
    live = tmp_path / f".o.chessdt-partial-{os.getppid()}"  # our parent still runs: keep its files
    live.mkdir()
    (live / MARK_NAME).write_text(json_.dumps({**record, "pid": os.getppid()}))
    elsewhere = tmp_path / f".o.chessdt-partial-{pid + 1}"  # another host's process: its pid is not ours to judge
    elsewhere.mkdir()
    (elsewhere / MARK_NAME).write_text(json_.dumps({**record, "pid": pid + 1, "host": "another-host"}))
    other = tmp_path / f".other.chessdt-partial-{pid}"  # another output's partial is not ours to judge
    other.mkdir()
    prepare([str(src)], tmp_path / "o", DataConfig(), progress=False)
    assert not stale.exists() and not stale_old.exists()
    assert live.exists() and other.exists() and elsewhere.exists()


def test_a_users_folder_named_like_a_partial_is_never_removed(tmp_path):
    """Case 3 of issue 24: `mkdir mydata.old-20241201; chessdt prepare X --out mydata` removed it (a number
    above the highest process id counts as a dead process). Only chessdt's marked partials go."""
    src = write(tmp_path, "g.pgn", random_pgn(10, seed=5))
    pid = _dead_pid()
    names = ["o.old-20241201", f"o.partial-{pid}", f".o.chessdt-partial-{pid}", f".o.chessdt-old-{pid}",
             "o.old-99999999"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "mine.txt").write_text("mine")
    prepare([str(src)], tmp_path / "o", DataConfig(), progress=False)
    for name in names:
        assert (tmp_path / name / "mine.txt").read_text() == "mine", name


def test_force_never_deletes_a_checkpoint_or_an_unmarked_set(tmp_path, capsys):
    """Case 2 of issue 24: any folder with a meta.json counted as a prepared data set, so `prepare --force`
    deleted a checkpoint. Only a set chessdt marked is replaced; an older unmarked one is refused with advice."""
    src = write(tmp_path, "g.pgn", random_pgn(10, seed=5))
    ckpt = tmp_path / "run" / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text(json.dumps({"step": 100, "vocab_hash": "abc", "config": {}}))
    (ckpt / "model.safetensors").write_bytes(b"weights")
    foreign = tmp_path / "foreign"  # someone else's tool also writes meta.json
    foreign.mkdir()
    (foreign / "meta.json").write_text('{"author": "me"}')
    for target, says in ((ckpt, "is a checkpoint, not a prepared data set"),
                         (foreign, "is not a prepared data set")):
        for flags in ([], ["--force"]):
            assert cli.main(["prepare", str(src), "--out", str(target), "-q", *flags]) == 2
            err = capsys.readouterr().err
            assert says in err and err.count("\n") == 1, err
    assert (ckpt / "model.safetensors").read_bytes() == b"weights" and (foreign / "meta.json").is_file()
    from chessdt.files import MARK_NAME

    old = tmp_path / "old"  # a set written before the mark existed
    assert cli.main(["prepare", str(src), "--out", str(old), "-q"]) == 0
    assert json.loads((old / MARK_NAME).read_text())["kind"] == "prepared"
    (old / MARK_NAME).unlink()
    assert cli.main(["prepare", str(src), "--out", str(old), "-q", "--force"]) == 2
    err = capsys.readouterr().err
    assert "from an older chessdt" in err and "delete it yourself" in err and err.count("\n") == 1
    assert (old / "meta.json").is_file() and (old / "train.offsets").is_file()


def _zst_blocks(blocks: list[str]) -> tuple[bytes, list[int]]:
    """A zstd stream with one flushed block per text, and the stream length after each block."""
    comp = zstandard.ZstdCompressor().compressobj()
    data, ends = b"", []
    for text in blocks:
        data += comp.compress(text.encode()) + comp.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        ends.append(len(data))
    return data + comp.flush(), ends


def test_keep_truncated_keeps_every_complete_game(tmp_path):
    data, ends = _zst_blocks([random_pgn(25, seed=100 * k, max_plies=40) + "\n" for k in range(4)])
    src = tmp_path / "t.pgn.zst"
    src.write_bytes(data[: ends[2] + (ends[3] - ends[2]) // 2])  # three whole blocks, then half of one
    out = tmp_path / "o"
    assert cli.main(["prepare", str(src), "--out", str(out), "-q", "--keep-truncated"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    # 75 games decoded: the last of them is the one at the break (no next game proves it whole)
    assert sum(meta["games"].values()) == 74 and meta["skipped"] == {"truncated": 1}
    assert "read the 74 complete games before the break" in meta["notes"][0]
    # a second file cut inside its first block: the first file's games all stay
    whole = write(tmp_path, "whole.pgn", random_pgn(10, seed=9))
    cut, cut_ends = _zst_blocks([random_pgn(25, seed=11, max_plies=40)])
    (tmp_path / "z.pgn.zst").write_bytes(cut[: cut_ends[0] // 2])
    out2 = tmp_path / "o2"
    assert cli.main(["prepare", str(whole), str(tmp_path / "z.pgn.zst"), "--out", str(out2), "-q",
                     "--keep-truncated"]) == 0
    meta = json.loads((out2 / "meta.json").read_text())
    assert sum(meta["games"].values()) == 10
    note = meta["notes"][0].split(": ", 1)[1]  # after the file's path (a tmp path may hold '-1')
    assert "read the 0 complete games" in note and "-1" not in note


def test_a_full_disk_or_a_cwd_output_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from chessdt.data import shards

    src = write(tmp_path, "g.pgn", random_pgn(20, seed=5))

    def full(self, *args):  # noqa: ANN001, ANN002, ANN202
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.partial" / "train.tokens"))

    with monkeypatch.context() as m:
        m.setattr(shards.SplitWriter, "write", full)
        assert cli.main(["prepare", str(src), "--out", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("chessdt: error: No space left on device: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.chessdt-*"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert cli.main(["prepare", str(src), "--out", ".", "-q", "--force"]) == 2  # not a prepared data set
    assert "is not a prepared data set" in capsys.readouterr().err and (work / "notes.txt").read_text() == "mine"


def _files(out: Path) -> dict[str, bytes]:
    """Every shard file of a prepared set, and meta.json less its timing."""
    files = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file() and f.suffix in (".tokens", ".offsets", ".results")}
    meta = json.loads((out / "meta.json").read_text())
    meta.pop("seconds")
    meta["config"].pop("workers")
    return {**files, "meta": json.dumps(meta, sort_keys=True).encode()}


def test_output_is_the_same_for_any_number_of_workers(tmp_path):
    # two files cut into many chunks, with repeats inside a chunk, across chunks and across files
    a = random_pgn(150, seed=40)
    b = random_pgn(60, seed=120) + "\n" + random_pgn(20, seed=45) + "\n" + random_pgn(40, seed=40)
    src = [write(tmp_path, "a.pgn.zst", a), write(tmp_path, "b.pgn", b)]
    outs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        s = prepare([str(p) for p in src], out, DataConfig(val_fraction=0.2), workers=workers, progress=False,
                    chunk_bytes=5000)
        assert s.workers == workers
        outs[workers] = _files(out)
    assert outs[1] == outs[2] == outs[3]
    meta = json.loads(outs[1]["meta"])
    # seeds 40..189 and 120..179 overlap on 120..179 (60), plus 45..64 (20) and 40..79 (40) again
    assert meta["skipped"] == {"duplicate": 120} and sum(meta["games"].values()) == 150
    assert len(list(GameChunks(iter([b.encode()]), 5000))) > 4  # several chunks per file


def test_dedupe_across_files_and_runs(tmp_path):
    # games without a Site URL are told apart by headers and moves; the same game in two files,
    # given in either order, is kept once, and a second run keeps exactly the same games
    no_site = random_pgn(30, seed=300).replace('[Site "https://example.org/', '[Site "local ')
    first = write(tmp_path, "first.pgn", random_pgn(50, seed=200) + "\n" + no_site)
    second = write(tmp_path, "second.pgn.zst", no_site + "\n" + random_pgn(40, seed=230))
    kept = []
    for k, order in enumerate(([first, second], [second, first], [first, second])):
        s = prepare([str(p) for p in order], tmp_path / f"o{k}", DataConfig(), workers=2, progress=False,
                    chunk_bytes=4000)
        assert s.skipped["duplicate"] == 30 + 20  # the 30 without Site, and seeds 230..249
        d = PreparedData.open(tmp_path / f"o{k}")
        kept.append(sorted(tuple(d.splits[x].game(i)) for x in ("train", "val") for i in range(d.splits[x].n_games)))
    assert kept[0] == kept[1] == kept[2] and len(kept[0]) == 50 + 30 + 20
    assert _files(tmp_path / "o0") == _files(tmp_path / "o2")
    # dedupe off keeps every copy
    s = prepare([str(first), str(second)], tmp_path / "all", DataConfig(dedupe=False), workers=1, progress=False)
    assert sum(s.games.values()) == 150 and "duplicate" not in s.skipped


def test_seen_filter_never_misses_a_repeat_and_errs_at_its_stated_rate():
    rng = np.random.default_rng(0)
    f = SeenFilter(bits=16)
    ids = rng.integers(0, 256, (5000, 16), dtype=np.uint8)
    assert not f.seen(ids).any()
    assert f.seen(ids).all() and f.seen(ids[::-1][:7]).all()  # every repeat, in any chunk
    # a chunk is checked against what came before it: 40,000 new identities after 5,000 are taken
    # for repeats at the stated rate (0.21%: 83 expected, a binomial 95% range of about 65-101)
    stated = false_positive_rate(5000, 16)
    measured = float(f.seen(rng.integers(0, 256, (40_000, 16), dtype=np.uint8)).mean())
    assert 0.001 < stated < 0.004 and 0.7 * stated < measured < 1.3 * stated
    assert false_positive_rate(100_000_000, 32) < 2e-6 and false_positive_rate(1_000_000, 32) < 1e-15


def test_offsets_summed_in_pieces_are_the_running_total(tmp_path, monkeypatch):
    import chessdt.data.shards as shards

    monkeypatch.setattr(shards, "OFFSETS_PIECE", 3)  # the writer sums lengths a piece at a time
    w = shards.SplitWriter(tmp_path, "train")
    lengths = np.array([5, 7, 3, 9, 4, 6, 8], np.int64)
    for part in (lengths[:2], lengths[2:]):
        w.write(np.zeros(int(part.sum()), np.uint16), part, np.ones(len(part), np.int8))
    w.close(tmp_path, "train")
    assert np.fromfile(tmp_path / "train.offsets", np.int64).tolist() == [0, *np.cumsum(lengths).tolist()]
    assert np.fromfile(tmp_path / "train.results", np.int8).tolist() == [1] * 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.offsets", "train.results", "train.tokens"]


def test_workers_and_dedupe_bits_are_checked_in_one_line(tmp_path, capsys):
    src = write(tmp_path, "g.pgn", random_pgn(5, seed=2))
    for flag in (["--workers", "-1"], ["--set", "data.dedupe_bits=50"]):
        assert cli.main(["prepare", str(src), "--out", str(tmp_path / "o"), "-q", *flag]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("data.workers=-1" in err or "data.dedupe_bits=50" in err)
    assert cli.main(["prepare", str(src), "--out", str(tmp_path / "o"), "-q", "--workers", "2"]) == 0
    assert json.loads((tmp_path / "o" / "meta.json").read_text())["config"]["workers"] == 2
