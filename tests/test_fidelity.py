"""Fidelity: the prompted model against each softmax rung's exact policy on held-out ladder games."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import chess
import pytest

import fake_uci
from chessdt import cli
from chessdt.config import load_config
from chessdt.errors import UserError
from chessdt.evals.fidelity import FidelityResult, evaluate_fidelity, rungs_of
from chessdt.evals.heldout import load_games, scored_moves
from chessdt.pipeline import has_softmax_rungs
from chessdt.play.policy import ModelPolicy
from chessdt.stockfish.generate import LadderConfig, generate, parse_rungs
from conftest import small_cfg

RUNGS = "1200:softmax=300,2000:softmax=100,gate=200"


@pytest.fixture(scope="module")
def ladder_pgn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("softmax") / "ladder.pgn"
    cfg = LadderConfig(rungs=parse_rungs(RUNGS), games=6, max_plies=24, adjudicate_moves=0, nodes=3)
    generate(cfg, path, fake_uci.command(), workers=1, progress=False)
    return path


def test_rungs_from_the_ladder_file_or_the_config(ladder_pgn: Path) -> None:
    from_file = rungs_of(small_cfg(), [str(ladder_pgn)])
    assert [str(r) for r in from_file] == ["1200:softmax=300/3", "2000:softmax=100,gate=200/3"]
    assert rungs_of(small_cfg(fidelity_rungs=("1500:softmax=40/10",)), []) == parse_rungs("1500:softmax=40/10")
    with pytest.raises(UserError, match="softmax rungs"):
        rungs_of(small_cfg(), ["/nonexistent.pgn"])
    with pytest.raises(UserError, match="softmax rungs"):  # an eps ladder has no known policy
        rungs_of(small_cfg(fidelity_rungs=("1000:eps=0.5",)), [])


def test_fidelity_scores_every_rung_position(tiny_checkpoint: Path, ladder_pgn: Path, tmp_path: Path,
                                             one_thread: None) -> None:
    policy = ModelPolicy.from_checkpoint(tiny_checkpoint)
    games = load_games(ladder_pgn, 10)
    rungs = rungs_of(small_cfg(), [str(ladder_pgn)])
    cfg = small_cfg(engine=fake_uci.script(str(tmp_path)), fidelity_plies=15, value_bootstrap=200)
    result = evaluate_fidelity(policy, games, rungs, cfg, tmp_path / "fidelity.json")
    expected = {1200: 0, 2000: 0}
    for g in games:
        for j in range(min(scored_moves(policy, g), 15)):
            expected[g.rating(chess.WHITE if j % 2 == 0 else chess.BLACK) or 0] += 1
    assert {r.rating: r.positions for r in result.rows} == expected
    for r in result.rows:
        assert r.kl >= 0 and r.kl_lo <= r.kl <= r.kl_hi
        assert 0 <= r.tv <= 1 and 0 <= r.agree <= 1 and r.ratio_lo <= r.ratio <= r.ratio_hi
        assert r.ratio == pytest.approx(r.h_model / r.h_rung)
        assert r.games == 6
    # the gated, colder rung is more certain than the warm one (the fake engine scores by material)
    by = {r.rating: r for r in result.rows}
    assert by[2000].h_rung < by[1200].h_rung
    assert FidelityResult.load(tmp_path / "fidelity.json") == result
    assert "| 2000 (2000:softmax=100,gate=200/3)" in result.format()


def test_cli_fidelity_and_its_one_line_errors(tiny_checkpoint: Path, ladder_pgn: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    engine = fake_uci.script(str(tmp_path))
    rc = cli.main(["eval", "fidelity", str(tiny_checkpoint), "--games", str(ladder_pgn), "--engine", engine,
                   "--out", str(tmp_path / "ev"), "--set", f"eval.fidelity_rungs={RUNGS.replace('/3', '')}",
                   "--set", "eval.fidelity_plies=6", "--set", "eval.value_bootstrap=50"])
    out = capsys.readouterr().out
    assert rc == 0 and "KL" in out
    data = json.loads((tmp_path / "ev" / "fidelity.json").read_text())
    assert [r["rating"] for r in data["rows"]] == [1200, 2000]
    # the tiny model was trained on random games, not a ladder: fidelity says what it needs
    rc = cli.main(["eval", "fidelity", str(tiny_checkpoint), "--games", str(ladder_pgn), "--engine", engine,
                   "--out", str(tmp_path / "ev2")])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "softmax" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ev2" / "fidelity.json").exists()


def test_pipeline_runs_fidelity_only_on_a_softmax_ladder(ladder_pgn: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "experiments" / "tiny.toml", [])
    assert not has_softmax_rungs(cfg)  # tiny trains on the UCI_Elo ladder
    on_ladder = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, inputs=(str(ladder_pgn),)))
    assert has_softmax_rungs(on_ladder)
    off = dataclasses.replace(on_ladder, eval=dataclasses.replace(on_ladder.eval, fidelity_games=0))
    assert not has_softmax_rungs(off)
