from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_data import write_dataset

from chessdt import cli
from chessdt import train as train_mod
from chessdt.checkpoint import load_model, step_checkpoints
from chessdt.config import ConfigError, load_config
from chessdt.errors import UserError
from chessdt.train import lr_at, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.n_layer=1", "model.n_head=2", "model.d_model=32", "model.context=64",
        "train.batch_tokens=512", "train.warmup_steps=3", "train.lr=3e-3", "train.eval_tokens=1024",
        "train.log_every=1", "train.threads=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("d") / "data", n_train=64, n_val=8)


def _cfg(data_dir: Path, run_dir: Path, *extra: str):
    return load_config(None, TINY + [f"data.prepared={data_dir}", f"run_dir={run_dir}", *extra])


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train.jsonl").read_text().splitlines()]


def test_lr_schedule() -> None:
    assert lr_at(0, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)


def test_training_learns_and_writes_a_run(data_dir: Path, tmp_path: Path) -> None:
    run = train(_cfg(data_dir, tmp_path / "run", "train.max_steps=30", "train.eval_every=15",
                     "train.save_every=15"), progress=False)
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 15, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0
    assert evals[-1]["legal"] > evals[0]["legal"]
    assert all(0 <= e["top1"] <= e["legal"] <= 1 for e in evals[1:])
    losses = _losses(run)
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 30
    assert [p.name for p in step_checkpoints(run / "checkpoints")] == ["step_0000015", "step_0000030"]
    model, cfg, _ = load_model(run)  # the best checkpoint
    assert cfg.model.d_model == 32 and model.cfg == cfg.model
    with pytest.raises(Exception, match="already has checkpoints"):
        train(_cfg(data_dir, tmp_path / "run", "train.max_steps=30"), progress=False)


def test_resume_continues_exactly(data_dir: Path, tmp_path: Path) -> None:
    extra = ("train.max_steps=16", "train.eval_every=8", "train.save_every=100", "train.cond_dropout=0.3",
             "train.grad_accum=2")
    straight = train(_cfg(data_dir, tmp_path / "a", *extra), progress=False)
    half = train(_cfg(data_dir, tmp_path / "b", *extra), progress=False, stop_at=8)
    assert len(_losses(half)) == 8
    resumed = train(_cfg(data_dir, tmp_path / "b", *extra), progress=False, resume=True)
    assert _losses(resumed) == _losses(straight)  # exact, not approximate
    evals = lambda run: [json.loads(x)["val_loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert evals(resumed) == evals(straight)


def test_resume_from_a_checkpoint_written_before_new_model_fields(data_dir: Path, tmp_path: Path) -> None:
    """meta.json of an older chessdt lacks model fields added since (they take their defaults)."""
    extra = ("train.max_steps=4", "train.eval_every=100", "train.save_every=100")
    half = train(_cfg(data_dir, tmp_path / "old", *extra), progress=False, stop_at=2)
    meta_path = step_checkpoints(half / "checkpoints")[-1] / "meta.json"
    meta = json.loads(meta_path.read_text())
    for name in ("rating_every", "rating_continuous"):
        del meta["config"]["model"][name]
    meta["config"]["rl"].update(opponent="stockfish", opponent_elo=1600, opponent_skill=0)  # the old RL fields
    meta_path.write_text(json.dumps(meta))
    resumed = train(_cfg(data_dir, tmp_path / "old", *extra), progress=False, resume=True)
    assert len(_losses(resumed)) == 4
    with pytest.raises(UserError, match="model config differs"):
        train(_cfg(data_dir, tmp_path / "old", "train.max_steps=6", "model.d_model=64"), progress=False, resume=True)


def test_ctrl_c_saves_and_exits(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = train_mod.Batcher.stream

    def interrupted(self, *a, **kw):  # type: ignore[no-untyped-def]
        it = real(self, *a, **kw)
        for _ in range(3):
            yield next(it)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.Batcher, "stream", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(data_dir, tmp_path / "run", "train.max_steps=50"), progress=False)
    assert [p.name for p in step_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_0000003"]


def test_config_overrides_and_unknown_keys() -> None:
    cfg = load_config(ROOT / "experiments" / "tiny.toml", ["train.lr=3e-4", "model.board_head=false"])
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float) and cfg.model.board_head is False
    assert Path(cfg.data.inputs[0]).is_absolute()
    with pytest.raises(ConfigError, match="unknown key train.'lrr'.*valid keys:.*warmup_steps"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(None, ["train.max_steps=ten"])
    with pytest.raises(ConfigError, match="schedule_by_time needs"):
        load_config(None, ["train.schedule_by_time=true"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["model.d_model=30", "model.n_head=4"])


def test_cli_train(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text('name = "t"\n[train]\nmax_steps = 4\n')
    args = ["train", str(config), "--device", "cpu"]
    for item in TINY + [f"data.prepared={data_dir}", f"run_dir={tmp_path / 'run'}"]:
        args += ["--set", item]
    assert cli.main(args) == 0
    assert "step 4" in capsys.readouterr().out
    assert cli.main(args) == 2  # exists: needs --resume
    assert cli.main(args + ["--resume", "--set", "train.max_steps=6"]) == 0
    assert len(_losses(tmp_path / "run")) == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_on_cpu(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    config = tmp_path / "ddp.toml"
    config.write_text('name = "ddp"\n')
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(_free_port()), "-m", "chessdt", "train", str(config), "--device", "cpu"]
    for item in TINY + [f"data.prepared={data_dir}", f"run_dir={run}", "train.max_steps=6",
                        "train.eval_every=3", "train.save_every=3"]:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in step_checkpoints(run / "checkpoints")] == ["step_0000003", "step_0000006"]
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 3, 6]  # written once (rank 0 only)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    meta = json.loads((run / "checkpoints" / "step_0000006" / "meta.json").read_text())
    assert meta["world_size"] == 2
    # both ranks' tokens are counted: about two micro-batches of <= 512 positions per step
    steps = [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]
    assert steps[-1]["tokens"] > 6 * 512


def _cli_args(config_dir: Path, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    config = config_dir / "c.toml"
    config.write_text('name = "t"\n')
    args = ["train", str(config), "--device", "cpu", "-q"]
    for item in TINY + [f"data.prepared={data_dir}", f"run_dir={run_dir}", *extra]:
        args += ["--set", item]
    return args


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_a_checkpoint_like_ctrl_c(data_dir: Path, tmp_path: Path, signame: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import signal

    signum = getattr(signal, signame)
    real = train_mod.Batcher.stream

    def signalled(self, *a, **kw):  # type: ignore[no-untyped-def]
        it = real(self, *a, **kw)
        for _ in range(3):
            yield next(it)
        os.kill(os.getpid(), signum)  # as a scheduler would; the handler runs before the next line
        yield next(it)

    got: list[int] = []
    before = signal.signal(signum, lambda s, f: got.append(s))  # without chessdt's handler: note it, go on
    try:
        monkeypatch.setattr(train_mod.Batcher, "stream", signalled)
        code = cli.main(_cli_args(tmp_path, data_dir, tmp_path / "run", "train.max_steps=20"))
        assert signal.getsignal(signum) is not signal.default_int_handler  # the test's handler is back
    finally:
        signal.signal(signum, before)
    assert code == 128 + signum and not got
    saved = tmp_path / "run" / "checkpoints" / "step_0000003"
    assert f"chessdt: {signame}; checkpoint {saved} saved (continue with --resume)" in capsys.readouterr().err
    assert [p.name for p in step_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_0000003"]


def test_a_signal_before_training_began_says_no_checkpoint_was_written(data_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24, case 6: SIGTERM before step 0 said 'a checkpoint was saved' when none existed."""
    import signal

    def killed(*a: object, **kw: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # while the data is being opened, before any step

    monkeypatch.setattr(train_mod, "open_data", killed)
    code = cli.main(_cli_args(tmp_path, data_dir, tmp_path / "run", "train.max_steps=20"))
    err = capsys.readouterr().err
    assert code == 128 + signal.SIGTERM and "saved" not in err
    assert err.strip() == "chessdt: SIGTERM; no checkpoint was written by this run"
    assert not step_checkpoints(tmp_path / "run" / "checkpoints")


def test_a_model_too_big_for_memory_is_one_line_before_anything_is_written(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24, case 6: --set model.n_layer=<huge> grew memory until the process was killed."""
    run = tmp_path / "run"
    code = cli.main(_cli_args(tmp_path, tmp_path / "data", run, "model.n_layer=10000000000000000"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "GiB to train, more than this machine's" in err and "model.n_layer=10000000000000000" in err
    assert not run.exists() and not (tmp_path / "data").exists()


def test_a_second_training_into_the_same_run_directory_is_refused(data_dir: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from chessdt.files import LOCK_NAME, exclusive

    run = tmp_path / "run"
    args = _cli_args(tmp_path, data_dir, run, "train.max_steps=2")
    with exclusive(run / LOCK_NAME, "test"):  # as a first `chessdt train` holds it
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert f"run directory {run} is in use by process {os.getpid()}" in err
        assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    assert cli.main(args) == 0  # the lock went with its holder


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(data_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    real = train_mod._Trainer.step

    def diverging(self, lr):  # type: ignore[no-untyped-def]
        if self.done.step == 4:  # what lr=1e9 does after a few steps, without waiting for it
            with torch.no_grad():
                for p in self.model.parameters():
                    p.fill_(float("nan"))
        return real(self, lr)

    monkeypatch.setattr(train_mod._Trainer, "step", diverging)
    run = tmp_path / "run"
    assert cli.main(_cli_args(tmp_path, data_dir, run, "train.max_steps=10", "train.save_every=2",
                              "train.eval_every=2", "train.keep_last=5")) == 2
    err = capsys.readouterr().err
    assert "training diverged: loss nan at step 5" in err and "step_0000004, is kept" in err
    assert [p.name for p in step_checkpoints(run / "checkpoints")] == ["step_0000002", "step_0000004"]
    model, _, _ = load_model(run / "checkpoints" / "step_0000004")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_resume_survives_a_corrupt_newest_checkpoint_and_a_torn_log_line(data_dir: Path, tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    extra = ("train.max_steps=6", "train.eval_every=2", "train.save_every=2", "train.keep_last=3")
    straight = train(_cfg(data_dir, tmp_path / "a", *extra), progress=False)
    half = train(_cfg(data_dir, tmp_path / "b", *extra), progress=False, stop_at=4)
    weights = half / "checkpoints" / "step_0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a disk that lost its tail
    with open(half / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "tok')  # a write cut short
    resumed = train(_cfg(data_dir, tmp_path / "b", *extra), progress=False, resume=True)
    assert "skipping step_0000004" in caplog.text and "corrupt or truncated" in caplog.text
    assert _losses(resumed) == _losses(straight)  # exactly, from step 2
    evals = lambda run: [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert evals(resumed) == [0, 2, 4, 6]


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last(data_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from chessdt import checkpoint as ckpt_mod

    real = ckpt_mod.save_file

    def full(tensors, filename, *a, **kw):  # type: ignore[no-untyped-def]
        if "step_0000004" in filename:
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *a, **kw)

    monkeypatch.setattr(ckpt_mod, "save_file", full)
    run = tmp_path / "run"
    assert cli.main(_cli_args(tmp_path, data_dir, run, "train.max_steps=6", "train.save_every=2")) == 2
    err = capsys.readouterr().err
    assert err.startswith("chessdt: error: No space left on device: ") and err.count("\n") == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "step_0000002"]
    assert load_model(run / "checkpoints" / "step_0000002")[0] is not None
