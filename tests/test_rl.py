import dataclasses
import json
from pathlib import Path

import chess
import pytest
import torch

from chessdt import cli
from chessdt.checkpoint import save_checkpoint
from chessdt.config import load_config
from chessdt.model import GPT
from chessdt.play.players import RandomPlayer
from chessdt.play.policy import ModelPolicy
from chessdt.rl import Rollout, distinct_openings, play_rollouts, rl_loss, rollout_model, rollout_prompts
from chessdt.tokenizer import Vocab

SMALL = ["model.n_layer=2", "model.n_head=2", "model.d_model=32", "model.context=96"]


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory) -> Path:
    cfg = load_config(None, SMALL)
    torch.manual_seed(0)
    model = GPT(cfg.model, Vocab().size)
    return save_checkpoint(tmp_path_factory.mktemp("rl") / "base", model, cfg, Vocab(), step=0, tokens_seen=0)


def test_rollouts_play_legal_games_with_model_plies_recorded(base_ckpt):
    policy = ModelPolicy.from_checkpoint(base_ckpt)
    cfg = dataclasses.replace(load_config(None, SMALL).rl, max_plies=30)
    colors = [chess.WHITE, chess.BLACK, None]
    model = rollout_model(policy, dataclasses.replace(cfg, rating=1500))
    prompts = rollout_prompts(model, colors)
    assert prompts == [policy.player_prompt(chess.WHITE, 1500, None), policy.player_prompt(chess.BLACK, 1500, None),
                       policy.prompt(1500, 1500)]
    rollouts = play_rollouts(model, prompts, colors, RandomPlayer(1), cfg, torch.Generator().manual_seed(0))
    for r, color in zip(rollouts, colors):
        board = chess.Board()
        for m in r.moves:
            assert board.is_legal(m)
            board.push(m)
        expected = [k for k in range(len(r.moves)) if color is None or (k % 2 == 0) == (color == chess.WHITE)]
        assert r.model_plies == expected
        assert len(r.legal) == len(r.model_plies)
        assert len(r.moves) <= 30


def test_kl_is_zero_at_the_base_and_reinforce_moves_logp_with_the_advantage(base_ckpt):
    policy = ModelPolicy.from_checkpoint(base_ckpt)
    model = GPT(policy.cfg.model, policy.vocab.size)
    model.load_state_dict(policy.model.state_dict())
    cfg = dataclasses.replace(load_config(None, SMALL).rl, max_plies=16)
    prompts = [policy.player_prompt(chess.WHITE, 1500, None)] * 2
    won, lost = play_rollouts(rollout_model(policy, cfg), prompts, [chess.WHITE] * 2, RandomPlayer(3), cfg,
                              torch.Generator().manual_seed(1))
    won.reward, lost.reward = 1.0, -1.0
    loss, stats = rl_loss(model, policy.model, [won, lost], policy, beta=0.5)
    assert stats.kl == pytest.approx(0.0, abs=1e-6)
    assert stats.reward == 0.0 and stats.entropy > 0
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss.backward()
    opt.step()

    def game_logp(r: Rollout) -> float:
        _, s = rl_loss(model, policy.model, [r, r], policy, beta=0.0)
        return s.logp

    base_won, base_lost = rl_loss(policy.model, policy.model, [won, won], policy, 0)[1].logp, \
        rl_loss(policy.model, policy.model, [lost, lost], policy, 0)[1].logp
    # the update favours the won game's moves over the lost game's
    assert game_logp(won) - game_logp(lost) > base_won - base_lost + 1e-4
    _, after = rl_loss(model, policy.model, [won, lost], policy, beta=0.5)
    assert after.kl > 0


def test_finetune_rl_cli_writes_metrics_and_loadable_checkpoints(base_ckpt, tmp_path, capsys):
    cfg = tmp_path / "rl.toml"
    cfg.write_text(f'name = "rl-test"\n[rl]\nbase = "{base_ckpt}"\nsteps = 2\ngames_per_step = 4\n'
                   'opponent = "random"\nmax_plies = 20\nsave_every = 1\nlr = 1e-3\n')
    out = tmp_path / "run"
    assert cli.main(["finetune-rl", str(cfg), "--out", str(out), "-q"]) == 0
    lines = [json.loads(x) for x in (out / "rl.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    assert all(x["games"] == 4 and 1 <= x["distinct_openings"] <= 4 for x in lines)
    assert lines[1]["kl"] > 0  # the first update moved the policy away from the base
    tuned = ModelPolicy.from_checkpoint(out)
    assert tuned.cfg.rl.steps == 2 and "2 updates" in capsys.readouterr().out
    assert cli.main(["finetune-rl", str(cfg), "--out", str(out), "--set", "rl.opponent=human"]) == 2


def test_distinct_openings_counts_lines():
    mk = lambda *ucis: Rollout([], chess.WHITE, [chess.Move.from_uci(u) for u in ucis], [], [], 0.0, "*")
    assert distinct_openings([mk("e2e4", "e7e5"), mk("e2e4", "e7e5"), mk("d2d4", "d7d5")], 2) == 2
    assert distinct_openings([mk("e2e4", "e7e5"), mk("e2e4", "c7c5")], 1) == 1
