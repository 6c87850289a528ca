"""Softmax rungs: the grammar, the exact policy, and that the generator samples from that policy."""

from __future__ import annotations

import math
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import chess
import chess.engine
import pytest

import fake_uci
from chessdt import cli
from chessdt.errors import UserError
from chessdt.rules import Opponent
from chessdt.rules import Strength
from chessdt.stockfish.engine import DEBIAN_STOCKFISH, Engine, EngineFailure, find_stockfish
from chessdt.stockfish.generate import LadderConfig, Pairing, Rung, generate, play_pairing, read_games
from chessdt.stockfish.softmax import (MATE_CP, MoveScores, mate_aware_cp, rung_policy, sample, score_moves,
                                       softmax_weights)

HAVE_STOCKFISH = shutil.which("stockfish") is not None or os.access(DEBIAN_STOCKFISH, os.X_OK)
E4, D4, A3 = (chess.Move.from_uci(u) for u in ("e2e4", "d2d4", "a2a3"))


def test_grammar_round_trips_and_refuses_bad_specs() -> None:
    s = Strength.parse("softmax=12.5,gate=80,eps=0.1")
    assert (s.softmax, s.gate, s.eps) == (12.5, 80, 0.1)
    assert Strength.parse(s.spec) == s and not s.deterministic
    assert s.options() == Strength().options()  # moves are scored at full strength
    r = Rung.parse("1900:softmax=15,gate=100/150")
    assert (r.rating, r.strength.softmax, r.strength.gate, r.nodes) == (1900, 15.0, 100, 150)
    assert Rung.parse(str(r)) == r
    assert Opponent.parse("softmax=40").label == "sf-softmax40"
    for bad in ("2000:softmax=abc", "2000:softmax=0", "2000:gate=50", "2000:softmax=10,elo=1500",
                "2000:softmax=10,gate=-5", "2000:softmax=nan", "2000:softmax=10,softmax=20"):
        with pytest.raises(UserError) as e:
            Rung.parse(bad)
        assert "\n" not in str(e.value), bad


def test_bad_rung_on_the_command_line_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["games", "generate", "--out", str(tmp_path / "x.pgn.zst"), "--games", "2",
                   "--rungs", "2000:softmax=10,1000:softmax=oops", "--engine", fake_uci.script(str(tmp_path))])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "softmax=oops" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.pgn.zst").exists()


def test_weights_follow_the_formula() -> None:
    scores = MoveScores((A3, D4, E4), (-200, 10, 30))
    p = softmax_weights(scores, Strength(softmax=20))
    z = 1 + math.exp(-20 / 20) + math.exp(-230 / 20)
    assert p == pytest.approx([math.exp(-230 / 20) / z, math.exp(-1) / z, 1 / z])
    gated = softmax_weights(scores, Strength(softmax=20, gate=100, eps=0.3))
    assert gated[0] == pytest.approx(0.1)  # only eps reaches a move below the gate
    assert sum(gated) == pytest.approx(1.0) and gated[2] > gated[1] > gated[0]
    assert softmax_weights(scores, Strength(softmax=20, gate=0)) == pytest.approx([0, 0, 1])
    with pytest.raises(ValueError):
        softmax_weights(scores, Strength(elo=1500))


def test_mates_rank_by_speed_above_any_centipawn_score() -> None:
    def cp(score: chess.engine.Score) -> int:
        return mate_aware_cp(chess.engine.PovScore(score, chess.WHITE), chess.WHITE)
    order = [cp(chess.engine.Mate(1)), cp(chess.engine.Mate(3)), cp(chess.engine.Cp(5000)),
             cp(chess.engine.Cp(0)), cp(chess.engine.Mate(-4)), cp(chess.engine.Mate(-1))]
    assert order == sorted(order, reverse=True) and order[0] == MATE_CP - 200


def test_sample_matches_the_distribution() -> None:
    policy = {E4: 0.5, D4: 0.3, A3: 0.2}
    rng = random.Random(1)
    counts = Counter(sample(policy, rng) for _ in range(20_000))
    for move, p in policy.items():
        sd = math.sqrt(p * (1 - p) / 20_000)
        assert abs(counts[move] / 20_000 - p) < 5 * sd
    assert sample({E4: 0.0, D4: 1.0}, random.Random(0)) == D4


def test_fake_engine_ladder_is_reproducible(tmp_path: Path) -> None:
    """A softmax ladder replays the same games: scores are a function of the position, draws are seeded."""
    rungs = (Rung.parse("1500:softmax=300"), Rung.parse("1000:softmax=600,eps=0.2"))
    cfg = LadderConfig(rungs=rungs, games=4, max_plies=16, adjudicate_moves=0)
    texts = []
    for name in ("a.pgn", "b.pgn"):
        generate(cfg, tmp_path / name, fake_uci.command(), workers=1, progress=False)
        texts.append(sorted(str(g.mainline_moves()) for g in read_games(tmp_path / name)))
    assert texts[0] == texts[1] and len(set(texts[0])) > 1
    g = next(read_games(tmp_path / "a.pgn"))
    assert "softmax T=" in g.headers["White"] and "/line" in g.headers["White"]


@pytest.mark.skipif(not HAVE_STOCKFISH, reason="needs Stockfish")
def test_scores_are_reproducible_and_cover_every_move() -> None:
    board = chess.Board()
    for u in ("e2e4", "c7c5", "g1f3"):
        board.push_uci(u)
    with Engine(find_stockfish()) as engine:
        a = score_moves(engine, board, 60)
        engine.analyse(chess.Board(), chess.engine.Limit(nodes=5000))  # fills the hash: must not matter
        b = score_moves(engine, board, 60)
    assert a == b and set(a.moves) == set(board.legal_moves)


@pytest.mark.skipif(not HAVE_STOCKFISH, reason="needs Stockfish")
def test_policy_function_matches_the_generators_sampling() -> None:
    """The generator's first moves from the start position occur at the policy function's rates."""
    rung = Rung.parse("1800:softmax=40,gate=150/40")
    cfg = LadderConfig(rungs=(rung, Rung.parse("1000:softmax=500")), max_plies=1, adjudicate_moves=0, seed=5)
    n = 300
    with Engine(find_stockfish()) as white, Engine(find_stockfish()) as black:
        policy = rung_policy(white, chess.Board(), rung.strength, 40)
        counts: Counter[chess.Move] = Counter()
        for i in range(n):
            game = play_pairing(cfg, Pairing(i, cfg.rungs[0], cfg.rungs[1], (), 0), white, black, "sf")
            counts[next(iter(game.mainline_moves()))] += 1
    assert sum(policy.values()) == pytest.approx(1.0)
    assert sum(1 for p in policy.values() if p > 0.05) >= 2  # a real choice among good moves
    for move in policy:
        p = policy[move]
        sd = math.sqrt(max(p * (1 - p), 1e-9) / n)
        assert abs(counts[move] / n - p) <= 4 * sd + 1.5 / n, (move.uci(), counts[move], p)


def test_ladder_variety_counts_and_exact_entropies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from chessdt.stockfish.rungs import ladder_variety

    rungs = (Rung.parse("1500:softmax=50"), Rung.parse("1000:softmax=400"))
    path = tmp_path / "ladder.pgn"
    generate(LadderConfig(rungs=rungs, games=8, max_plies=12, adjudicate_moves=0, nodes=2), path,
             fake_uci.command(), workers=1, progress=False)
    games = list(read_games(path))
    v = ladder_variety(path, fake_uci.command(), games=3, selfplay=6, selfplay_plies=4)
    by = {r.rating: r for r in v.rows}
    for rating, row in by.items():
        firsts = Counter(str(next(iter(g.mainline_moves()))) for g in games if g.headers["WhiteElo"] == str(rating))
        assert row.first_move_games == sum(firsts.values()) == 4
        assert row.top_first_share == pytest.approx(max(firsts.values()) / 4)
        assert 1 <= row.selfplay_distinct <= 6 and row.scored_games == 3
        assert row.early_bits[1] <= row.early_bits[0] <= row.early_bits[2]
        assert row.early_good_bits[0] <= row.early_bits[0] + 1e-9
    # at the start every move is worth 0 to the fake engine: the first positions are near uniform, so
    # the warm rung's opening entropy is close to log2(20); the cold one is no higher
    assert 3.0 < by[1000].early_bits[0] <= math.log2(20) + 1e-9
    assert by[1500].early_bits[0] <= by[1000].early_bits[0] + 1e-9
    rc = cli.main(["games", "variety", str(path), "--rungs", "1500", "--games", "2", "--selfplay", "0",
                   "--engine", fake_uci.script(str(tmp_path)), "-q", "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "1500:softmax=50/2" in out and "1000:softmax" not in out and (tmp_path / "v.json").is_file()
    plain = tmp_path / "plain.pgn"
    plain.write_text('[Event "casual"]\n[Result "*"]\n\n1. e4 *\n\n')
    rc = cli.main(["games", "variety", str(plain), "--engine", fake_uci.script(str(tmp_path)), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "not a `chessdt games generate` file" in err and len(err.splitlines()) == 1


def test_unscored_moves_are_scored_with_a_larger_budget() -> None:
    """A search that leaves a legal move unscored is repeated with 4x the nodes, deterministically."""
    board = chess.Board()
    with Engine(fake_uci.command("--short-below", "1000")) as engine:  # 20 moves x 10 nodes: short
        scores = score_moves(engine, board, 10)
    assert set(scores.moves) == set(board.legal_moves)
    with Engine(fake_uci.command("--short-below", "10000000")) as engine:
        with pytest.raises(EngineFailure, match="unscored"):
            score_moves(engine, board, 10)


def test_a_game_that_keeps_failing_stops_the_run_with_one_line(tmp_path: Path) -> None:
    cfg = LadderConfig(rungs=(Rung.parse("1500:softmax=300"), Rung.parse("1000:softmax=600")), games=2,
                       max_plies=8, adjudicate_moves=0)
    with pytest.raises(UserError, match="rerun the same command to resume") as e:
        generate(cfg, tmp_path / "x.pgn", fake_uci.command("--crash-at", "1"), workers=1, progress=False)
    assert "\n" not in str(e.value)
