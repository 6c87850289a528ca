"""The frontier experiment: KL, matched-strength comparison, the tables, and a whole run at toy sizes."""

import json

import chess
import numpy as np
import pytest

import fake_uci
from chessdt import cli
from chessdt.evals.variety import Estimate, LineVariety, PositionVariety
from chessdt.experiment import Point, format_frontier, kl_bits, matched, plot_frontier, versus_data
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
    result["rl_curves"] = {"rater beta=0.02": [{"step": 20, "seeds": 3, "kl": [0.05, 0.01, 0.09], "proxy": [0.7, 0.6, 0.8],
                                                "true": [0.45, 0.4, 0.5], "elo": [-35.0, -70.0, 0.0],
                                                "played_elo": [-20.0, -60.0, 20.0], "train_reward": [0.66, 0.6, 0.72],
                                                "lines_entropy": [5.5, 5.0, 6.0], "minutes": [10.0, 9.0, 11.0]}]}
    result["matched"]["line_entropy"] = [{"a": "rl", "b": "temperature", "elo": 45.0, "a_value": 2.7, "b_value": 3.0,
                                          "difference": 0.3, "lo": 0.1, "hi": 0.5, "defined": 0.98}]
    md = format_frontier(result)
    assert "| rl | rl b0.02 s10 | 120 [100, 140] | 100 | 1.50 [1.40, 1.60] | 10 [8, 12] |" in md
    assert "| rl | temperature | 45 | 2.70 | 3.00 | 0.30 | 0.10 .. 0.50 | 0.98 |" in md
    assert "Note: x" in md and "Run time: 1.0 min" in md
    assert ("| 20 | 0.050 [0.010, 0.090] | 0.70 [0.60, 0.80] | 0.45 [0.40, 0.50] | -35 [-70, 0] | -20 [-60, 20] | "
            "0.66 [0.60, 0.72] | 5.50 [5.00, 6.00] | 10.0 |") in md
    assert "| 0.100 | 0.20 / 0.30 |" in md
    png = plot_frontier(result, tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


def test_each_setting_is_read_against_the_data_at_its_own_strength():
    # rungs at -100 (5 bits) and +100 (3 bits): at +50 the data holds 3.5 bits
    points = [_point("reference", "ref", 0, 4.0), _point("data", "r1", -100, 5.0), _point("data", "r2", 100, 3.0),
              _point("temperature", "T", 50, 2.5), _point("rl", "far", 300, 1.0)]
    n = 30
    draws = {p.label: {"elo": np.full(n, p.elo.value), "position_entropy": np.full(n, _entropy(p))} for p in points}
    draws["T"]["position_entropy"] = 2.5 + np.linspace(-0.2, 0.2, n)
    rows = versus_data(points, draws, "position_entropy", 4)
    assert [r["setting"] for r in rows] == ["ref", "T"]  # 'far' lies beyond the rungs, the rungs are the data
    ref, t = rows
    assert ref["data"] == pytest.approx(4.0) and ref["difference"] == pytest.approx(0.0)
    assert t["data"] == pytest.approx(3.5) and t["difference"] == pytest.approx(-1.0)
    assert t["kept"] == pytest.approx(2.5 / 3.5) and t["lo"] < -1.0 < t["hi"] and t["defined"] == 1.0
    assert versus_data(points[:2] + points[3:], draws, "position_entropy", 4) == []  # one rung: no curve
    # on the centipawn-loss axis (all _point settings lose 30 cp) every setting sits at the rungs' own strength
    for p in points:
        draws[p.label]["cp_loss"] = np.full(n, 30.0)
    by_cp = versus_data(points, draws, "position_entropy", 4, axis="cp_loss")
    assert [r["setting"] for r in by_cp] == ["ref", "T", "far"] and all(r["at"] == 30.0 for r in by_cp)


@pytest.mark.slow
def test_experiment_runs_every_arm_end_to_end(tiny_value_checkpoint, tmp_path):
    """Every arm at toy sizes, with a fake UCI engine standing in for Stockfish (and the referee): RL
    against the result and against the rater, two seeds each, the data's rung; a rerun resumes."""
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
base = "{tiny_value_checkpoint}"
reference = "rating=1500"
ratings = [2000]
guidance = [2.0]
temperatures = [0.3]
filtered_min_elo = 1600
rl_rewards = ["engine", "rater"]
rl_betas = [0.1]
rl_seeds = [0, 1]
rl_steps = [1, 2]
rungs = ["1500:softmax=50/2"]
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
adjudicate = true
eval_every = 2
eval_games = 2
variety_games = 2
[eval]
games = "{tmp_path / 'pgn' / 'g.pgn'}"
engine = "{engine}"
adjudicate = true
referee_cp = 250
referee_plies = 2
referee_from_ply = 4
referee_nodes = 1
referee_playout = 0.5
""")
    assert cli.main(["experiment", str(cfg), "-q"]) == 0
    run = tmp_path / "run"
    result = json.loads((run / "frontier.json").read_text())
    arms = [p["arm"] for p in result["points"]]
    assert arms == ["reference", "conditioning", "guidance", "temperature", *["rl-engine"] * 4, *["rl-rater"] * 4,
                    "filtered", "quantilizer", "data"]
    for p in result["points"]:
        e = p["elo"]
        assert e["lo"] <= e["value"] <= e["hi"]
        assert p["games"] == (0 if p["arm"] == "reference" else 4)
        assert [v["k"] for v in p["lines"]] == [2, 4] and all(v["games"] == 6 for v in p["lines"])
        assert 1 <= p["lines"][0]["distinct"]["value"] <= 6
        pv = p["positions"]
        assert pv["positions"] >= 1 and 0 <= pv["good_mass"]["value"] <= 1 and pv["entropy"]["value"] >= 0
        assert p["kl_from_reference"] >= 0
        if p["arm"] != "reference":  # the rater and the referee judged every setting's games
            assert 0 < p["rater"]["value"] < 1 and 0 <= p["referee"]["value"] <= 1
            assert p["exploit"]["value"] == pytest.approx(p["rater"]["value"] - p["referee"]["value"], abs=1e-9)
    assert result["points"][0]["kl_from_reference"] == 0.0
    assert set(result["matched"]) == {"line_entropy", "position_entropy", "good_entropy", "good_mass"}
    # the seeds of each RL setting merge into one point whose interval is across seeds
    merged = [p for p in result["curve_points"] if p["arm"].startswith("rl-")]
    assert [(p["arm"], p["setting"]) for p in merged] == [
        (a, f"beta=0.1 step={s} (2 seeds)") for a in ("rl-engine", "rl-rater") for s in (1, 2)]
    seeds = [p["elo"]["value"] for p in result["points"] if p["arm"] == "rl-rater" and p["group"] == "beta=0.1 step=2"]
    assert merged[3]["elo"]["value"] == pytest.approx(sum(seeds) / 2) and merged[3]["games"] == 8
    # the over-optimisation curve: each configuration's log at updates 0 and 2, across both seeds
    curves = result["rl_curves"]
    assert set(curves) == {"engine beta=0.1", "rater beta=0.1"}
    for name, rows in curves.items():
        assert [r["step"] for r in rows] == [0, 2] and all(r["seeds"] == 2 for r in rows)
        assert rows[0]["kl"][0] == 0.0 and rows[1]["kl"][0] >= 0
        assert 0 <= rows[1]["true"][0] <= 1 and (0 < rows[1]["proxy"][0] < 1) == (name.startswith("rater"))
    assert result["horizon"] == 12 and result["blind_spots"]
    assert all(s["label"].startswith("rl-") and chess.Board(s["fen"]).is_valid() for s in result["blind_spots"])
    md = (run / "frontier.md").read_text()
    assert "## The rater against the truth" in md and "RL rater beta=0.1 along the way" in md
    assert (run / "frontier.png").is_file() and (run / "overoptimisation.png").is_file()
    assert all((run / f"rl-{r}-beta0.1-seed{s}" / "rl.done").is_file() for r in ("engine", "rater") for s in (0, 1))
    games_logged = (run / "eval" / "matches.jsonl").read_text().count("\n")
    # a second run reuses every trained arm, the scored positions and the logged games
    assert cli.main(["experiment", str(cfg), "-q"]) == 0
    assert (run / "eval" / "matches.jsonl").read_text().count("\n") == games_logged
    assert json.loads((run / "frontier.json").read_text())["points"] == result["points"]
