from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chessdt.checkpoint import load_model, prune, read_checkpoint, resolve_checkpoint, save_checkpoint, step_checkpoints
from chessdt.config import load_config
from chessdt.errors import UserError
from chessdt.model import GPT
from chessdt.tokenizer import Vocab

CFG = load_config(None, ["model.n_layer=1", "model.n_head=2", "model.d_model=16", "model.context=16"])


def _saved(tmp_path: Path, name: str = "step_0000005") -> tuple[GPT, Path]:
    torch.manual_seed(0)
    model = GPT(CFG.model, Vocab().size)
    with torch.no_grad():
        model.move_prior.normal_()
    path = save_checkpoint(tmp_path / "checkpoints" / name, model, CFG, Vocab(), step=5, tokens_seen=1234,
                           metrics={"val_loss": 3.5})
    return model, path


def test_roundtrip_gives_identical_logits_and_meta(tmp_path: Path) -> None:
    model, path = _saved(tmp_path)
    loaded, cfg, vocab = load_model(tmp_path)  # a run directory resolves to its latest checkpoint
    assert cfg == CFG and vocab.hash == Vocab().hash and not loaded.training
    tokens = torch.randint(0, 1968, (2, 7))
    boards = torch.randint(0, 13, (2, 7, 64), dtype=torch.uint8)
    plies = torch.arange(7).expand(2, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens, boards, plies), model.eval()(tokens, boards, plies))
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 5 and meta["tokens_seen"] == 1234 and meta["metrics"]["val_loss"] == 3.5
    assert meta["vocab_hash"] == Vocab().hash and meta["git_revision"]
    assert set(load_file(str(path / "model.safetensors"))) == set(model.state_dict())
    assert not list(path.parent.glob("*.partial"))


def test_vocab_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    other = Vocab(rating_bucket=50)
    with pytest.raises(UserError, match=f"{Vocab().hash}.*{other.hash}"):
        load_model(path, vocab=other)
    meta = json.loads((path / "meta.json").read_text())
    meta["vocab_hash"] = "0123456789abcdef"  # trained with a tokenizer that has since changed
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="0123456789abcdef.*tokenizer changed"):
        read_checkpoint(path)


def test_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint"):
        resolve_checkpoint(tmp_path)


def test_overwrite_and_prune_keep_last_k(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        _saved(tmp_path, f"step_{step:07d}")
    _saved(tmp_path, "step_0000004")  # replacing an existing checkpoint is atomic too
    prune(tmp_path / "checkpoints", keep_last=2)
    names = [p.name for p in step_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_0000003", "step_0000004"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names


def test_checkpoint_from_before_attack_features_loads_without_them(tmp_path: Path) -> None:
    """meta.json written before model.attack_features existed means a model trained without it."""
    old_cfg = load_config(None, ["model.n_layer=1", "model.n_head=2", "model.d_model=16", "model.context=16",
                                 "model.attack_features=false"])
    model = GPT(old_cfg.model, Vocab().size)
    path = save_checkpoint(tmp_path / "old", model, old_cfg, Vocab(), step=1, tokens_seen=1, metrics={})
    meta = json.loads((path / "meta.json").read_text())
    del meta["config"]["model"]["attack_features"]
    (path / "meta.json").write_text(json.dumps(meta))
    loaded, cfg, _ = load_model(path)
    assert cfg.model.attack_features is False and not hasattr(loaded, "geometry")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_files_are_as_readable_as_the_umask_allows(tmp_path: Path, umask: int) -> None:
    """Issue 24, case 7: the weights were written 0600 (safetensors' own mode) whatever the umask, and
    another user was told 'model.safetensors is missing: the checkpoint is incomplete'."""
    import os

    old = os.umask(umask)
    try:
        model = GPT(CFG.model, Vocab().size)
        opt = torch.optim.AdamW(model.parameters())
        path = save_checkpoint(tmp_path / "c", model, CFG, Vocab(), step=1, tokens_seen=1, optimizer=opt)
    finally:
        os.umask(old)
    for name in ("model.safetensors", "train.safetensors", "meta.json"):
        assert oct((path / name).stat().st_mode & 0o777) == oct(0o666 & ~umask), name


def test_a_meta_json_nested_beyond_the_parser_is_a_corrupt_checkpoint(tmp_path: Path) -> None:
    _, path = _saved(tmp_path)
    (path / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="is not a chessdt checkpoint's meta.json: maximum recursion depth"):
        read_checkpoint(path)


def test_weights_hash_is_recorded_and_computed_for_old_checkpoints(tmp_path: Path) -> None:
    """Issue 24, case 4: results were keyed on a checkpoint's name; they are keyed on its weights' hash."""
    from chessdt.checkpoint import weights_hash
    from chessdt.play.policy import ModelPolicy

    model, path = _saved(tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["weights_hash"] == weights_hash(model.state_dict()) == read_checkpoint(path).weights_id
    assert len(meta["weights_hash"]) == 16
    del meta["weights_hash"]  # a checkpoint saved before the hash existed: computed from its weights
    (path / "meta.json").write_text(json.dumps(meta))
    assert ModelPolicy.from_checkpoint(path).weights_id == weights_hash(model.state_dict())
    with torch.no_grad():
        model.move_prior.add_(1e-3)
    other = save_checkpoint(tmp_path / "checkpoints" / "best", model, CFG, Vocab(), step=6, tokens_seen=1)
    assert read_checkpoint(other).weights_id != read_checkpoint(path).weights_id
