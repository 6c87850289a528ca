"""Ladder generation: schedule, headers, resume without loss or duplicates, torn files, ladder report."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

import fake_uci
from chessdt import cli
from chessdt.stockfish.engine import DEBIAN_STOCKFISH, find_stockfish
from chessdt.stockfish.generate import DEFAULT_RUNGS, LadderConfig, Rung, existing_indices, generate, pairing, read_games
from chessdt.stockfish.ladder import LadderReport, ladder_report

RUNGS = tuple(Rung.parse(s) for s in ("1400", "1600", "1800", "1100:skill=0"))
HAVE_STOCKFISH = shutil.which("stockfish") is not None or os.access(DEBIAN_STOCKFISH, os.X_OK)


def test_pairing_balanced_and_seeded() -> None:
    cfg = LadderConfig(rungs=RUNGS, seed=3)
    cycle = [pairing(cfg, i) for i in range(12)]
    ordered = Counter((p.white.rating, p.black.rating) for p in cycle)
    assert len(ordered) == 12 and set(ordered.values()) == {1}  # every ordered pair once per cycle
    assert [pairing(cfg, i).white for i in range(30)] == [pairing(LadderConfig(rungs=RUNGS, seed=3), i).white
                                                          for i in range(30)]
    assert [pairing(cfg, i).white for i in range(30)] != [pairing(LadderConfig(rungs=RUNGS, seed=4), i).white
                                                          for i in range(30)]


def test_rung_parse() -> None:
    assert str(Rung.parse("1100:skill=0")) == "1100:skill=0"
    assert Rung.parse("2100:full").strength.options()["UCI_LimitStrength"] is False
    assert [str(Rung.parse(str(r))) for r in DEFAULT_RUNGS] == [str(r) for r in DEFAULT_RUNGS]
    with pytest.raises(Exception, match="skill"):
        Rung.parse("1100")
    with pytest.raises(Exception, match="at most one unlimited"):
        LadderConfig(rungs=(Rung.parse("1900:full/100"), Rung.parse("2000:full")))


def test_generate_resume_and_torn_tail(tmp_path: Path) -> None:
    out = tmp_path / "ladder.pgn.zst"
    cfg = LadderConfig(rungs=RUNGS, games=6, max_plies=12, adjudicate_moves=0)
    s = generate(cfg, out, fake_uci.command(), workers=1, flush_every=4, progress=False)
    assert (s.played, s.total) == (6, 6)
    # A crash mid-write leaves half a frame: it is cut off and those games are replayed.
    whole = out.stat().st_size
    with open(out, "ab") as f:
        f.write(b"\x28\xb5\x2f\xfd garbage")
    bigger = LadderConfig(rungs=RUNGS, games=10, max_plies=12, adjudicate_moves=0)
    s = generate(bigger, out, fake_uci.command(), workers=2, flush_every=3, progress=False)
    assert s.played == 4 and out.stat().st_size > whole
    games = list(read_games(out))
    assert sorted(int(g.headers["LadderIndex"]) for g in games) == list(range(10))
    g = games[0]
    i = int(g.headers["LadderIndex"])
    assert g.headers["WhiteElo"] == str(pairing(cfg, i).white.rating)
    assert "FakeFish" in g.headers["White"] and "nodes=1000" in g.headers["EngineSettings"]
    assert g.headers["Termination"] == "adjudication: move limit" and g.end().ply() == 12
    assert existing_indices(out, bigger) == set(range(10))


def test_resume_refuses_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "l.pgn"
    engine = fake_uci.script(str(tmp_path))
    args = ["games", "generate", "--out", str(out), "--games", "2", "--rungs", "1400,1600", "--engine", engine,
            "--max-plies", "6", "--workers", "1", "-q"]
    assert cli.main(args) == 0
    assert "2 new games" in capsys.readouterr().out
    assert cli.main(args + ["--seed", "9"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_ladder_report_detects_order() -> None:
    r = LadderReport()
    for _ in range(3):
        r.add(1400, 1600, "0-1")
        r.add(1600, 1800, "1/2-1/2")
        r.add(1800, 1400, "1-0")
    assert r.pairs[(1400, 1600)].score == 1.0
    assert r.violations() == [(1600, 1800)] and not r.is_ladder()
    fitted = r.fitted_elo()
    assert fitted[1800] > fitted[1400] and fitted[1600] > fitted[1400]
    assert "NOT a ladder" in r.format()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_STOCKFISH, reason="needs Stockfish")
def test_real_stockfish_ladder(tmp_path: Path) -> None:
    out = tmp_path / "sf.pgn.zst"
    cfg = LadderConfig(rungs=(Rung.parse("1350"), Rung.parse("2850")), games=6, nodes=400)
    generate(cfg, out, find_stockfish(), workers=1, progress=False)
    games = list(read_games(out))
    assert len(games) == 6 and all(g.headers["Result"] in ("1-0", "0-1", "1/2-1/2") for g in games)
    assert all(g.headers["White"].startswith("Stockfish") for g in games)
    report = ladder_report([out])
    assert report.games == 6 and report.rungs[2850].score > report.rungs[1350].score


def test_rung_node_limit_in_headers(tmp_path: Path) -> None:
    out = tmp_path / "n.pgn"
    cfg = LadderConfig(rungs=(Rung.parse("1400/50"), Rung.parse("1600:full")), games=2, max_plies=4)
    generate(cfg, out, fake_uci.command(), workers=1, progress=False)
    for g in read_games(out):
        by_elo = {g.headers["WhiteElo"]: g.headers["White"], g.headers["BlackElo"]: g.headers["Black"]}
        assert by_elo["1400"].endswith("UCI_Elo=1400 nodes=50")
        assert by_elo["1600"].endswith("full strength nodes=1000")
    assert "rungs=1400/50,1600:full" in cfg.event()


def test_eps_rungs_play_seeded_random_moves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = Rung.parse("1000:eps=0.6/200")
    assert (r.eps, r.strength.elo, r.nodes, str(r)) == (0.6, None, 200, "1000:full,eps=0.6/200")
    assert Rung.parse("1200:elo=1350,eps=0.25").describe().endswith("eps=0.25")
    for bad in ("1000:eps=2", "1000:eps=x", "1000:foo=1"):
        with pytest.raises(Exception, match="bad rung"):
            Rung.parse(bad)
    # two full-strength rungs are allowed once one of them plays random moves
    LadderConfig(rungs=(Rung.parse("1000:eps=0.5"), Rung.parse("2000:full")))
    # eps = 1: every move random (the fake engine is never asked), the same moves on a rerun
    engine = fake_uci.script(str(tmp_path))
    args = ["games", "generate", "--games", "4", "--rungs", "900:eps=1,1000:full,eps=1", "--engine", engine,
            "--max-plies", "30", "--adjudicate-moves", "0", "--workers", "1", "-q"]
    assert cli.main(args + ["--out", str(tmp_path / "a.pgn")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "b.pgn")]) == 0
    a, b = list(read_games(tmp_path / "a.pgn")), list(read_games(tmp_path / "b.pgn"))
    assert [str(g.mainline_moves()) for g in a] == [str(g.mainline_moves()) for g in b]
    assert len({str(g.mainline_moves()) for g in a}) == 4  # the fake engine would play one fixed line
    assert {g.headers["WhiteElo"] for g in a} == {"900", "1000"} and "eps=1" in a[0].headers["White"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc to find the worker processes")
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of `games generate` runs no cleanup; its worker processes must still stop (they used
    to go on playing queued games, each holding an engine)."""
    import signal
    import subprocess
    import sys
    import time

    def children(pid: int) -> set[int]:
        out = set()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(d.name))
                except (OSError, IndexError, ValueError):
                    pass
        return out

    proc = subprocess.Popen([sys.executable, "-m", "chessdt", "games", "generate", "--out", str(tmp_path / "g.pgn"),
                             "--games", "5000", "--rungs", "1400,1600", "--engine", fake_uci.script(str(tmp_path)),
                             "--workers", "2", "--adjudicate-moves", "0", "-q"])
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        workers = {c for c in children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}
    assert len(workers) == 2
    time.sleep(2.0)  # the workers are playing
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() and
                                              "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1][:3]
                                              for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()
             and "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1][:3]]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive


def test_a_second_run_into_the_same_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Case 5 of issue 24: two `games generate` runs into one --out both exited 0 and the file held every
    game index twice. The second one now stops at once with a one-line error and writes nothing."""
    from chessdt.files import exclusive_beside

    out = tmp_path / "l.pgn"
    engine = fake_uci.script(str(tmp_path))
    args = ["games", "generate", "--out", str(out), "--games", "2", "--rungs", "1400,1600", "--engine", engine,
            "--max-plies", "6", "--workers", "1", "-q"]
    with exclusive_beside(out, "the first run"):  # what the first run holds while it plays
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert f"games output {out} is in use by process {os.getpid()}" in err and err.count("\n") == 1
        assert not out.exists()
        src = tmp_path / "in.pgn"
        src.write_text('[Event "x"]\n[Result "1-0"]\n\n1. e4 e5 1-0\n')
        assert cli.main(["games", "label", str(src), "--out", str(out), "--engine", engine, "-q"]) == 2
        assert "is in use by process" in capsys.readouterr().err and not out.exists()
    assert cli.main(args) == 0  # released
    assert sorted(int(g.headers["LadderIndex"]) for g in read_games(out)) == [0, 1]


def test_a_book_that_is_not_polyglot_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24, case 8: `games generate --book` on a text file was a traceback (or, at a size divisible by 16,
    silently no book at all); a real Polyglot book still opens every game."""
    import struct

    import chess
    import chess.polyglot

    out = tmp_path / "l.pgn"
    engine = fake_uci.script(str(tmp_path))
    args = ["games", "generate", "--out", str(out), "--games", "2", "--rungs", "1400,1600", "--engine", engine,
            "--max-plies", "6", "--workers", "1", "-q", "--book-plies", "1", "--book"]
    for name, text in (("notes.txt", "an opening book, honest\n"), ("sixteen.txt", "Sicilian Najdorf, Ruy Lopez, French and Caro-Kann.\n" + "-" * 13),
                       ("empty.bin", "")):
        (tmp_path / name).write_text(text)
        assert cli.main(args + [str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert f"{tmp_path / name} is not a Polyglot opening book" in err and err.count("\n") == 1, err
        assert not out.exists()
    e4 = 4 | 3 << 3 | 4 << 6 | 1 << 9  # Polyglot move: to file, to row, from file, from row
    book = tmp_path / "book.bin"
    book.write_bytes(struct.pack(">QHHI", chess.polyglot.zobrist_hash(chess.Board()), e4, 1, 0))
    assert cli.main(args + [str(book)]) == 0
    assert [next(iter(g.mainline_moves())).uci() for g in read_games(out)] == ["e2e4", "e2e4"]
