"""Legality: accounting on rigged models, a tiny model against full recomputation, reasons."""

from __future__ import annotations


import chess
import pytest
import torch

from chessdt.evals import legality as legality_mod
from chessdt.evals.heldout import HeldOutGame, scored_moves
from chessdt.evals.legality import evaluate_legality, played_legality, score_legality
from chessdt.play.policy import Sampling
from chessdt.tokenizer import NUM_MOVES, Vocab
from conftest import small_cfg
from tiny_policy import tiny_policy

VOCAB_FOR_REASONS = Vocab()

pytestmark = pytest.mark.usefixtures("one_thread")


def _rigged_logits(legal_value: float, illegal_value: float):  # noqa: ANN202
    def fake(policy, games, prompts, batch_size=16):  # noqa: ANN001, ANN202
        for i, g in enumerate(games):
            n = scored_moves(policy, g)
            logits = torch.full((n, NUM_MOVES), illegal_value)
            board = chess.Board()
            for j in range(n):
                logits[j, [policy.vocab.encode_move(m) for m in board.legal_moves]] = legal_value
                board.push(g.moves[j])
            yield i, logits
    return fake


def test_legality_accounting_on_rigged_models(monkeypatch: pytest.MonkeyPatch, games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    monkeypatch.setattr(legality_mod, "teacher_forced_logits", _rigged_logits(0.0, -40.0))
    overall, by_ply, by_band, used, reasons = score_legality(policy, games, positions=250)
    assert reasons == {}  # every top-1 pick legal: nothing to explain
    assert overall.positions == 250 and sum(c.positions for c in by_ply) == sum(c.positions for c in by_band) == 250
    assert overall.top1_legal == overall.sampled_legal == 1.0 and overall.illegal_mass < 1e-9
    assert used == len({i for i in range(len(games)) if sum(min(len(g.moves), 256) for g in games[:i]) < 250})
    monkeypatch.setattr(legality_mod, "teacher_forced_logits", _rigged_logits(-40.0, 0.0))
    overall, _, _, _, reasons = score_legality(policy, games, positions=100)
    assert overall.top1_legal == overall.sampled_legal == 0.0 and overall.illegal_mass > 0.999
    assert sum(reasons.values()) == 100  # every position's illegal pick has one reason


def test_legality_on_a_tiny_model(games: list[HeldOutGame]) -> None:
    policy = tiny_policy(context=256)
    result = evaluate_legality(policy, games, small_cfg())
    assert result.overall.positions == 300 and 0 <= result.overall.top1_legal <= 1
    assert sum(result.illegal_top1.values()) == round(300 * (1 - result.overall.top1_legal))
    assert "why the top-1 move was illegal" in result.format() or result.overall.top1_legal == 1
    assert [c.group for c in result.by_ply][:2] == ["0-9", "10-19"]
    for p in result.played:
        assert p.games == 2 and p.per_game == p.illegal / 2 and 0 <= p.illegal <= p.moves
    # by hand on one game: full recomputation at every position
    g = games[0]
    prompt = policy.prompt(g.white, g.black, g.result)
    top1, mass, close = [], [], 0
    for j in range(len(g.moves)):
        board = g.board(j)
        probs = torch.softmax(policy.logits_full(board, prompt), -1)
        legal = [policy.vocab.encode_move(m) for m in board.legal_moves]
        top1.append(int(probs.argmax()) in legal)
        mass.append(1.0 - float(probs[legal].sum()))
        best2 = probs.topk(2).values
        close += float(best2[0] - best2[1]) < 1e-5  # a near-tie: the batched path may pick the other one
    overall, _, _, used, _ = score_legality(policy, [g], positions=1000)
    assert used == 1 and overall.positions == len(g.moves)
    # the two paths differ by float rounding (~1e-6 in probability); only near-ties may flip the top-1 pick
    assert abs(overall.top1_legal - sum(top1) / len(top1)) <= close / len(top1) + 1e-9
    assert overall.illegal_mass == pytest.approx(sum(mass) / len(mass), abs=1e-5)


def test_played_legality_counts_match_records() -> None:
    policy = tiny_policy(context=256)
    (row,) = played_legality(policy, [1500], games=3, sampling=Sampling(mask_illegal=True), max_plies=30)
    assert row.games == 3 and row.moves == 3 * 30 and row.max_per_game <= 30  # mask is forced off: raw counts
    assert row.illegal > 0  # an untrained model samples illegal moves




@pytest.mark.parametrize("fen,uci,reason", [
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "f1c4", "path blocked"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "e7e5", "no piece of the mover on the from-square"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "d1d2", "onto the mover's own piece"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "g1g3", "piece cannot move so"),
    ("rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", "e2d3", "pawn cannot move so"),
    ("4k3/8/8/8/8/8/4r3/R3K2R w KQ - 0 1", "a1a2", "does not answer the check"),
    ("4k3/8/8/8/8/8/8/R3K2r w Q - 0 1", "e1f1", "does not answer the check"),
    ("4k3/8/8/b7/8/8/3P4/4K3 w - - 0 1", "d2d3", "pinned piece leaves its line"),
    ("4k3/8/8/8/8/8/5r2/4K3 w - - 0 1", "e1f1", "king steps into an attack"),
    ("4k3/8/8/8/8/8/8/R3K2R w Q - 0 1", "e1g1", "castling without the right"),
    ("4k3/8/8/8/8/8/8/RN2K2R w KQ - 0 1", "e1c1", "path blocked"),
    ("4k3/8/8/8/8/8/6r1/R3K2R w KQ - 0 1", "e1g1", "castling out of, through or into check"),
])
def test_illegal_reason(fen: str, uci: str, reason: str) -> None:
    from chessdt.evals.legality import illegal_reason

    board = chess.Board(fen)
    move = chess.Move.from_uci(uci)
    assert not board.is_legal(move)
    assert illegal_reason(board, VOCAB_FOR_REASONS.encode_move(move), VOCAB_FOR_REASONS) == reason


def test_illegal_reason_for_a_non_move_token() -> None:
    from chessdt.evals.legality import illegal_reason

    assert illegal_reason(chess.Board(), VOCAB_FOR_REASONS.end, VOCAB_FOR_REASONS) == "not a move: <end>"
