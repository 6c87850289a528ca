"""Held-out games: read from PGN or prepared data, banded, scored teacher-forced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chessdt.config import DataConfig, EvalConfig
from chessdt.evals.heldout import (HeldOutGame, band_label, band_of, default_source, load_games, scored_moves,
                                   teacher_forced_logits)
from chessdt.data.prepare import prepare
from chessdt.tokenizer import NUM_MOVES
from conftest import random_game
from tiny_policy import tiny_policy


pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_games_from_pgn_and_prepared(tmp_path: Path, pgn_file: Path, games: list[HeldOutGame]) -> None:
    assert len(games) == 40
    first = random_game(100, max_plies=90)
    assert games[0].moves == tuple(first.mainline_moves())
    assert games[0].white == int(first.headers["WhiteElo"]) and games[0].result == first.headers["Result"]
    prepare([str(pgn_file)], tmp_path / "data", DataConfig(val_fraction=0.5, min_plies=2), workers=1, progress=False)
    val = load_games(tmp_path / "data", 1000)
    assert 5 <= len(val) < 40
    by_moves = {g.moves: g for g in games}
    for g in val:
        original = by_moves[g.moves]  # every val game is one of the PGN games, moves intact
        assert original.white is not None and g.white == original.white // 100 * 100 + 50  # bucket middle
    assert band_of(1550, 1600, 200) and not band_of(1700, 1600, 200) and band_label(1600, 200) == "1500-1699"


def test_default_source_prefers_eval_games(tmp_path: Path) -> None:
    from chessdt.config import Config

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text("{}")
    cfg = Config(data=DataConfig(prepared=str(tmp_path / "data")))
    ckpt = tmp_path / "run" / "checkpoints" / "best"
    assert default_source(cfg, ckpt) == tmp_path / "data"
    assert default_source(Config(eval=EvalConfig(games="x.pgn")), ckpt) == Path("x.pgn")
    assert default_source(Config(), ckpt) is None


def test_teacher_forcing_matches_full_recompute(games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=32)
    prompts = [policy.prompt(g.white, g.black, g.result) for g in games[:3]]
    for i, logits in teacher_forced_logits(policy, games[:3], prompts, batch_size=2):
        g = games[i]
        assert logits.shape == (scored_moves(policy, g), NUM_MOVES) == (min(len(g.moves), 30), NUM_MOVES)
        for j in (0, 1, len(logits) - 1):
            ref = policy.logits_full(g.board(j), prompts[i])
            assert torch.allclose(logits[j], ref, atol=1e-4)
