"""Checkpoints you can trust: safetensors weights plus a meta.json that says what they mean.

A checkpoint is a directory::

    model.safetensors   weights of the uncompiled model (no pickle: loading never runs code)
    train.safetensors   optimizer moments and RNG states, for an exact --resume
    meta.json           config, vocabulary hash, weights hash, step, tokens seen, git revision, metrics

It is written under ``<name>.partial``, flushed to disk and renamed into place, so a crash or a
power cut never leaves a half-written checkpoint. A checkpoint is untrusted input: its files are
parsed, never executed, and anything unreadable is a :class:`CorruptCheckpoint` error. A run keeps ``checkpoints/step_NNNNNNN`` (the last K) and ``best``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import subprocess
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from chessdt.config import Config, ConfigError, config_from_dict
from chessdt.tables import section_types, to_dict
from chessdt.errors import UserError
from chessdt.files import as_umask_allows, durable_rename
from chessdt.model import GPT
from chessdt.tokenizer import Vocab

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
STEP_PREFIX = "step_"


# The text fields a checkpoint's stored config may keep: paths of games and checkpoints (read as data,
# never run), labels, tags and grammars that cannot name a program. Every other text field (a str, or
# a tuple holding str) of a config read from a checkpoint takes its default, so a field added later is
# safe until someone reviews it and lists it here. Numbers, booleans and Literal enums never name a program.
CHECKPOINT_TEXT = frozenset({
    "name", "run_dir",
    "data.inputs", "data.prepared", "data.label", "data.engine_tags", "data.time_controls",
    "data.drop_terminations", "data.split_salt",
    "train.device",
    "rl.base", "rl.rater",
    "eval.games", "eval.match_plan", "eval.match_extra", "eval.repeat_lines", "eval.fidelity_rungs",
    "experiment.base", "experiment.reference", "experiment.rungs", "experiment.rl_rewards",
})


def _is_text(tp: Any) -> bool:
    """A declared field type that holds free text: str, or a tuple with a str member."""
    return tp is str or (typing.get_origin(tp) is tuple and str in typing.get_args(tp))


def without_programs(cfg: Config) -> Config:
    """`cfg` as a checkpoint may supply it: text fields outside CHECKPOINT_TEXT (engines, opponents,
    move-matching references and any field added later) take their defaults, so a config read from a
    checkpoint someone else made never names a program to run; the user names engines on the command
    line or in --config."""

    def clean(section: Any, prefix: str) -> Any:
        hints = section_types(type(section))
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                changes[f.name] = clean(value, f"{prefix}{f.name}.")
            elif _is_text(hints[f.name]) and f"{prefix}{f.name}" not in CHECKPOINT_TEXT:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                if value != default:
                    changes[f.name] = default
        return dataclasses.replace(section, **changes)

    cleaned: Config = clean(cfg, "")
    return cleaned


def git_revision() -> str:
    """HEAD of the chessdt checkout (with '+dirty' when files differ), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class CorruptCheckpoint(UserError):
    """A checkpoint whose files cannot be read: truncated or corrupt weights, a meta.json of the wrong shape."""


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint directory holds, loaded to CPU."""

    path: Path
    meta: dict[str, Any]
    cfg: Config
    weights: dict[str, torch.Tensor]
    weights_id: str  # weights_hash of `weights`: what results and game logs are keyed on

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def weights_hash(state: Mapping[str, torch.Tensor]) -> str:
    """The identity of a model's weights: sha256 over each tensor's name, dtype, shape and bytes (16 hex digits).

    Game logs and results are keyed on it, not on a checkpoint's name, so a `best` that moved
    (train --resume) never inherits the games of the weights it replaced.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in info["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(path: Path, model: GPT, cfg: Config, vocab: Vocab, *, step: int, tokens_seen: int,
                    metrics: dict[str, Any] | None = None, optimizer: torch.optim.Optimizer | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory atomically (replacing one of the same name); returns it.

    ``model`` must be the plain module (not DDP-wrapped or compiled) so names stay stable.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_files(tmp, model, cfg, vocab, step=step, tokens_seen=tokens_seen, metrics=metrics,
                     optimizer=optimizer, extra=extra)
    except BaseException:  # a full disk or a second Ctrl-C: the previous checkpoints stay as they were
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + ".old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    durable_rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _write_files(tmp: Path, model: GPT, cfg: Config, vocab: Vocab, *, step: int, tokens_seen: int,
                 metrics: dict[str, Any] | None, optimizer: torch.optim.Optimizer | None,
                 extra: dict[str, Any] | None) -> None:
    """The files of a checkpoint, written into the (partial) directory `tmp`."""
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    as_umask_allows(tmp / "model.safetensors")  # safetensors writes 0600: others who may read the run could not
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "tokens_seen": tokens_seen,
        "vocab_hash": vocab.hash,
        "vocab_size": vocab.size,
        "weights_hash": weights_hash(weights),
        "num_params": model.num_params(),
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "metrics": metrics or {},
        "config": to_dict(cfg),
        **(extra or {}),
    }
    if optimizer is not None:
        tensors, info = _flatten_optimizer(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        save_file(tensors, str(tmp / "train.safetensors"))
        as_umask_allows(tmp / "train.safetensors")
        meta["optimizer"] = info
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from itself, a run directory (best, else latest) or checkpoints/."""
    path = Path(path)
    if (path / "meta.json").is_file() and (path / "model.safetensors").is_file():
        return path
    for base in (path / "checkpoints", path):
        if (base / "best" / "meta.json").is_file():
            return base / "best"
        steps = step_checkpoints(base)
        if steps:
            return steps[-1]
    raise UserError(f"no checkpoint found at {path} (expected model.safetensors + meta.json, "
                    "or a run directory with checkpoints/)")


def step_checkpoints(directory: Path) -> list[Path]:
    """Complete step checkpoints in a directory, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{STEP_PREFIX}*")
                  if p.is_dir() and not p.name.endswith((".partial", ".old")) and (p / "meta.json").is_file())


def read_checkpoint(path: str | Path, vocab: Vocab | None = None) -> Checkpoint:
    """Load a checkpoint's meta and weights to CPU, checking the vocabulary.

    The vocabulary is rebuilt from the saved config; its hash must equal the one saved (else the
    tokenizer changed since training) and, when ``vocab`` is given (e.g. that of a data set), equal
    that one too. Either mismatch is a UserError that names both sides.
    """
    path = resolve_checkpoint(path)
    meta, cfg = _read_meta(path)
    ours = Vocab(rating_bucket=cfg.data.rating_bucket)
    if ours.hash != meta["vocab_hash"]:
        raise UserError(f"{path}: trained with vocabulary {meta['vocab_hash']} (size {meta['vocab_size']}), "
                        f"but this chessdt builds {ours.hash} (size {ours.size}) for rating_bucket="
                        f"{cfg.data.rating_bucket}: the tokenizer changed since this checkpoint")
    if vocab is not None and vocab.hash != meta["vocab_hash"]:
        raise UserError(f"{path}: vocabulary mismatch: checkpoint {meta['vocab_hash']} (size "
                        f"{meta['vocab_size']}, rating_bucket={cfg.data.rating_bucket}) vs expected "
                        f"{vocab.hash} (size {vocab.size}, rating_bucket={vocab.rating_bucket})")
    weights = _load_tensors(path / "model.safetensors")
    broken = sorted(name for name, t in weights.items() if t.is_floating_point() and not bool(t.isfinite().all()))
    if broken:  # a model with NaN weights samples from NaN probabilities: every command would fail later
        raise CorruptCheckpoint(f"{path}: the weights hold NaN or infinite values ({', '.join(broken[:3])}"
                                f"{', ...' if len(broken) > 3 else ''}); use an earlier checkpoint")
    # computed from the weights read, so a checkpoint from before weights_hash existed is keyed too
    weights_id = weights_hash(weights)
    if meta.get("weights_hash", weights_id) != weights_id:
        log.warning("%s: model.safetensors changed since it was saved (weights %s, meta.json says %s); "
                    "results are keyed on the weights read", path, weights_id, meta["weights_hash"])
    return Checkpoint(path=path, meta=meta, cfg=cfg, weights=weights, weights_id=weights_id)


def _read_meta(path: Path) -> tuple[dict[str, Any], Config]:
    """meta.json of a checkpoint and its config, checked for shape (it may come from anywhere)."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise ValueError("no config table")
        model = meta["config"].get("model", {})
        if not isinstance(model, dict):
            raise ValueError("config.model is not a table")
        # checkpoints from before model.attack_features existed were trained without it
        model.setdefault("attack_features", False)
        # a checkpoint is data: its config never names a program for any command (engines, opponents)
        cfg = without_programs(config_from_dict(meta["config"]))
        for key, kind in (("step", int), ("tokens_seen", int), ("vocab_hash", str), ("vocab_size", int)):
            if not isinstance(meta.get(key), kind):
                raise ValueError(f"{key} missing or not {kind.__name__}")
    except (ValueError, UnicodeDecodeError, ConfigError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise CorruptCheckpoint(f"{path / 'meta.json'} is not a chessdt checkpoint's meta.json: "
                                f"{' '.join(str(e).split()) or 'nested too deep'}") from None
    return meta, cfg


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file; CorruptCheckpoint if it is truncated or malformed."""
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise CorruptCheckpoint(f"{path} is corrupt or truncated ({e}); use another checkpoint") from None
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{path} is missing: the checkpoint is incomplete") from None


def load_model(path: str | Path, device: str | torch.device = "cpu",
               vocab: Vocab | None = None) -> tuple[GPT, Config, Vocab]:
    """(model in eval mode, its config, its vocabulary) from a checkpoint or run directory."""
    return model_of(read_checkpoint(path, vocab), device)


def model_of(ckpt: Checkpoint, device: str | torch.device = "cpu") -> tuple[GPT, Config, Vocab]:
    """(model in eval mode, its config, its vocabulary) of a read checkpoint."""
    model_vocab = Vocab(rating_bucket=ckpt.cfg.data.rating_bucket)
    model = GPT(ckpt.cfg.model, model_vocab.size, model_vocab)
    _load_weights(model, ckpt)
    return model.to(device).eval(), ckpt.cfg, model_vocab


def _load_weights(model: GPT, ckpt: Checkpoint) -> None:
    """The checkpoint's weights into `model`; CorruptCheckpoint when names or shapes do not fit."""
    try:
        model.load_state_dict(ckpt.weights, strict=True)
    except RuntimeError as e:
        raise CorruptCheckpoint(f"{ckpt.path}: the weights do not fit the model its meta.json describes "
                                f"({' '.join(str(e).split())[:300]})") from None


def load_training_state(path: Path, model: GPT, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights, optimizer moments and RNG for --resume; returns the checkpoint's meta.

    The model must have the checkpoint's [model] config (fields added since it was written take
    their defaults on both sides); else a UserError, before any weight is touched.
    """
    ckpt = read_checkpoint(path)
    if ckpt.cfg.model != model.cfg:
        raise UserError(f"--resume: the model config differs from the checkpoint's {ckpt.path}")
    _load_weights(model, ckpt)
    tensors = _load_tensors(ckpt.path / "train.safetensors")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, ckpt.meta["optimizer"]))
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:
        raise CorruptCheckpoint(f"{ckpt.path}: the training state does not load ({e!r})") from None
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return ckpt.meta


def prune(directory: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last step checkpoints (best is a separate directory)."""
    for old in step_checkpoints(directory)[: -keep_last or None] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
