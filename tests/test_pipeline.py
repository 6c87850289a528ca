"""`chessdt run` checks what it will need before it spends minutes training."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_data import write_dataset

from chessdt import cli
from chessdt.config import load_config
from chessdt.errors import UserError
from chessdt.pipeline import engine_needed, run_pipeline

TINY = ["model.n_layer=1", "model.n_head=2", "model.d_model=32", "model.context=64", "train.max_steps=2",
        "train.batch_tokens=512", "train.eval_tokens=512", "train.threads=1"]
NO_ENGINE = ["eval.ladder=random", "eval.cpl_positions=0", "eval.openings_opponent=random"]


def test_engine_needed_follows_the_eval_settings() -> None:
    cfg = load_config(None, NO_ENGINE)
    assert not engine_needed(cfg, ("strength", "openings"))
    assert engine_needed(load_config(None, NO_ENGINE[:1]), ("strength",))  # centipawn loss uses Stockfish
    assert engine_needed(load_config(None, ["eval.ladder=random,1350", *NO_ENGINE[1:]]), ("strength",))
    assert not engine_needed(load_config(None), ("legality",))
    assert engine_needed(load_config(None), ("openings",))  # the default openings opponent is skill=0


def test_missing_engine_is_reported_before_training(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=16, n_val=4)
    run = tmp_path / "run"
    cfg = load_config(None, [*TINY, f"data.prepared={data}", f"run_dir={run}", "eval.engine=/nonexistent/sf"])
    with pytest.raises(UserError, match="nonexistent/sf.*apt-get install stockfish"):
        run_pipeline(cfg, progress=False)
    assert not (run / "checkpoints").exists() and not (run / "train.jsonl").exists()
    # the same config without the steps that play Stockfish goes ahead
    run_pipeline(cfg, progress=False, only=("train", "legality"))
    assert (run / "train.done").is_file()


def test_missing_inputs_and_unwritable_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    cfg = load_config(None, [*TINY, *NO_ENGINE, f"run_dir={run}", f"data.inputs={tmp_path / 'nothing*.pgn'}"])
    with pytest.raises(UserError, match="no such file, directory or glob match"):
        run_pipeline(cfg, progress=False)
    cfg = load_config(None, [*TINY, *NO_ENGINE, f"run_dir={run}", f"data.prepared={tmp_path / 'none'}"])
    with pytest.raises(UserError, match="no meta.json"):
        run_pipeline(cfg, progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    toml = tmp_path / "x.toml"
    toml.write_text(f'run_dir = "{blocker / "run"}"\n[data]\ninputs = ["{tmp_path}"]\n')
    assert cli.main(["run", str(toml), "-q"]) == 2
    assert "cannot write to the run directory" in capsys.readouterr().err
