"""Experiment configs: TOML + --set overrides by field type, one-line errors, paths, old configs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from chessdt.checkpoint import CHECKPOINT_TEXT, without_programs
from chessdt.config import (Config, ConfigError, EvalConfig, config_from_dict, load_config, override, prepared_path,
                            run_path, to_dict)


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
    # one grammar: what RL plays, its config accepts (a UCI engine included), and vice versa
    assert load_config(None, ["rl.opponent=uci=lc0 --weights=maia-1500.pb.gz@1500/1"]).rl.opponent.startswith("uci=")


@pytest.mark.parametrize("overrides, message", [
    (["train.lrr=1"], "unknown key train.'lrr'; valid keys: "),
    (["train.max_steps=1.5"], "train.max_steps: expected int"),
    (["train.compile=maybe"], "expected true or false"),
    (["data.reader=fast"], "data.reader='fast': use 'rust' or 'python-chess'"),
    (["train.precision=fp16"], "train.precision='fp16': use auto, bf16 or fp32"),
    (["rl.reward=elo"], "rl.reward='elo': use result, engine or rater"),
    (["rl.opponent=human"], "rl.opponent 'human': use 'random', 'self', 'base', 'skill=N', 'full'"),
    (["rl.opponent=skill=30"], "Skill Level 30 outside 0-20"),
    (["rl.opponent=uci=lc0"], "a UCI engine is 'uci=COMMAND@RATING"),
    (["train"], "expected section.key=value"),
    # issue 24, case 8: each was a traceback, later (in the model, the sampler or torch)
    (["model.context=3"], "model.context=3 leaves no room for moves after the 3-token prefix of data.label='elo'"),
    (["train.device=quantum"], "train.device='quantum': use auto, cpu, cuda, cuda:N or mps"),
    (["eval.temperature=1e-300"], "eval.temperature=1e-300: must be 0 (most likely move) or a number in [0.01"),
    (["eval.guidance=nan"], "eval.guidance=nan: must be a number in [-100, 100]"),
    (["eval.top_p=nan"], "eval.top_p=nan: must be in (0, 1]"),
    (["rl.temperature=inf"], "rl.temperature=inf: must be 0 (most likely move)"),
    (["experiment.guidance=1,nan"], "experiment.guidance=nan: must be a number"),
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


PLANTED = ("uci=/tmp/x.sh@1500", " uci=/tmp/x.sh@1500", "\tUCI=/tmp/x.sh@1500/1", "Uci= /tmp/x.sh@1500")


def _leaves(table: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every value in a config table that is text or a list (which may hold text)."""
    out: list[str] = []
    for key, value in table.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        elif isinstance(value, (str, list)):
            out.append(f"{prefix}{key}")
    return out


def _with(table: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(table)
    *sections, key = path.split(".")
    inner = out
    for s in sections:
        inner = inner[s]
    inner[key] = value
    return out


def _can_start_a_program(cfg: Config) -> list[str]:
    """What in `cfg` would make a command run a program other than the user's own Stockfish."""
    from chessdt.rules import Opponent

    found = [f"{name}={value!r}" for name, value in (("eval.engine", cfg.eval.engine), ("rl.engine", cfg.rl.engine))
             if value]
    specs = [("eval.ladder", s) for s in cfg.eval.ladder] + [("eval.matching_references", s)
                                                             for s in cfg.eval.matching_references]
    specs += [("eval.openings_opponent", cfg.eval.openings_opponent), ("rl.opponent", cfg.rl.opponent)]
    for name, spec in specs:
        if Opponent.parse(spec, models=True).kind == "uci":
            found.append(f"{name}={spec!r}")
    # any other surviving program spec must sit in a field a checkpoint may keep (reviewed: never run)
    found += [f"{path} holds a program spec" for path in _leaves(to_dict(cfg))
              if "x.sh" in str(_get(to_dict(cfg), path)) and path not in CHECKPOINT_TEXT]
    return found


def _get(table: dict[str, Any], path: str) -> Any:
    value: Any = table
    for part in path.split("."):
        value = value[part]
    return value


def test_a_checkpoint_config_never_names_a_program_whatever_text_field_holds_one() -> None:
    """Every text field of a checkpoint's config (and every text inside its lists), set to a UCI program
    spec in any spelling, is either refused when the config is read or gone after without_programs."""
    base = to_dict(Config())
    paths = _leaves(base)
    assert {"eval.engine", "eval.ladder", "eval.openings_opponent", "rl.engine", "rl.opponent"} <= set(paths)
    kept = 0
    for path in paths:
        for spec in PLANTED:
            old = _get(base, path)
            values = [spec] if isinstance(old, str) else [[spec], [spec, spec], ["1350", spec], [*old, spec]]
            for value in values:
                try:
                    cfg = config_from_dict(_with(base, path, value))
                except ConfigError:
                    continue  # a checkpoint whose config does not parse is refused as corrupt
                kept += 1
                assert _can_start_a_program(without_programs(cfg)) == [], (path, value)
    assert kept > 50  # most fields accept the text: the property was exercised, not skipped


def test_a_checkpoint_keeps_what_describes_its_model_and_data() -> None:
    cfg = load_config(None, ["eval.ladder=random,1350", "eval.openings_opponent=random", "eval.engine=/opt/sf",
                             "rl.opponent=random", "data.label=elo+outcome", "model.n_layer=3",
                             "eval.ratings=1300", "eval.games=/data/g.pgn", "name=mine"])
    safe = without_programs(cfg)
    default = EvalConfig()
    assert (safe.eval.ladder, safe.eval.openings_opponent, safe.eval.engine, safe.rl.opponent) == (
        default.ladder, default.openings_opponent, "", "base")
    assert (safe.data, safe.model, safe.name) == (cfg.data, cfg.model, "mine")
    assert (safe.eval.ratings, safe.eval.games) == ((1300,), "/data/g.pgn")


def test_a_toml_nested_beyond_the_parser_is_one_line(tmp_path: Path) -> None:
    """Issue 24, case 8: a TOML nested 100,000 deep was a RecursionError traceback."""
    deep = _toml(tmp_path, "a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deep to be an experiment config"):
        load_config(deep)
