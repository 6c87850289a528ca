"""Experiment configs: TOML + --set overrides by field type, one-line errors, paths, old configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from chessdt.config import (Config, ConfigError, config_from_dict, load_config, override, prepared_path, run_path,
                            to_dict)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sub" / "x.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_overrides_convert_by_field_type(tmp_path: Path) -> None:
    cfg = load_config(_toml(tmp_path, 'name = "x"\n[train]\nlr = 1e-3\n'),
                      ["train.lr=3e-4", "train.max_steps=7", "train.compile=yes", "eval.ratings=1000, 1500",
                       "data.engine_tags=A,B", "rl.opponent=random"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.compile) == (3e-4, 7, True)
    assert cfg.eval.ratings == (1000, 1500) and cfg.data.engine_tags == ("A", "B") and cfg.rl.opponent == "random"


@pytest.mark.parametrize("overrides, message", [
    (["train.lrr=1"], "unknown key train.'lrr'; valid keys: "),
    (["train.max_steps=1.5"], "train.max_steps: expected int"),
    (["train.compile=maybe"], "expected true or false"),
    (["data.reader=fast"], "data.reader='fast': use 'rust' or 'python-chess'"),
    (["train.precision=fp16"], "train.precision='fp16': use auto, bf16 or fp32"),
    (["rl.reward=elo"], "rl.reward='elo': use result, engine or rater"),
    (["rl.opponent=human"], "rl.opponent 'human': use 'random', 'self', 'skill=N', 'full'"),
    (["rl.opponent=skill=30"], "Skill Level 30 outside 0-20"),
    (["train"], "expected section.key=value"),
])
def test_bad_values_are_one_line_config_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_paths_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(_toml(tmp_path, 'name = "n"\nrun_dir = "../runs/a"\n[data]\ninputs = ["g.pgn"]\n'))
    assert cfg.run_dir == str(tmp_path / "runs" / "a") and cfg.data.inputs == (str(tmp_path / "sub" / "g.pgn"),)
    assert run_path(cfg) == tmp_path / "runs" / "a" and prepared_path(cfg) == tmp_path / "runs" / "a" / "data"
    monkeypatch.chdir(tmp_path)
    bare = load_config(None, ["name=b", "data.prepared=/data/p"])
    assert run_path(bare) == tmp_path / "runs" / "b" and prepared_path(bare) == Path("/data/p")


def test_round_trip_and_override() -> None:
    cfg = load_config(None, ["model.n_layer=3", "eval.ratings=1200"])
    assert config_from_dict(to_dict(cfg)) == cfg
    changed = override(cfg, ["eval.ladder_games=6", "train.lr=1e-4"])
    assert changed.eval.ladder_games == 6 and changed.train.lr == 1e-4 and changed.model.n_layer == 3
    assert changed.eval.ratings == (1200,)
    with pytest.raises(ConfigError, match="must be even"):
        override(cfg, ["eval.ladder_games=3"])


def test_configs_written_before_the_opponent_spec_still_load(tmp_path: Path) -> None:
    """rl.opponent = "stockfish" with rl.opponent_elo / opponent_skill (old TOML and old checkpoints)."""
    old = to_dict(Config())
    old["rl"].update(opponent="stockfish", opponent_elo=1600, opponent_skill=0)
    assert config_from_dict(old).rl.opponent == "1600"
    old["rl"].update(opponent_elo=0, opponent_skill=3)
    assert config_from_dict(old).rl.opponent == "skill=3"
    old["rl"].update(opponent="random")
    assert config_from_dict(old).rl.opponent == "random"
    path = _toml(tmp_path, '[rl]\nopponent = "stockfish"\nopponent_elo = 1800\n')
    assert load_config(path).rl.opponent == "1800"
    assert load_config(path, ["rl.opponent_elo=0", "rl.opponent_skill=5"]).rl.opponent == "skill=5"


def test_every_shipped_experiment_loads() -> None:
    root = Path(__file__).resolve().parents[1] / "experiments"
    files = sorted(root.glob("*.toml"))
    assert len(files) >= 5
    for path in files:
        cfg = load_config(path)
        assert cfg.name and config_from_dict(to_dict(cfg)) == cfg, path.name


@pytest.mark.parametrize("setting, message", [
    ("model.n_head=0", "model sizes (n_layer, n_head, d_model, mlp_ratio, context) must be positive"),
    ("train.eval_every=0", "eval_every, save_every, log_every and eval_tokens must be positive"),
    ("train.save_every=0", "eval_every, save_every, log_every and eval_tokens must be positive"),
    ("train.log_every=-1", "eval_every, save_every, log_every and eval_tokens must be positive"),
    ("train.lr=nan", "train.lr=nan must be a positive finite number"),
    ("train.lr=inf", "train.lr=inf must be a positive finite number"),
    ("train.grad_clip=nan", "train.grad_clip=nan must be a finite number, 0 or more"),
])
def test_values_that_would_crash_training_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            setting: str, message: str) -> None:
    from chessdt import cli

    assert cli.main(["train", str(_toml(tmp_path, 'name = "x"\n')), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_config_path_that_is_a_directory_or_binary_is_one_line(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from chessdt import cli

    binary = tmp_path / "model.safetensors"
    binary.write_bytes(bytes(range(256)) * 4)
    assert cli.main(["train", str(tmp_path)]) == 2
    assert f"{tmp_path} is a directory, not an experiment TOML file" in capsys.readouterr().err
    assert cli.main(["train", str(binary)]) == 2
    assert "model.safetensors: not a text file" in capsys.readouterr().err
