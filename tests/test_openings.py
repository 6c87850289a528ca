"""Opening variety: line statistics, the played distribution, repeated prompts, the evaluator."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import chess
import pytest
import torch

from chessdt.evals.subject import Subject, model_subjects
from chessdt.evals.heldout import HeldOutGame
from chessdt.evals.openings import (OpeningsResult, evaluate_openings, line_stats,
                                    repeated_prompt)
from chessdt.play.players import RandomPlayer
from chessdt.play.policy import MoveStats, Sampling
from chessdt.tokenizer import NUM_MOVES
from conftest import small_cfg
from tiny_policy import tiny_policy


pytestmark = pytest.mark.usefixtures("one_thread")


def test_line_stats_by_hand() -> None:
    lines = [("e2e4", "e7e5"), ("e2e4", "e7e5"), ("e2e4", "c7c5"), ("d2d4", "d7d5"), ("d2d4",)]
    s = line_stats(lines, 2, reference=[("e2e4", "e7e5")])
    assert s.games == 4 and s.distinct == 3 and s.top_share == 0.5 and s.top_line == "1. e4 e5"
    assert s.entropy == pytest.approx(1.5)
    # p = (1/2, 1/4, 1/4) vs q = (1, 0, 0)
    assert s.js_to_data == pytest.approx(0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * 1) + 0.5 * math.log2(1 / 0.75))
    assert line_stats(lines, 1).entropy == pytest.approx(-(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4)))


def test_sampling_played_matches_choose() -> None:
    policy = tiny_policy(context=256)
    board = chess.Board()
    logits = policy.logits_full(board, policy.prompt(1500, 1500))[None] * 30  # sharpen: some legal mass
    legal = torch.zeros(1, NUM_MOVES, dtype=torch.bool)
    legal[0, [policy.vocab.encode_move(m) for m in board.legal_moves]] = True
    for sampling in (Sampling(), Sampling(temperature=0.7, top_p=0.9), Sampling(mask_illegal=True),
                     Sampling(temperature=0.0)):
        probs = sampling.played(logits, legal)[0]
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-5) and probs[~legal[0]].sum() == 0
        gen = torch.Generator().manual_seed(1)
        n = 3000
        counts = Counter(policy.choose(logits.expand(n, -1), [board] * n, sampling, gen, MoveStats()))
        for move, k in counts.items():
            assert k / n == pytest.approx(probs[policy.vocab.encode_move(move)].item(), abs=0.04)


def test_repeated_prompt_and_openings_eval(tmp_path: Path, games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    rep = repeated_prompt(Subject.model(policy, 1500, Sampling(temperature=0.0)), ("e2e4",), 25)
    assert rep.samples == 25 and rep.distinct == 1 and rep.top_share == 1.0 and rep.line == "1. e4"
    rep = repeated_prompt(Subject.player("random", lambda s: RandomPlayer(s)), (), 40)
    assert rep.distinct > 5
    # held-out games with mean ratings inside the 1600 band, so the data rows exist
    rated = [HeldOutGame(moves=g.moves, white=1600, black=1650) for g in games]
    cfg = small_cfg(ratings=(1600, 2400))
    res = evaluate_openings(model_subjects(policy, cfg), rated, cfg, tmp_path)
    sources = [(r.source, r.label) for r in res.rows]
    assert sources == [("self-play", "model@1600"), ("vs random", "model@1600"), ("data", "data 1500-1699"),
                       ("self-play", "model@2400"), ("vs random", "model@2400")]
    for r in res.rows:
        assert [s.k for s in r.lines] == [2, 4, 8, 12]
        assert r.games == (6 if r.source in ("self-play", "data") else 4)
        for s in r.lines:
            assert 0 <= s.entropy <= math.log2(r.games) + 1e-9 and 1 <= s.distinct <= r.games
            if r.source != "data" and r.rating == 1600:
                assert 0 <= s.js_to_data <= 1  # type: ignore[operator]
    assert res.rows[0].policy_entropy is not None and res.rows[0].policy_entropy >= 0
    assert len(res.rows[0].repeat) == 3 and res.rows[1].repeat == ()  # the repeat test once per subject
    assert any("no held-out human games" in n for n in res.notes)
    assert OpeningsResult.load(tmp_path / "openings.json") == res
