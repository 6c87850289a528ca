"""Players: the seeded random mover, the model as a Player (incremental sessions, prompt changes)."""

from __future__ import annotations

import chess
import pytest
import torch

from chessdt.game import Player
from chessdt.play.players import GreedyPlayer, ModelPlayer, QuantilizerPlayer, RandomPlayer
from chessdt.play.policy import Prompted, Sampling
from chessdt.stockfish.engine import Engine
import fake_uci
from tiny_policy import tiny_policy


def test_random_player_is_seeded_and_legal() -> None:
    board = chess.Board()
    a, b = RandomPlayer(3), RandomPlayer(3)
    moves = []
    for _ in range(20):
        m = a.play(board)
        assert m == b.play(board) and board.is_legal(m)
        moves.append(m)
        board.push(m)
    assert isinstance(a, Player) and len(set(moves)) > 1


def test_model_player_follows_the_board_incrementally() -> None:
    """A player that saw every move gives the same distribution as a fresh one given the whole game."""
    policy = tiny_policy(context=64)
    player = ModelPlayer(Prompted(policy, 1500, None, Sampling(temperature=1.0)), seed=0)
    board = chess.Board()
    rng = RandomPlayer(1)
    for _ in range(12):
        board.push(rng.play(board))
        seen = player.distribution(board, temperature=1.0)
        fresh = ModelPlayer(Prompted(policy, 1500), seed=0).distribution(board, temperature=1.0)
        assert torch.allclose(seen, fresh, atol=1e-5)
        want = torch.softmax(policy.logits_full(board, Prompted(policy, 1500).prompt(board.turn)), -1)
        assert torch.allclose(seen, want, atol=1e-5)
    takeback = board.copy()
    takeback.pop()
    takeback.pop()
    again = ModelPlayer(Prompted(policy, 1500), seed=0).distribution(takeback, temperature=1.0)
    assert torch.allclose(player.distribution(takeback, temperature=1.0), again, atol=1e-5)


def test_set_rating_changes_the_prompt() -> None:
    policy = tiny_policy()
    player = ModelPlayer(Prompted(policy, 1000), seed=0)
    board = chess.Board()
    low = player.distribution(board, temperature=1.0)
    player.set_rating(2500, 1200)
    assert player.prompted == Prompted(policy, 2500, 1200)
    high = player.distribution(board, temperature=1.0)
    want = torch.softmax(policy.logits_full(board, Prompted(policy, 2500, 1200).prompt(chess.WHITE)), -1)
    assert torch.allclose(high, want, atol=1e-5) and not torch.allclose(low, high, atol=1e-6)
    assert player.name == "tiny0(rating=2500, T=1.0, top_p=1.0)"


def test_quantilizer_picks_the_best_of_many_draws() -> None:
    policy = tiny_policy()
    # White to move can take a hanging queen; the untrained base model is near-uniform.
    board = chess.Board("4k3/8/8/3q4/8/8/8/3QK3 w - - 0 1")
    with Engine(fake_uci.command()) as engine:
        q = QuantilizerPlayer(ModelPlayer(Prompted(policy, 1500, sampling=Sampling(mask_illegal=True))),
                              engine, k=64, q=1 / 64, nodes=1, seed=0)
        assert q.play(board) == chess.Move.from_uci("d1d5")
        wide = QuantilizerPlayer(ModelPlayer(Prompted(policy, 1500)), engine, k=8, q=1.0, nodes=1, seed=1)
        picks = {wide.play(board) for _ in range(10)}
        assert len(picks) > 1 and all(board.is_legal(m) for m in picks)
    with pytest.raises(ValueError):
        QuantilizerPlayer(ModelPlayer(Prompted(policy, 1500)), Engine(fake_uci.command()), k=0)


@pytest.mark.parametrize(("fen", "best"), [
    ("4k3/8/8/3r4/8/8/8/3QK3 w - - 0 1", "d1d5"),  # an undefended rook: take it
    ("4k3/8/4p3/3r4/8/8/8/3QK3 w - - 0 1", None),  # defended by a pawn: Qxd5 loses 9 for 5
    ("4k3/1P6/8/8/8/8/8/4K3 w - - 0 1", "b7b8q"),  # promote to a queen
])
def test_greedy_player_counts_material_at_one_ply(fen: str, best: str | None) -> None:
    board = chess.Board(fen)
    picks = {GreedyPlayer(seed).play(board).uci() for seed in range(20)}
    if best is not None:
        assert picks == {best}
    else:
        assert "d1d5" not in picks and all(GreedyPlayer.gain(board, chess.Move.from_uci(m)) == 0 for m in picks)
        assert GreedyPlayer.gain(board, chess.Move.from_uci("d1d5")) == 5 - 9
    assert isinstance(GreedyPlayer(), Player)
