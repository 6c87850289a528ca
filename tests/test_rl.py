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
from chessdt.rules import Opponent
from chessdt.play.opponents import seat_for
from chessdt.play.policy import ModelPolicy, Sampling
from chessdt.rl import Rollout, distinct_openings, opponent_seat, play_rollouts, rl_loss, rollout_model
from chessdt.tokenizer import Vocab

SMALL = ["model.n_layer=2", "model.n_head=2", "model.d_model=32", "model.context=96"]


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory) -> Path:
    cfg = load_config(None, SMALL)
    torch.manual_seed(0)
    model = GPT(cfg.model, Vocab().size)
    return save_checkpoint(tmp_path_factory.mktemp("rl") / "base", model, cfg, Vocab(), step=0, tokens_seen=0)


@pytest.mark.parametrize("opponent", ["random", "base", "self"])
def test_rollouts_play_legal_games_with_model_plies_recorded(base_ckpt, opponent):
    policy = ModelPolicy.from_checkpoint(base_ckpt)
    cfg = dataclasses.replace(load_config(None, SMALL).rl, max_plies=30, games_per_step=4, rating=1500,
                              opponent=opponent)
    model = rollout_model(policy, cfg)
    rollouts = play_rollouts(model, opponent_seat(cfg, policy), cfg, seed=1)
    # half the games with each colour; a self-play game gives one rollout per side
    assert len(rollouts) == (8 if opponent == "self" else 4)
    assert sorted(r.color for r in rollouts) == sorted([chess.WHITE, chess.BLACK] * (len(rollouts) // 2))
    for r in rollouts:
        assert r.prompt == policy.player_prompt(r.color, 1500, None)
        board = chess.Board()
        for k, m in enumerate(r.moves):
            assert board.is_legal(m)
            if k in r.model_plies:
                assert board.turn == r.color
                assert bool(r.legal[r.model_plies.index(k)][policy.vocab.encode_move(m)])
            board.push(m)
        assert r.model_plies == [k for k in range(len(r.moves)) if (k % 2 == 0) == (r.color == chess.WHITE)]
        assert len(r.legal) == len(r.model_plies) and len(r.moves) <= 30
        outcome = board.outcome(claim_draw=True)
        if outcome is None or outcome.winner is None:
            assert r.reward == 0.0
        else:
            assert r.reward == (1.0 if outcome.winner == r.color else -1.0)
    if opponent == "self":  # the two sides of one game: the same moves, opposite rewards
        for white, black in zip(rollouts[0::2], rollouts[1::2]):
            assert white.moves == black.moves and white.reward == -black.reward


def test_kl_is_zero_at_the_base_and_reinforce_moves_logp_with_the_advantage(base_ckpt):
    policy = ModelPolicy.from_checkpoint(base_ckpt)
    model = GPT(policy.cfg.model, policy.vocab.size)
    model.load_state_dict(policy.model.state_dict())
    cfg = dataclasses.replace(load_config(None, SMALL).rl, max_plies=16)
    cfg = dataclasses.replace(cfg, games_per_step=4, rating=1500)
    won, lost = play_rollouts(rollout_model(policy, cfg), seat_for(Opponent.parse("random")), cfg, seed=3)[:2]
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


def test_the_loss_scores_moves_at_the_rollouts_temperature(base_ckpt):
    policy = ModelPolicy.from_checkpoint(base_ckpt)
    cfg = dataclasses.replace(load_config(None, SMALL).rl, max_plies=10, games_per_step=2, temperature=0.5)
    rollouts = play_rollouts(rollout_model(policy, cfg), None, cfg, seed=1)
    _, at_half = rl_loss(policy.model, policy.model, rollouts, policy, beta=0.0,
                         sampling=rollout_model(policy, cfg).sampling)
    _, at_one = rl_loss(policy.model, policy.model, rollouts, policy, beta=0.0)
    assert at_half.logp != pytest.approx(at_one.logp)  # sharper scoring: a different log-probability
    assert at_half.entropy < at_one.entropy  # and a sharper distribution
    with pytest.raises(ValueError, match="legal moves only"):  # rollouts are drawn among legal moves
        rl_loss(policy.model, policy.model, rollouts, policy, beta=0.0, sampling=Sampling(temperature=0.5))


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


def test_league_promotes_snapshots_and_the_log_measures_against_the_base(base_ckpt, tmp_path):
    cfg = tmp_path / "rl.toml"
    cfg.write_text(f'name = "rl-league"\n[rl]\nbase = "{base_ckpt}"\nsteps = 3\ngames_per_step = 4\n'
                   'opponent = "base"\nleague = true\npromote_score = 0.01\npromote_window = 2\nmax_plies = 16\n'
                   'lr = 1e-3\neval_every = 2\neval_games = 4\nvariety_games = 6\nopening_plies = 4\n')
    out = tmp_path / "run"
    assert cli.main(["finetune-rl", str(cfg), "--out", str(out), "-q"]) == 0
    lines = [json.loads(x) for x in (out / "rl.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2, 3]
    # step 0: the base against itself; then every eval_every updates and at the end
    assert [("eval" in x) for x in lines] == [True, False, True, True]
    for x in (x for x in lines if "eval" in x):
        e = x["eval"]
        assert e["games"] == 4 and 0 <= e["score"] <= 1 and 1 <= e["lines4_distinct"] <= 6
    # promoted after two updates scoring >= 0.01 (any result but two lost updates), never before
    assert [x["opponent"] for x in lines[1:]][0] == "base"
    assert "promoted" not in lines[1]
    # (games cut at 16 plies are draws, so each update scores about 0.5); the window then starts afresh
    assert [x.get("promoted") for x in lines[1:]] == [None, "snapshot@2", None]
    assert [x["opponent"] for x in lines[1:]] == ["base", "base", "snapshot@2"]
