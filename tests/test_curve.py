"""The legality learning curve: crossings by hand, runs read from their metrics and config, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chessdt import cli
from chessdt.config import Config, ModelConfig, to_dict
from chessdt.errors import UserError
from chessdt.evals.curve import crossings, legality_curve


def _run(path: Path, legal: list[float], model: ModelConfig) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(to_dict(Config(name=path.name, model=model))))
    with open(path / "metrics.jsonl", "w") as f:
        for k, v in enumerate(legal):
            f.write(json.dumps({"step": 100 * k, "tokens": 400_000 * k, "time_s": 60.0 * k, "val_loss": 3.0,
                                "top1": 0.3, "legal": v, "val_positions": 1000}) + "\n")
    return path


def test_crossings_are_the_first_evaluation_at_or_above() -> None:
    got = crossings([0, 10, 20, 30], [0.0, 0.96, 0.94, 0.985], (0.95, 0.98, 0.99))
    assert [(c.tokens, c.after) for c in got] == [(10, 0), (30, 20), (None, None)]


def test_curve_of_a_pure_and_a_rule_fed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pure = _run(tmp_path / "pure", [0.0, 0.5, 0.9, 0.97, 0.981],
                ModelConfig(board_input=False, board_head=False, attack_features=False))
    fed = _run(tmp_path / "fed", [0.0, 0.995, 0.999], ModelConfig())
    curve = legality_curve([pure, fed])
    p, f = curve.runs
    assert [c.tokens for c in p.crossings] == [1_200_000, 1_600_000, None]
    assert [c.tokens for c in f.crossings] == [400_000] * 3 and f.final == pytest.approx(0.999)
    assert p.inputs.startswith("pure sequence") and f.inputs.startswith("rule features")
    assert cli.main(["legality-curve", str(pure), str(fed), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| pure | pure sequence (" in out and "1.60M (1.20M)" in out and "not reached" in out
    assert (tmp_path / "out" / "legality_curve.png").is_file()
    with pytest.raises(UserError, match="no metrics"):
        legality_curve([tmp_path / "out"])
    assert cli.main(["legality-curve", str(pure), "--thresholds", "95,x"]) == 2
