"""Labeling: Lichess accuracy math, per-player tags, calibration fit, resume, skips, engine failures."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import chess
import chess.pgn
import pytest
from conftest import random_pgn

import fake_uci
from chessdt import cli
from chessdt.stockfish.engine import DEBIAN_STOCKFISH, Engine, find_stockfish
from chessdt.stockfish.label import (Calibration, LabelConfig, analyse_game, fit_calibration, game_accuracy, label)
from chessdt.stockfish.generate import read_games

HAVE_STOCKFISH = shutil.which("stockfish") is not None or os.access(DEBIAN_STOCKFISH, os.X_OK)
CFG = LabelConfig(nodes=10, blunder_cp=300)
# White hangs the queen on move 3 (the fake engine sees one ply of captures), then the game goes on quietly.
HANG = '[Event "t"]\n[WhiteElo "1500"]\n[BlackElo "1700"]\n\n1. e4 e5 2. Qh5 Nc6 3. Qxe5+ Nxe5 4. a3 a6 5. a4 a5 *\n\n'


def test_game_accuracy_perfect_and_blunder() -> None:
    even = game_accuracy([0.0] * 11)
    assert even[chess.WHITE] == pytest.approx(100.0) and even[chess.BLACK] == pytest.approx(100.0)
    acc = game_accuracy([0, -900, -900, -900, -900, -900, -900])  # white loses 9 pawns on its first move
    assert acc[chess.WHITE] < 60.0 < acc[chess.BLACK]


def test_analyse_game_counts_blunder() -> None:
    game = chess.pgn.read_game(io.StringIO(HANG))
    with Engine(fake_uci.command()) as engine:
        q = analyse_game(engine, game, CFG)
    assert q[chess.WHITE].blunders == 1 and q[chess.BLACK].blunders == 0
    assert q[chess.WHITE].moves == 5 and q[chess.WHITE].acpl >= 900 / 5
    assert q[chess.BLACK].acpl < q[chess.WHITE].acpl and q[chess.BLACK].blunders == 0 and q[chess.WHITE].accuracy < q[chess.BLACK].accuracy


def test_fit_calibration_recovers_linear_map(tmp_path: Path) -> None:
    rows = [([a] + [0.0] * 8, int(1000 + 15 * a)) for a in range(40, 100)]
    fit = fit_calibration(rows, nodes=10, source="synthetic")
    assert fit.rmse < 1.0 and fit.baseline_rmse > 100
    fit.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again.coef == pytest.approx(fit.coef) and json.loads((tmp_path / "c.json").read_text())["nodes"] == 10


def test_label_resume_skips_and_elo(tmp_path: Path) -> None:
    src = tmp_path / "in.pgn"
    bad = '[Event "bad"]\n\n1. e4 e5 2. Kxe8 *\n\n[Event "empty"]\n\n*\n\n'
    src.write_text(HANG + bad + random_pgn(5, seed=1, max_plies=30))
    cal = Calibration(coef=[2000.0, 0.0, -100.0] + [0.0] * 7, nodes=10, rmse=0, mae=0, baseline_rmse=0,
                      n_train=0, n_test=0, source="t", min_moves=3)
    cal.save(tmp_path / "cal.json")
    out = tmp_path / "out.pgn.zst"
    s = label(src, out, fake_uci.command(), CFG, calibration=tmp_path / "cal.json", workers=1, progress=False)
    assert s.labeled == 6 and sum(s.skipped.values()) == 2
    first = next(g for g in read_games(out) if g.headers["LabelIndex"] == "0")
    assert first.headers["WhiteBlunders"] == "1" and float(first.headers["WhiteACPL"]) >= 180
    assert int(first.headers["WhiteEngineElo"]) < int(first.headers["BlackEngineElo"]) < 2000
    again = label(src, out, fake_uci.command(), CFG, workers=2, progress=False)
    assert again.labeled == 0 and again.total == 6
    assert sorted(int(g.headers["LabelIndex"]) for g in read_games(out)) == [0, 3, 4, 5, 6, 7]


def test_label_retries_game_after_crash(tmp_path: Path) -> None:
    src = tmp_path / "in.pgn"
    src.write_text(HANG * 3)
    engine = fake_uci.command("--crash-at", "4", "--once", str(tmp_path / "m"))
    s = label(src, tmp_path / "o.pgn", engine, CFG, workers=1, progress=False)
    assert s.labeled == 3 and not s.skipped
    assert [g.headers["WhiteBlunders"] for g in read_games(tmp_path / "o.pgn")] == ["1", "1", "1"]


def test_label_cli_needs_matching_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.pgn"
    src.write_text(HANG)
    Calibration(coef=[0.0] * 10, nodes=99, rmse=0, mae=0, baseline_rmse=0, n_train=0, n_test=0,
                source="t").save(tmp_path / "c.json")
    rc = cli.main(["games", "label", str(src), "--out", str(tmp_path / "o.pgn"), "--calibration",
                   str(tmp_path / "c.json"), "--engine", fake_uci.script(str(tmp_path)), "--nodes", "10"])
    assert rc == 2 and "--nodes 99" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_STOCKFISH, reason="needs Stockfish")
def test_real_stockfish_labels_blunder() -> None:
    game = chess.pgn.read_game(io.StringIO(HANG))
    with Engine(find_stockfish()) as engine:
        q = analyse_game(engine, game, LabelConfig(nodes=2000))
    assert q[chess.WHITE].blunders >= 1 and q[chess.WHITE].acpl > q[chess.BLACK].acpl
