"""The learned rater (a frozen value head) and RL against it; RL rollouts watched by a referee."""

from __future__ import annotations

import json

import chess
import numpy as np
import pytest
import torch

import fake_uci
from chessdt import cli
from chessdt.errors import UserError
from chessdt.play.policy import ModelPolicy
from chessdt.rater import Rater
from chessdt.rl import play_rollouts, rollout_model
from chessdt.config import load_config
from chessdt.stockfish.referee import RefereeRule
from chessdt.tokenizer import position_inputs
from conftest import random_game
from test_referee import ScriptedReferee, white_wins_from


def _by_hand(policy: ModelPolicy, moves: list[chess.Move], color: chess.Color) -> float:
    """The value head's expected score for `color` after `moves`, from one plain forward pass."""
    board = chess.Board()
    for m in moves:
        board.push(m)
    prompt = policy.player_prompt(color, None, None)
    tokens, boards, plies = (torch.as_tensor(a) for a in position_inputs(prompt, board, policy.context, policy.vocab))
    with torch.no_grad():
        _, value = policy.model(tokens[None], boards[None], plies[None], with_value=True)
    wdl = torch.softmax(value[0, -1].float(), -1)
    s = float(wdl[0] + 0.5 * wdl[1])
    return s if board.turn == color else 1 - s


def test_rater_reads_the_value_head_at_the_horizon_from_the_rated_side(tiny_value_checkpoint):
    policy = ModelPolicy.from_checkpoint(tiny_value_checkpoint)
    rater = Rater(policy)
    games = [random_game(seed, 30) for seed in range(3)]
    moves = [list(g.mainline_moves()) for g in games]
    white = rater.scores([(m, chess.WHITE) for m in moves])
    black = rater.scores([(m, chess.BLACK) for m in moves])
    assert np.allclose(white + black, 1.0)  # one forecast, seen from either side
    assert all(0.0 < x < 1.0 for x in white)
    for m, w in zip(moves, white):
        assert w == pytest.approx(_by_hand(policy, m, chess.WHITE), abs=1e-5)
    # a horizon judges the position after that many plies, batched or not
    cut = rater.scores([(m, chess.WHITE) for m in moves], horizon=11)
    for m, c in zip(moves, cut):
        assert c == pytest.approx(_by_hand(policy, m[:11], chess.WHITE), abs=1e-5)
        assert rater.scores([(m[:11], chess.WHITE)])[0] == pytest.approx(c, abs=1e-5)
    assert not np.allclose(cut, white)  # the trained head is not flat


def test_a_model_without_a_value_head_cannot_rate(tiny_checkpoint):
    with pytest.raises(UserError, match="no value head"):
        Rater(ModelPolicy.from_checkpoint(tiny_checkpoint))


def test_rollout_reward_is_the_raters_opinion_never_the_result(tiny_value_checkpoint):
    policy = ModelPolicy.from_checkpoint(tiny_value_checkpoint)
    rater = Rater(policy)
    cfg = load_config(None, ["rl.games_per_step=4", "rl.max_plies=12", "rl.reward=rater"]).rl
    rollouts = play_rollouts(rollout_model(policy, cfg), None, cfg, seed=3, rater=rater)
    assert len(rollouts) == 8  # self-play: both sides of four games
    expected = rater.scores([(r.moves, r.color) for r in rollouts], 12)
    assert [r.reward for r in rollouts] == pytest.approx([2 * x - 1 for x in expected])
    assert all(r.result == "1/2-1/2" for r in rollouts)  # cut at 12 plies: the result would have been a draw
    assert len({round(r.reward, 6) for r in rollouts}) > 1


def test_a_referee_ends_rollouts_at_its_verdict_and_the_verdict_is_the_reward(tiny_value_checkpoint):
    policy = ModelPolicy.from_checkpoint(tiny_value_checkpoint)
    cfg = load_config(None, ["rl.games_per_step=4", "rl.max_plies=40"]).rl
    referee = ScriptedReferee(RefereeRule(cp=500, plies=3, from_ply=6, playout=0.0), white_wins_from(4))
    rollouts = play_rollouts(rollout_model(policy, cfg), None, cfg, seed=1, referee=referee)
    # White's score is +9 from ply 4: three plies later (ply 6) the game is adjudicated to White
    assert {len(r.moves) for r in rollouts} == {6}
    assert {(r.color, r.reward, r.result) for r in rollouts} == {(chess.WHITE, 1.0, "1-0"), (chess.BLACK, -1.0, "1-0")}


def test_finetune_rl_against_the_rater_logs_proxy_and_true_strength(tiny_value_checkpoint, tmp_path):
    cfg = tmp_path / "rl.toml"
    engine = fake_uci.script(tmp_path)
    cfg.write_text(f'name = "rl-rater"\n[rl]\nbase = "{tiny_value_checkpoint}"\nsteps = 2\ngames_per_step = 4\n'
                   'reward = "rater"\nadjudicate = true\nmax_plies = 12\neval_max_plies = 30\nlr = 1e-3\n'
                   f'eval_every = 2\neval_games = 4\nvariety_games = 4\nopening_plies = 2\nengine = "{engine}"\n'
                   '[eval]\nreferee_cp = 200\nreferee_plies = 2\nreferee_from_ply = 4\nreferee_nodes = 10\n')
    out = tmp_path / "run"
    assert cli.main(["finetune-rl", str(cfg), "--out", str(out), "-q"]) == 0
    lines = [json.loads(x) for x in (out / "rl.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]
    for x in lines[1:]:
        assert 0 <= x["score"] <= 1 and x["result_score"] == 0.5  # every rollout is cut at 12 plies: a draw
    for x in (lines[0], lines[2]):
        e = x["eval"]
        assert e["games"] == 4 and 0 < e["rater_score"] < 1 and e["rater_lo"] <= e["rater_score"] <= e["rater_hi"]
        assert {"played_elo", "played_score"} <= set(e)
    assert lines[0]["eval"]["rater_score"] == pytest.approx(0.5, abs=0.2)  # the base against itself
