"""Engine plumbing: finding Stockfish, strength options, restart on crash and hang (fake UCI engine)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import chess
import chess.engine
import pytest

import fake_uci
from chessdt import cli
from chessdt.rules import Strength
from chessdt.stockfish.engine import DEBIAN_STOCKFISH, Engine, EngineFailure, find_stockfish, open_engine
from chessdt.errors import UserError

NODES = chess.engine.Limit(nodes=10)


def test_find_explicit_path(tmp_path: Path) -> None:
    exe = Path(fake_uci.script(str(tmp_path)))
    assert find_stockfish(exe) == exe
    with pytest.raises(UserError, match="apt-get install stockfish"):
        find_stockfish(tmp_path / "nope")


def test_missing_stockfish_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("chessdt.stockfish.engine.DEBIAN_STOCKFISH", tmp_path / "missing")
    with pytest.raises(UserError) as e:
        find_stockfish()
    for hint in ("apt-get install stockfish", "brew install stockfish", "--engine PATH"):
        assert hint in str(e.value)


def test_missing_stockfish_cli_exit_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("chessdt.stockfish.engine.DEBIAN_STOCKFISH", tmp_path / "missing")
    rc = cli.main(["games", "generate", "--out", str(tmp_path / "x.pgn.zst"), "--games", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Stockfish not found" in err and "Traceback" not in err


def test_strength_options() -> None:
    assert Strength(elo=1600).options() == {"UCI_LimitStrength": True, "UCI_Elo": 1600, "Skill Level": 20}
    assert Strength(skill=3).options() == {"UCI_LimitStrength": False, "Skill Level": 3}
    with pytest.raises(UserError):
        Strength(elo=1000)
    with pytest.raises(UserError):
        Strength(elo=1500, skill=2)


def test_open_engine_plays() -> None:
    with open_engine(fake_uci.command(), elo=1500) as engine:
        assert engine.id["name"] == "FakeFish 1.0"
        assert engine.play(chess.Board(), NODES).move == chess.Move.from_uci("a2a3")


def test_restart_after_crash(tmp_path: Path) -> None:
    with Engine(fake_uci.command("--crash-at", "2", "--once", str(tmp_path / "m")), timeout_s=5) as e:
        board = chess.Board()
        for _ in range(4):
            board.push(e.play(board, NODES).move)
        assert e.restarts == 1
        assert len(board.move_stack) == 4


def test_restart_after_hang(tmp_path: Path) -> None:
    with Engine(fake_uci.command("--hang-at", "1", "--once", str(tmp_path / "m")), timeout_s=1.0) as e:
        info = e.analyse(chess.Board(), NODES)
        assert info["score"].white().score() == 0
        assert e.restarts == 1


def test_a_crash_during_the_handshake_is_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 24, case 9: an engine that crashed once during its handshake stopped the whole eval."""
    from chessdt.stockfish.engine import check_engine, open_engine

    with Engine(fake_uci.command("--crash-on-uci", "--once", str(tmp_path / "a")), timeout_s=5) as e:
        assert e.play(chess.Board(), NODES).move == chess.Move.from_uci("a2a3")
    check_engine(fake_uci.command("--crash-on-uci", "--once", str(tmp_path / "b")))  # the pre-flight check too
    with open_engine(fake_uci.command("--crash-on-uci", "--once", str(tmp_path / "c"))) as raw:
        assert raw.play(chess.Board(), NODES).move == chess.Move.from_uci("a2a3")
    said = [r.getMessage() for r in caplog.records if "exited during the UCI handshake" in r.getMessage()]
    assert len(said) == 3 and all("starting it again" in m for m in said)
    with pytest.raises(EngineFailure, match=r"exited during the UCI handshake .*2 tries"):  # always: given up
        Engine(fake_uci.command("--crash-on-uci"), timeout_s=5, retries=1).start()


def test_gives_up_after_retries() -> None:
    with Engine(fake_uci.command("--crash-at", "1"), timeout_s=5, retries=1) as e:
        with pytest.raises(EngineFailure):
            e.play(chess.Board(), NODES)
        assert e.restarts == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("stockfish") is None and not os.access(DEBIAN_STOCKFISH, os.X_OK),
                    reason="needs Stockfish")
def test_real_stockfish_strength() -> None:
    with Engine(find_stockfish(), strength=Strength(elo=1350)) as e:
        assert e.name.startswith("Stockfish")
        assert e.raw.options["UCI_Elo"] is not None
        move = e.play(chess.Board(), chess.engine.Limit(nodes=500)).move
        assert move in chess.Board().legal_moves
