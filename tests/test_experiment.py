"""The frontier experiment: KL, matched-strength comparison, the tables, and a whole run at toy sizes."""

import json

import chess
import numpy as np
import pytest

import fake_uci
from chessdt import cli
from chessdt.evals.variety import Estimate, LineVariety, PositionVariety
from chessdt.experiment import Point, format_frontier, kl_bits, matched, plot_frontier
from conftest import random_game

M = chess.Move.from_uci


def test_kl_bits():
    p = {M("e2e4"): 0.5, M("d2d4"): 0.5}
    assert kl_bits(p, p) == 0.0
    assert kl_bits({M("e2e4"): 1.0}, p) == pytest.approx(1.0)
    assert 15 < kl_bits(p, {M("e2e4"): 1.0}) < 20  # a move the reference never plays: the 1e-12 floor, not inf


def _point(arm: str, label: str, elo: float, entropy: float) -> Point:
    e = Estimate(entropy, entropy - 0.1, entropy + 0.1)
    return Point(arm, label, label, Estimate(elo, elo - 20, elo + 20), 100, 0.5,
                 (LineVariety(4, 100, e, Estimate(10, 8, 12), 0.2),),
                 PositionVariety(10, 50.0, e, Estimate(0.5, 0.4, 0.6), e, 2.0, Estimate(30, 20, 40)), 0.1, 0.2, 0.3)


def test_matched_strength_interpolates_both_curves_at_the_overlap():
    # reference at 0 with 4 bits; arm A falls to 2 bits at +100, arm B to 3 bits at +200
    points = [_point("reference", "ref", 0, 4.0), _point("a", "a1", 100, 2.0), _point("b", "b1", 200, 3.0)]
    n = 50
    rng = np.random.default_rng(0)
    draws = {p.label: {"elo": p.elo.value + rng.normal(0, 5, n), "line_entropy": np.full(n, _entropy(p)),
                       "position_entropy": np.full(n, _entropy(p)), "good_mass": np.full(n, 0.5),
                       "good_entropy": np.full(n, _entropy(p))} for p in points}
    draws["ref"]["elo"] = np.zeros(n)
    (row,) = matched(points, draws, "line_entropy", 4)
    # overlap 0..100, middle 50: A at 3.0 bits, B at 3.75 bits
    assert (row["a"], row["b"], row["elo"]) == ("a", "b", 50.0)
    assert row["a_value"] == pytest.approx(3.0) and row["b_value"] == pytest.approx(3.75)
    assert row["difference"] == pytest.approx(0.75) and row["lo"] < 0.75 < row["hi"] and row["defined"] == 1.0
    # curves that meet only at the reference are not compared
    below = [_point("reference", "ref", 0, 4.0), _point("a", "a1", 100, 2.0), _point("b", "b1", -100, 3.0)]
    assert matched(below, draws | {"b1": draws["b1"]}, "line_entropy", 4) == []


def test_a_single_point_arm_is_compared_at_its_own_elo():
    points = [_point("reference", "ref", 0, 4.0), _point("a", "a1", 100, 2.0), _point("filtered", "f", 50, 1.0)]
    n = 40
    draws = {p.label: {"elo": np.full(n, p.elo.value), "line_entropy": np.full(n, _entropy(p))} for p in points}
    draws["f"]["elo"] = 50 + np.linspace(-10, 10, n)  # a's curve at 40..60: 3.2 .. 2.8 bits
    (row,) = matched(points, draws, "line_entropy", 4)
    assert (row["a"], row["b"], row["elo"]) == ("a", "filtered", 50.0)
    assert row["difference"] == pytest.approx(1.0 - 3.0) and row["defined"] == 1.0
    assert row["lo"] < -2.0 < row["hi"] and row["hi"] - row["lo"] > 0.1  # the point's Elo spread widens it
    # a point beyond the other curve's range is not compared
    far = [points[0], points[1], _point("filtered", "far", 300, 1.0)]
    assert matched(far, draws | {"far": draws["f"]}, "line_entropy", 4) == []


def _entropy(p: Point) -> float:
    return p.lines[0].entropy.value


def test_frontier_table_and_plot(tmp_path):
    import dataclasses

    points = [_point("reference", "ref", 0, 4.0), _point("rl", "rl b0.02 s10", 120, 1.5),
              _point("temperature", "T0.3", 90, 2.0)]
    result = {"points": [dataclasses.asdict(p) for p in points],
              "matched": {m: [] for m in ("line_entropy", "position_entropy", "good_entropy", "good_mass")},
              "reference": "rating=1600", "match_games": 100, "variety_games": 100, "positions": 10, "good_cp": 50.0,
              "frontier_k": 4, "notes": ["x"], "seconds": 60.0}
    result["rl_runs"] = {"0.02": [{"step": 20, "games": 64, "score": 0.6, "elo": 70.0, "elo_lo": 20.0, "elo_hi": 120.0,
                                   "lines8_entropy": 5.5, "lines8_distinct": 90, "lines8_top_share": 0.1, "kl": 0.05,
                                   "entropy": 2.3, "opponent": "snapshot@12", "time_s": 600.0}]}
    result["matched"]["line_entropy"] = [{"a": "rl", "b": "temperature", "elo": 45.0, "a_value": 2.7, "b_value": 3.0,
                                          "difference": 0.3, "lo": 0.1, "hi": 0.5, "defined": 0.98}]
    md = format_frontier(result)
    assert "| rl | rl b0.02 s10 | 120 [100, 140] | 100 | 1.50 [1.40, 1.60] | 10 [8, 12] |" in md
    assert "| rl | temperature | 45 | 2.70 | 3.00 | 0.30 | 0.10 .. 0.50 | 0.98 |" in md
    assert "Note: x" in md and "Run time: 1.0 min" in md
    assert "| 20 | 70 [20, 120] | 64 | 5.50 | 90 | 0.050 | 2.30 | snapshot@12 | 10.0 |" in md
    assert "| 0.100 | 0.20 / 0.30 |" in md
    png = plot_frontier(result, tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_experiment_runs_every_arm_end_to_end(tiny_checkpoint, tmp_path):
    """Every arm at toy sizes, with a fake UCI engine standing in for Stockfish; a rerun resumes."""
    engine = fake_uci.script(tmp_path)
    (tmp_path / "pgn").mkdir()
    (tmp_path / "pgn" / "g.pgn").write_text("\n\n".join(
        str(random_game(500 + i, max_plies=40, headers={"WhiteElo": str(1500 + 100 * (i % 3)),
                                                        "BlackElo": str(1500 + 100 * (i % 3))}))
        for i in range(40)))
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f"""
name = "exp"
run_dir = "{tmp_path / 'run'}"
[data]
inputs = ["{tmp_path / 'pgn'}"]
val_fraction = 0.2
[model]
n_layer = 1
n_head = 2
d_model = 32
context = 64
[train]
device = "cpu"
max_steps = 2
warmup_steps = 1
batch_tokens = 512
eval_every = 2
save_every = 2
eval_tokens = 512
[experiment]
base = "{tiny_checkpoint}"
reference = "rating=1500"
ratings = [2000]
guidance = [2.0]
temperatures = [0.3]
filtered_min_elo = 1600
rl_betas = [0.1]
rl_steps = [1, 2]
quantilizer_k = 3
quantilizer_q = [0.5]
quantilizer_nodes = 1
match_games = 4
max_plies = 30
variety_games = 6
variety_plies = [2, 4]
positions = 8
position_nodes = 1
frontier_plies = 2
bootstrap = 20
[rl]
steps = 2
games_per_step = 2
opponent = "base"
max_plies = 12
save_every = 1
[eval]
games = "{tmp_path / 'pgn' / 'g.pgn'}"
engine = "{engine}"
""")
    assert cli.main(["experiment", str(cfg), "-q"]) == 0
    run = tmp_path / "run"
    result = json.loads((run / "frontier.json").read_text())
    arms = [p["arm"] for p in result["points"]]
    assert arms == ["reference", "conditioning", "guidance", "temperature", "rl", "rl", "filtered", "quantilizer"]
    for p in result["points"]:
        e = p["elo"]
        assert e["lo"] <= e["value"] <= e["hi"]
        assert p["games"] == (0 if p["arm"] == "reference" else 4)
        assert [v["k"] for v in p["lines"]] == [2, 4] and all(v["games"] == 6 for v in p["lines"])
        assert 1 <= p["lines"][0]["distinct"]["value"] <= 6
        pv = p["positions"]
        assert pv["positions"] >= 1 and 0 <= pv["good_mass"]["value"] <= 1 and pv["entropy"]["value"] >= 0
        assert p["kl_from_reference"] >= 0
    assert result["points"][0]["kl_from_reference"] == 0.0
    assert set(result["matched"]) == {"line_entropy", "position_entropy", "good_entropy", "good_mass"}
    assert (run / "frontier.png").is_file() and (run / "rl-beta0.1" / "rl.done").is_file()
    games_logged = (run / "eval" / "matches.jsonl").read_text().count("\n")
    # a second run reuses every trained arm, the scored positions and the logged games
    assert cli.main(["experiment", str(cfg), "-q"]) == 0
    assert (run / "eval" / "matches.jsonl").read_text().count("\n") == games_logged
    assert json.loads((run / "frontier.json").read_text())["points"] == result["points"]
