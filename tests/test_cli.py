"""The command line through cli.main: evals and report, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chessdt import cli
from fake_uci import script


TINY = Path(__file__).resolve().parents[1] / "experiments" / "tiny.toml"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_evals_and_report(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = script(str(tmp_path))
    out = tmp_path / "run"
    sets = ["eval.ratings=1200,1800", "eval.legality_positions=100", "eval.legality_games=20",
            "eval.legality_selfplay=1", "eval.max_plies=30", "eval.ladder=random,1350", "eval.ladder_games=2",
            "eval.calibration_games=2", "eval.ladder_nodes=5", "eval.matching_games=10", "eval.cpl_positions=3",
            "eval.cpl_nodes=5", "eval.openings_games=4", "eval.openings_vs_games=2", "eval.openings_opponent=random",
            "eval.repeat_samples=10", "eval.workers=1"]
    args = [x for s in sets for x in ("--set", s)]
    eval_dir = out / "eval"
    assert cli.main(["eval", "legality", str(tiny_checkpoint), "--out", str(eval_dir), *args]) == 0
    assert "top-1 legal" in capsys.readouterr().out
    assert cli.main(["eval", "strength", str(tiny_checkpoint), "--out", str(eval_dir), "--engine", fake, "-q",
                     *args]) == 0
    printed = capsys.readouterr().out
    assert "measured Elo" in printed and "Move matching" in printed and "Centipawn loss" in printed
    assert cli.main(["eval", "openings", str(tiny_checkpoint), "--out", str(eval_dir), *args]) == 0
    assert json.loads((eval_dir / "openings.json").read_text())["rows"]
    assert cli.main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    for section in ("## Move legality", "## Strength by prompted rating", "## Opening variety"):
        assert section in text
    assert (out / "report" / "legality.png").read_bytes()[:4] == b"\x89PNG"
    # a bad override is a one-line error, not a traceback
    assert cli.main(["eval", "openings", str(tiny_checkpoint), "--set", "eval.ladder_games=3"]) == 2
    assert "must be even" in capsys.readouterr().err


def test_cli_bad_checkpoint_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in ((["play", str(tmp_path / "nope")], "no checkpoint found at"),
                       (["play", str(tmp_path), "--rating", "9000"], "--rating 9000: rating must be between 400 and 3199"),
                       (["uci", str(tmp_path), "--opponent-rating", "100"], "--opponent-rating 100: rating must be"),
                       (["play", str(tmp_path), "--fen", "not a fen"], "--fen 'not a fen'"),
                       (["uci", str(tmp_path), "--top-p", "0"], "--top-p 0.0: must be in (0, 1]"),
                       (["uci", str(tmp_path), "--temperature", "1e-300"], "--temperature 1e-300: must be 0 (most"),
                       (["play", str(tmp_path), "--temperature", "nan"], "--temperature nan: must be 0 (most"),
                       (["train", str(tmp_path / "none.toml")], "config file not found"),
                       (["train", str(TINY), "--set", "train"], "expected section.key=value")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("chessdt: error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert says in err, err
