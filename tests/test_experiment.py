import json

import pytest

import fake_uci
from chessdt import cli
from chessdt.evals.heldout import HeldOutGame
from chessdt.experiment import format_frontier, kl_from_base, plot_frontier
from chessdt.players import ModelPolicy
from conftest import random_game


def _games(n: int) -> list[HeldOutGame]:
    out = []
    for i in range(n):
        g = random_game(100 + i, max_plies=20)
        out.append(HeldOutGame(tuple(g.mainline_moves()), 1500, 1600, g.headers["Result"]))
    return out


def test_kl_from_base_is_zero_for_itself_and_positive_otherwise(tiny_checkpoint):
    policy = ModelPolicy.from_checkpoint(tiny_checkpoint)
    games = _games(6)
    uncond = policy.prompt(None, None)
    assert kl_from_base(policy, uncond, 0.0, policy, uncond, games, 40) == pytest.approx(0.0, abs=1e-6)
    prompted = kl_from_base(policy, policy.prompt(2400, 2400), 0.0, policy, uncond, games, 40)
    guided = kl_from_base(policy, policy.prompt(2400, 2400), 4.0, policy, uncond, games, 40)
    assert prompted is not None and guided is not None
    # float noise in these KLs is < 1e-6 (the first assertion); measured here: 1.8e-5 and 4.7e-4
    assert prompted > 1e-6
    assert guided > 5 * prompted  # guidance pushes further from the unconditioned model


RESULT = {
    "points": [
        {"arm": "conditioning", "label": "cond@1200", "setting": "rating=1200", "elo": 900.0, "lo": 700.0,
         "hi": 1100.0, "games": 20, "line_entropy": 4.1, "distinct_lines": 18, "lines_games": 20,
         "top_share": 0.1, "policy_entropy": 2.5, "kl_from_base": 0.05},
        {"arm": "rl", "label": "rl beta=0.02", "setting": "beta=0.02", "elo": 1300.0, "lo": 1150.0,
         "hi": 1450.0, "games": 20, "line_entropy": 1.0, "distinct_lines": 3, "lines_games": 20,
         "top_share": 0.7, "policy_entropy": 0.4, "kl_from_base": 1.2},
        {"arm": "quantilizer", "label": "quantilizer q=0.5", "setting": "k=8, q=0.5", "elo": 1100.0,
         "lo": 900.0, "hi": 1300.0, "games": 20, "line_entropy": None, "distinct_lines": None,
         "lines_games": None, "top_share": None, "policy_entropy": None, "kl_from_base": None},
    ],
    "data": [{"rating": 1200, "line_entropy": 4.3, "distinct_lines": 19, "games": 20}],
    "opponents": [{"label": "random", "elo": 400.0}], "ladder_games": 60, "frontier_k": 8, "notes": ["x"],
}


def test_frontier_table_and_plot(tmp_path):
    md = format_frontier(RESULT)
    assert "| rl | beta=0.02 | 1300 | 1150 .. 1450 | 20 | 1.00 | 3/20 | 0.70 | 0.40 | 1.200 |" in md
    assert "| quantilizer | k=8, q=0.5 | 1100 | 900 .. 1300 | 20 | - | - | - | - | - |" in md
    assert "| 1200 | 4.30 | 19/20 |" in md and "Note: x" in md
    png = plot_frontier(RESULT, tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_experiment_runs_every_arm_end_to_end(tiny_checkpoint, tmp_path, capsys):
    """All four arms at toy sizes, with a fake UCI engine standing in for Stockfish."""
    engine = fake_uci.script(tmp_path)
    (tmp_path / "pgn").mkdir()
    (tmp_path / "pgn" / "g.pgn").write_text("\n\n".join(str(random_game(500 + i, max_plies=40)) for i in range(40)))
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
ratings = [1200, 2000]
guidance = [2.0]
filtered_min_elo = 1500
rl_betas = [0.1]
quantilizer_k = 3
quantilizer_q = [0.5]
quantilizer_nodes = 1
kl_positions = 20
frontier_plies = 2
[rl]
steps = 1
games_per_step = 2
opponent = "random"
max_plies = 12
[eval]
games = "{tmp_path / 'pgn' / 'g.pgn'}"
engine = "{engine}"
ratings = [1200]
ladder = ["random", "1350"]
ladder_games = 2
calibration_games = 2
max_plies = 30
line_plies = [2, 8]
openings_games = 4
openings_vs_games = 0
openings_human_games = 40
repeat_samples = 4
""")
    assert cli.main(["experiment", str(cfg), "-q"]) == 0
    result = json.loads((tmp_path / "run" / "frontier.json").read_text())
    arms = sorted({p["arm"] for p in result["points"]})
    assert arms == ["conditioning", "filtered", "guidance", "quantilizer", "rl"]
    assert len(result["points"]) == 6
    for p in result["points"]:
        assert p["lo"] <= p["elo"] <= p["hi"] and p["games"] > 0
        assert p["line_entropy"] is not None and 0 < p["distinct_lines"] <= p["lines_games"]
        assert (p["kl_from_base"] is None) == (p["arm"] == "quantilizer")
    assert (tmp_path / "run" / "frontier.png").is_file()
    assert (tmp_path / "run" / "rl-beta0.1" / "rl.done").is_file()
    # a second run reuses every trained arm and the saved evaluations
    assert cli.main(["experiment", str(cfg), "-q"]) == 0
    assert "conditioning" in capsys.readouterr().out
