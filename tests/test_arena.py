"""Arena: single games, batched model games, the resumable JSONL log, engine crashes and hangs."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import chess
import chess.pgn
import pytest

from chessdt.play.arena import GameSpec, PlayerSeat, play_game, run_games
from chessdt.rules import Opponent
from chessdt.play.opponents import seat_for
from chessdt.play.gamelog import read_game_log
from chessdt.stockfish.engine import DEBIAN_STOCKFISH
from chessdt.errors import UserError
from chessdt.play.players import RandomPlayer, StockfishPlayer
from chessdt.play.policy import Prompted, Sampling
from chessdt.rules import game_over, parse_line
from fake_uci import script
from tiny_policy import tiny_policy

HAVE_STOCKFISH = shutil.which("stockfish") is not None or os.access(DEBIAN_STOCKFISH, os.X_OK)


pytestmark = pytest.mark.usefixtures("one_thread")


def replay(pgn: str) -> tuple[chess.pgn.Game, chess.Board]:
    game = chess.pgn.read_game(io.StringIO(pgn))
    assert game is not None and not game.errors
    return game, game.end().board()


def test_opponent_specs(tmp_path: Path) -> None:
    assert Opponent.parse("random").label == "random"
    assert Opponent.parse("skill=3").label == "sf-skill3"
    assert Opponent.parse("1600").label == Opponent.parse("elo=1600").label == "sf-1600"
    for bad in ("1200", "skill=30", "fish", "elo=x"):
        with pytest.raises(UserError):
            Opponent.parse(bad)
    seat = seat_for(Opponent.parse("1350"), script(str(tmp_path)), nodes=5)
    assert seat.pooled
    assert not seat_for(Opponent.parse("random")).pooled


def test_play_game_random_players() -> None:
    game = play_game(RandomPlayer(1), RandomPlayer(2), opening=parse_line("e4 e5"), max_plies=60,
                     headers={"Round": "7"})
    g, board = replay(str(game))
    assert [m.uci() for m in list(g.mainline_moves())[:2]] == ["e2e4", "e7e5"]
    h = g.headers
    assert h["Round"] == "7" and int(h["PlyCount"]) == board.ply() <= 60
    over = game_over(board)
    if over is None:
        assert board.ply() == 60 and (h["Result"], h["Termination"]) == ("1/2-1/2", "move_limit")
    else:
        assert (h["Result"], h["Termination"]) == over


def test_play_game_records_engine_failure(tmp_path: Path) -> None:
    crashing = script(str(tmp_path), "--crash-at", "1")  # every process dies on its first `go`
    with StockfishPlayer(crashing, elo=1350, nodes=1, timeout_s=5) as sf:
        game = play_game(RandomPlayer(0), sf, max_plies=20)
        assert sf.restarts >= 1
    assert game.headers["Result"] == "*" and game.headers["Termination"] == "engine_failure"
    assert game.end().board().ply() == 1  # White moved, Black's engine never answered


def _model_specs(n: int, opponent: str, opening: tuple[str, ...] = ()) -> list[GameSpec]:
    specs = []
    for k in range(n):
        w, b = ("model", opponent) if k % 2 == 0 else (opponent, "model")
        specs.append(GameSpec(id=f"g{k}", white=w, black=b, opening=opening, seed=5, tags={"k": k}))
    return specs


def test_batched_games_are_legal_and_counted(tmp_path: Path) -> None:
    policy = tiny_policy(context=256)
    seats = {"model": Prompted(policy, 1500), "random": seat_for(Opponent.parse("random")),
             "fake": seat_for(Opponent.parse("1350"), script(str(tmp_path)), nodes=5)}
    specs = _model_specs(4, "random", opening=("e2e4", "e7e5")) + [
        GameSpec(id=f"f{k}", white="model" if k == 0 else "fake", black="fake" if k == 0 else "model") for k in range(2)]
    specs.append(GameSpec(id="self", white="model", black="model"))
    records = run_games(specs, seats, tmp_path / "log.jsonl", meta={"run": 1}, batch_size=3, workers=2, max_plies=80)
    assert [r.id for r in records] == [s.id for s in specs]
    for r, s in zip(records, specs):
        g, board = replay(r.pgn)
        moves = [m.uci() for m in g.mainline_moves()]
        assert tuple(moves[: len(s.opening)]) == s.opening
        assert r.plies == board.ply() <= 80
        assert (r.white, r.black, r.tags) == (s.white, s.black, s.tags)
        assert r.result == g.headers["Result"] != "*"
        # the model chose every move of its side after the opening
        chosen = {c: sum(1 for i in range(len(s.opening), len(moves)) if (i % 2 == 0) == (c == "white")) for c in
                  ("white", "black")}
        for color, label in (("white", s.white), ("black", s.black)):
            assert r.model_moves[color] == (chosen[color] if label == "model" else 0)
            assert 0 <= r.illegal[color] <= r.model_moves[color]
        assert not r.masked
    meta, logged = read_game_log(tmp_path / "log.jsonl")
    # the log names the weights of its model seat (a rerun with other weights does not resume it)
    assert meta == {"run": 1, "weights": {"model": policy.weights_id}}
    assert sorted(r.id for r in logged) == sorted(s.id for s in specs)  # in finish order


def test_batching_does_not_change_games(tmp_path: Path) -> None:
    """A game played in a batch of 6 (with finished games dropped on the way) equals the same game alone.

    Batched and single-game logits differ by float rounding (~1e-6 in probability), so a sampled move
    could flip only when a uniform draw lands that close to a boundary of the cumulative distribution:
    over these ~360 draws a chance of about 1e-4, against which a real batching bug (a wrong cache row
    or mask) changes nearly every game.
    """
    policy = tiny_policy(context=256)
    seats = {"model": Prompted(policy, 1200, sampling=Sampling(temperature=1.0)),
             "random": seat_for(Opponent.parse("random"))}
    specs = _model_specs(6, "random")
    together = run_games(specs, seats, None, batch_size=6, max_plies=60)
    alone = run_games(specs, seats, None, batch_size=1, max_plies=60)
    assert [r.pgn for r in together] == [r.pgn for r in alone]
    assert len({r.pgn for r in together}) == 6  # and the games differ from each other


def test_two_policies_and_guidance_meet_in_one_batch() -> None:
    """Two checkpoints, and a guided against an unguided prompt, play inside one batch (one Session per
    policy and guidance weight); each game equals the same game played alone (margin as above), and
    each side's moves are its own policy's: with temperature 0 each side plays its argmax."""
    a, b = tiny_policy(seed=0, context=256), tiny_policy(seed=1, context=256)
    greedy = Sampling(temperature=0.0)
    seats = {"a": Prompted(a, 1500, sampling=greedy), "b": Prompted(b, 1500, sampling=greedy),
             "a-guided": Prompted(a, 2000, sampling=Sampling(temperature=1.0, guidance=2.0)),
             "a-warm": Prompted(a, 1200, sampling=Sampling(temperature=1.0))}
    specs = [GameSpec(id="ab", white="a", black="b"), GameSpec(id="ba", white="b", black="a"),
             GameSpec(id="guided", white="a-guided", black="a-warm", opening=("d2d4",)),
             GameSpec(id="mixed", white="a-warm", black="b", opening=("e2e4",))]
    together = run_games(specs, seats, None, batch_size=4, max_plies=40)
    alone = run_games(specs, seats, None, batch_size=1, max_plies=40)
    assert [r.pgn for r in together] == [r.pgn for r in alone]
    game, _ = replay(together[0].pgn)
    board = chess.Board()
    for move in game.mainline_moves():
        mover = seats["a"] if board.turn == chess.WHITE else seats["b"]
        logits = mover.policy.logits_full(board, mover.prompt(board.turn))
        top2 = logits.masked_fill(~mover.policy.vocab.legal_mask(board), float("-inf")).topk(2)
        if float(top2.values[0] - top2.values[1]) > 1e-4:  # not a near-tie the two code paths could order apart
            assert move == mover.policy.vocab.decode_move(int(top2.indices[0]))
        board.push(move)
    assert together[0].pgn != together[1].pgn


def test_resume_skips_finished_games(tmp_path: Path) -> None:
    policy = tiny_policy(context=256)
    seats = {"model": Prompted(policy, 1500), "random": seat_for(Opponent.parse("random"))}
    log = tmp_path / "games.jsonl"
    specs = _model_specs(6, "random")
    first = run_games(specs[:4], seats, log, meta={"m": 1}, max_plies=40)
    with open(log, "a") as f:
        f.write('{"id": "torn"')  # a crash in the middle of a write
    calls = []

    def counting(seed: int) -> RandomPlayer:
        calls.append(seed)
        return RandomPlayer(seed)

    seats2 = {"model": seats["model"], "random": PlayerSeat(make=counting)}
    everything = run_games(specs, seats2, log, meta={"m": 1}, max_plies=40)
    assert everything[:4] == first
    assert len(calls) == 2  # only the two missing games were played
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + 6 and all(json.loads(x) for x in lines)
    with pytest.raises(UserError, match="other settings"):
        run_games(specs, seats, log, meta={"m": 2})


def test_engine_crash_and_hang_are_restarted_and_recorded(tmp_path: Path) -> None:
    policy = tiny_policy(context=256)
    for flag in ("--crash-at", "--hang-at"):
        fake = script(str(tmp_path), flag, "3", "--once", str(tmp_path / f"once{flag}"))
        seats = {"model": Prompted(policy, 1500),
                 "fake": seat_for(Opponent.parse("1350"), fake, nodes=5, timeout_s=1.0)}
        records = run_games(_model_specs(2, "fake"), seats, None, batch_size=2, max_plies=30)
        assert sum(r.engine_restarts for r in records) == 1
        assert all(r.decided for r in records)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_STOCKFISH, reason="needs Stockfish (CI installs it)")
def test_model_against_real_stockfish(tmp_path: Path) -> None:
    policy = tiny_policy(context=256)
    seats = {"model": Prompted(policy, 1500), "sf": seat_for(Opponent.parse("1350"), nodes=200),
             "sk": seat_for(Opponent.parse("skill=0"), nodes=200)}
    specs = [GameSpec(id="a", white="model", black="sf"), GameSpec(id="b", white="sk", black="model"),
             GameSpec(id="c", white="sf", black="sk")]
    records = run_games(specs, seats, tmp_path / "g.jsonl", batch_size=2, workers=2, max_plies=60)
    for r in records:
        _, board = replay(r.pgn)
        assert r.decided and r.plies == board.ply()
        assert r.engine_restarts == 0


class _Lifetime(RandomPlayer):
    """A random mover that counts how often its lifetime starts and stops."""

    started: list[int] = []
    stopped: list[int] = []

    def __enter__(self) -> "_Lifetime":
        _Lifetime.started.append(id(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _Lifetime.stopped.append(id(self))


def test_every_player_is_started_and_stopped_through_its_lifetime() -> None:
    """Per-game and pooled players, in batched and plain games: each instance entered once, exited once."""
    policy = tiny_policy(context=256)
    _Lifetime.started, _Lifetime.stopped = [], []
    seats = {"model": Prompted(policy, 1500), "fresh": PlayerSeat(make=lambda seed: _Lifetime(seed)),
             "pooled": PlayerSeat(make=lambda seed: _Lifetime(seed), pooled=True)}
    specs = [GameSpec(id="m1", white="model", black="fresh"), GameSpec(id="m2", white="pooled", black="model"),
             GameSpec(id="p1", white="fresh", black="pooled"), GameSpec(id="p2", white="pooled", black="pooled")]
    records = run_games(specs, seats, None, max_plies=12, workers=2)
    assert all(r.plies == 12 for r in records)
    assert len(_Lifetime.started) == 2 + 2  # two per-game instances, two pooled (workers=2)
    assert sorted(_Lifetime.started) == sorted(_Lifetime.stopped) and len(set(_Lifetime.started)) == 4


def test_pooled_eps_opponents_replay_the_same_games_whatever_the_threads(tmp_path: Path) -> None:
    """An eps draw is a function of the game so far, so the same games come out with one pooled engine
    or two serving them in thread order (the fake engine's own moves are deterministic)."""
    policy = tiny_policy(context=256)
    seat = seat_for(Opponent.parse("eps=0.5"), script(str(tmp_path)), nodes=5)
    specs = _model_specs(6, "eps")
    pgns = []
    for workers in (1, 2):
        records = run_games(specs, {"model": Prompted(policy, 1500), "eps": seat}, None, batch_size=6,
                            workers=workers, max_plies=30)
        pgns.append([r.pgn for r in records])
    assert pgns[0] == pgns[1]
    assert len({p.split("\n\n")[1] for p in pgns[0]}) > 1  # and the games are not all one game
