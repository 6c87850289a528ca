"""The value head: results in the shards, value targets in batches, the head, its training and loading."""

from __future__ import annotations

import io
import json
from pathlib import Path

import chess
import chess.pgn
import numpy as np
import pytest
import torch
from conftest import random_game, random_pgn
from tiny_data import write_dataset

from chessdt.checkpoint import load_model, save_checkpoint
from chessdt.config import Config, ConfigError, DataConfig, ModelConfig, load_config
from chessdt.data.batches import IGNORE, Batcher
from chessdt.data.prepare import prepare
from chessdt.data.shards import PreparedData
from chessdt.errors import UserError
from chessdt.evals.heldout import HeldOutGame
from chessdt.model import GPT
from chessdt.play.policy import ModelPolicy
from chessdt.rules import result_class, white_class
from chessdt.tokenizer import Vocab
from chessdt.train import train

TINY = ["model.n_layer=1", "model.n_head=2", "model.d_model=32", "model.context=64",
        "train.batch_tokens=512", "train.warmup_steps=3", "train.lr=3e-3", "train.eval_tokens=1024",
        "train.log_every=1", "train.threads=1"]


def test_prepare_stores_each_games_result(tmp_path: Path) -> None:
    pgn = random_pgn(30, seed=3)
    (tmp_path / "g.pgn").write_text(pgn)
    prepare([str(tmp_path / "g.pgn")], tmp_path / "d", DataConfig(val_fraction=0.3), workers=1, progress=False)
    data = PreparedData.open(tmp_path / "d")
    assert data.meta["results"] is True
    # every game kept, with its header's result, in file order per split
    headers = {}
    f = io.StringIO(pgn)
    while (g := chess.pgn.read_game(f)) is not None:
        headers[tuple(m.uci() for m in g.mainline_moves())] = g.headers["Result"]
    seen = 0
    for split in data.splits.values():
        assert split.results is not None and len(split.results) == split.n_games
        for i in range(split.n_games):
            moves = tuple(data.vocab.decode_move(int(t)).uci() for t in split.game(i)[data.prefix_len:-1])
            assert int(split.results[i]) == white_class(headers[moves])
            seen += 1
    assert seen == 30


def test_value_targets_are_the_result_for_the_side_to_move(tmp_path: Path) -> None:
    data = PreparedData.open(write_dataset(tmp_path / "d", n_train=6, n_val=2))
    batcher = Batcher(data, "train", context=16, batch_tokens=4096, boards=True, values=True)
    batch = batcher.batch(np.arange(len(batcher.segs)))
    assert batch.values is not None
    results = data.splits["train"].results
    assert results is not None
    checked = 0
    for r, g in enumerate(batcher.segs[:, 0]):
        white = int(results[g])
        for col in range(batch.values.shape[1]):
            v = int(batch.values[r, col])
            if int(batch.targets[r, col]) == IGNORE:
                assert v == IGNORE
                continue
            mover = chess.WHITE if int(batch.plies[r, col]) % 2 == 0 else chess.BLACK
            result = {0: "1-0", 1: "1/2-1/2", 2: "0-1"}[white]
            assert v == result_class(result, mover)
            checked += 1
    assert checked == int((batch.targets != IGNORE).sum()) > 50
    # segments after the first start on Black's or White's move: both sides appear
    assert {int(p) % 2 for p in batch.plies[batch.values != IGNORE]} == {0, 1}


def test_old_prepared_data_loads_but_a_value_head_asks_to_prepare_again(tmp_path: Path) -> None:
    data = PreparedData.open(write_dataset(tmp_path / "d", n_train=4, n_val=2, results=False))
    assert data.splits["train"].results is None
    Batcher(data, "train", context=64, batch_tokens=1024, boards=True)  # a plain model still trains
    with pytest.raises(UserError, match="prepare"):
        Batcher(data, "train", context=64, batch_tokens=1024, boards=True, values=True)


def test_value_head_needs_a_prefix_without_the_result() -> None:
    with pytest.raises(ConfigError, match="outcome"):
        load_config(None, ["model.value_head=true", "data.label=elo+outcome"])
    cfg = load_config(None, ["model.value_head=true", "train.value_weight=0.5"])
    assert cfg.model.value_head and cfg.train.value_weight == 0.5
    assert not Config().model.value_head  # off by default: old configs train what they trained


def test_forward_with_value_and_the_cached_step_agree() -> None:
    torch.manual_seed(0)
    vocab = Vocab()
    cfg = ModelConfig(n_layer=1, n_head=2, d_model=32, context=32, value_head=True)
    model = GPT(cfg, vocab.size, vocab).eval()
    torch.nn.init.normal_(model.value_head.weight, 0, 0.5)  # zero at init: give it something to say
    from chessdt.tokenizer import position_inputs
    board = chess.Board()
    for uci in ("e2e4", "e7e5", "g1f3"):
        board.push_uci(uci)
    tokens, boards, plies = (torch.as_tensor(a)[None] for a in position_inputs([vocab.bos], board, 32, vocab))
    with torch.no_grad():
        logits, value = model(tokens, boards, plies, with_value=True)
        assert value.shape == (1, tokens.shape[1], 3)
        assert torch.equal(logits, model(tokens, boards, plies))  # the head changes no move logit
        cache = model.new_cache(1)
        model(tokens[:, :-1], boards[:, :-1], plies[:, :-1], cache=cache)
        step_logits, step_value = model.step_value(tokens[:, -1], cache, boards[:, -1], plies[:, -1])
    torch.testing.assert_close(step_value, value[:, -1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-4, rtol=1e-4)
    plain = GPT(ModelConfig(n_layer=1, n_head=2, d_model=32, context=32), vocab.size, vocab)
    with pytest.raises(ValueError, match="no value head"):
        plain(tokens, boards, plies, with_value=True)


def test_training_with_a_value_head_learns_it_and_logs_it(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d", n_train=64, n_val=8)
    cfg = load_config(None, TINY + [f"data.prepared={data}", f"run_dir={tmp_path / 'run'}", "model.value_head=true",
                                    "train.max_steps=30", "train.eval_every=15", "train.save_every=15"])
    run = train(cfg, progress=False)
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_value_loss" in e and "val_value_brier" in e for e in evals)
    # zero-initialised head: log(3) at step 0, then it learns at least the base rates
    assert evals[0]["val_value_loss"] == pytest.approx(np.log(3), abs=1e-4)
    assert evals[-1]["val_value_loss"] < evals[0]["val_value_loss"] - 0.01
    assert all(0.0 <= e["val_value_brier"] <= 2.0 for e in evals)
    logged = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    assert len(logged) == 30 and all(np.isfinite(line["value_loss"]) for line in logged)
    model, loaded, _ = load_model(run)
    assert loaded.model.value_head and model.value_head.weight.abs().sum() > 0


def test_a_checkpoint_without_a_value_head_still_loads(tmp_path: Path) -> None:
    """A checkpoint written before the field existed: its meta.json has no model.value_head."""
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(n_layer=1, n_head=2, d_model=32, context=32))
    vocab = Vocab()
    path = save_checkpoint(tmp_path / "step_0000001", GPT(cfg.model, vocab.size, vocab), cfg, vocab, step=1,
                           tokens_seen=0)
    meta = json.loads((path / "meta.json").read_text())
    del meta["config"]["model"]["value_head"]
    del meta["config"]["train"]["value_weight"]
    (path / "meta.json").write_text(json.dumps(meta))
    model, loaded, _ = load_model(path)
    assert not loaded.model.value_head and not hasattr(model, "value_head")


# -- calibration: chessdt eval value ------------------------------------------------------------------
def _value_policy(seed: int = 0, zero_head: bool = False) -> ModelPolicy:
    torch.manual_seed(seed)
    cfg = Config(name="tiny-value", model=ModelConfig(n_layer=1, n_head=2, d_model=32, context=64, value_head=True))
    vocab = Vocab()
    model = GPT(cfg.model, vocab.size, vocab)
    if not zero_head:
        torch.nn.init.normal_(model.value_head.weight, 0, 0.5)
        torch.nn.init.normal_(model.value_head.bias, 0, 0.5)
    return ModelPolicy(model, vocab, cfg, model_id="tiny-value")


def _games(n: int, seed: int = 0) -> list[HeldOutGame]:
    out = []
    for i in range(n):
        g = random_game(seed + i, max_plies=40)
        out.append(HeldOutGame(moves=tuple(g.mainline_moves()), white=int(g.headers["WhiteElo"]),
                               black=int(g.headers["BlackElo"]), result=g.headers["Result"]))
    return out


def test_a_head_that_says_nothing_scores_two_thirds() -> None:
    from chessdt.config import EvalConfig
    from chessdt.evals.value import evaluate_value

    games = _games(12)
    result = evaluate_value(_value_policy(zero_head=True), games, EvalConfig(value_bootstrap=200))
    assert result.games == 12 and result.positions == sum(len(g.moves) for g in games)
    assert result.model.brier == pytest.approx(2 / 3, abs=1e-6)  # (1/3)^2 + (1/3)^2 + (2/3)^2 everywhere
    assert result.model.log_loss == pytest.approx(np.log(3), abs=1e-6)
    assert result.baselines[1].name == "start forecast" and result.baselines[1].brier == pytest.approx(2 / 3, abs=1e-6)
    filled = [b for b in result.reliability if b.positions]
    assert len(filled) == 1 and filled[0].lo == pytest.approx(0.5) and filled[0].positions == result.positions
    assert sum(result.outcomes) == result.positions
    # in-sample base rates: the best constant forecast per side to move, so no worse than 1/3 each
    assert "in-sample" in result.base_rates_from and result.baselines[0].brier <= 2 / 3 + 1e-9


def test_value_scores_match_a_direct_computation(tmp_path: Path) -> None:
    from chessdt.config import EvalConfig
    from chessdt.evals.value import ValueResult, evaluate_value
    from chessdt.tokenizer import position_inputs

    policy = _value_policy(seed=1)
    games = _games(10, seed=50)
    result = evaluate_value(policy, games, EvalConfig(value_bootstrap=300), tmp_path / "value.json")
    briers = []
    for g in games:
        prompt = policy.prompt(g.white, g.black)
        for j in range(len(g.moves)):
            t, b, p = (torch.as_tensor(a)[None] for a in position_inputs(prompt, g.board(j), 64, policy.vocab))
            with torch.no_grad():
                _, v = policy.model(t, b, p, with_value=True)
            forecast = torch.softmax(v[0, -1].double(), -1).numpy()
            y = np.eye(3)[result_class(g.result, chess.WHITE if j % 2 == 0 else chess.BLACK)]
            briers.append(((forecast - y) ** 2).sum())
    assert result.model.brier == pytest.approx(float(np.mean(briers)), abs=1e-5)
    assert result.model.brier_lo <= result.model.brier <= result.model.brier_hi
    base = result.baselines[0]
    assert base.minus_model_lo <= base.brier - result.model.brier <= base.minus_model_hi
    assert ValueResult.load(tmp_path / "value.json") == result
    assert "| model |" in result.format() and "base rates" in result.format()


def test_base_rates_of_a_prepared_training_split(tmp_path: Path) -> None:
    from chessdt.evals.value import prepared_base_rates

    path = write_dataset(tmp_path / "d", n_train=10, n_val=2)
    data = PreparedData.open(path)
    split = data.splits["train"]
    assert split.results is not None
    counts = np.zeros((2, 3))
    for i in range(split.n_games):
        n = min(len(split.game(i)) - data.prefix_len - 1, 40)
        result = {0: "1-0", 1: "1/2-1/2", 2: "0-1"}[int(split.results[i])]
        counts[0, result_class(result, chess.WHITE)] += (n + 1) // 2
        counts[1, result_class(result, chess.BLACK)] += n // 2
    rates = prepared_base_rates(path, 40)
    assert rates is not None and "10 games" in rates.source
    np.testing.assert_allclose(rates.rates, counts / counts.sum(1, keepdims=True), atol=1e-12)
    assert prepared_base_rates(write_dataset(tmp_path / "old", 4, 2, results=False), 40) is None
    assert prepared_base_rates(tmp_path / "nowhere", 40) is None


def test_cli_eval_value_and_the_report(tiny_value_checkpoint: Path, tiny_checkpoint: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from chessdt import cli

    out = tmp_path / "eval"
    assert cli.main(["eval", "value", str(tiny_value_checkpoint), "--out", str(out),
                     "--set", "eval.value_bootstrap=100"]) == 0
    text = capsys.readouterr().out
    assert "Base rates from the training split of" in text and (out / "value.json").is_file()
    report = cli.main(["report", str(tmp_path), "--eval-dir", str(out)])
    assert report == 0
    md = (tmp_path / "report.md").read_text()
    assert "## Value head calibration" in md and (tmp_path / "report" / "value.png").is_file()
    assert cli.main(["eval", "value", str(tiny_checkpoint), "--out", str(tmp_path / "e2")]) == 2
    assert "no value head" in capsys.readouterr().err
