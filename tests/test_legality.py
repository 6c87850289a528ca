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


# -- issue 26: what the model was given, and strict play ---------------------------------------------
def test_every_legality_figure_states_the_model_inputs(games: list[HeldOutGame]) -> None:
    from chessdt.config import ModelConfig
    from chessdt.evals.legality import LegalityResult, model_inputs
    from chessdt.evals.results import from_dict, jsonable

    pure = ModelConfig(board_input=False, board_head=False, attack_features=False)
    assert model_inputs(pure).startswith("pure sequence (") and "no board, no rules" in model_inputs(pure)
    assert model_inputs(ModelConfig(board_head=False, attack_features=False)).startswith("board input (")
    assert model_inputs(ModelConfig(board_head=False)).startswith("rule features (")
    policy = tiny_policy(context=256)  # board, attack maps and board head: the rules are handed over
    result = evaluate_legality(policy, games, small_cfg(legality_selfplay=0))
    assert result.inputs == model_inputs(policy.cfg.model)
    first = result.format().splitlines()[0]
    assert first.startswith("**Model inputs: rule features (") and "attack maps" in first
    assert from_dict(LegalityResult, jsonable(result)) == result
    # a result saved before inputs were recorded reads back and says so
    saved = {k: v for k, v in jsonable(result).items() if k != "inputs"}
    assert "inputs: not recorded" in from_dict(LegalityResult, saved).format().splitlines()[0]


def test_first_illegal_ply_is_where_the_raw_model_first_picked_an_illegal_move() -> None:
    """At temperature 0 the sampled move is the argmax: recompute every position of each played game
    and check the recorded first illegal ply (and the strict measures built on it)."""
    policy = tiny_policy(context=256)
    sampling = Sampling(temperature=0.0)
    from chessdt.play.arena import GameSpec, run_games
    from chessdt.play.policy import Prompted

    seats = {"m": Prompted(policy, 1500, None, sampling)}
    records = run_games([GameSpec(id=f"g{k}", white="m", black="m", opening=("e2e4", "e7e5")[: k % 3], seed=k)
                         for k in range(3)], seats, None, batch_size=4, max_plies=24)
    for rec in records:
        assert (rec.first_illegal_ply is None) == (sum(rec.illegal.values()) == 0)
        moves = list(rec.game().mainline_moves())
        board, first = chess.Board(), None
        for ply, move in enumerate(moves):
            if ply >= int(rec.id[1:]) % 3:  # past the forced opening: the model's own choice
                best = int(policy.logits_full(board, policy.player_prompt(board.turn, 1500, None)).argmax())
                if first is None and best not in [policy.vocab.encode_move(m) for m in board.legal_moves]:
                    first = ply
            board.push(move)
        assert rec.first_illegal_ply == first
    assert any(r.first_illegal_ply is not None for r in records)  # an untrained model does pick illegal moves


def test_replacing_an_illegal_sample_draws_no_randomness() -> None:
    """Strict play is read off replacement play (the same games cut at the first illegal sample) only
    because the replacement takes no extra draw from the game's generator."""
    from chessdt.play.policy import sample

    policy = tiny_policy(context=256)
    logits = torch.zeros(1, NUM_MOVES)
    logits[0, policy.vocab.encode_move(chess.Move.from_uci("e1e8"))] = 50.0  # an illegal move, sampled for sure
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    from chessdt.play.policy import MoveStats

    stats = MoveStats()
    (move,) = policy.choose(logits, [chess.Board()], Sampling(), g1, stats)
    assert stats.illegal == 1 and move in chess.Board().legal_moves
    sample(logits, 1.0, 1.0, g2)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_played_cell_strict_measures_by_hand() -> None:
    from chessdt.evals.legality import played_cell, strict_plies
    from chessdt.play.gamelog import GameRecord

    def rec(k: int, plies: int, illegal: int, first: int | None) -> GameRecord:
        return GameRecord(id=str(k), white="m", black="m", result="1/2-1/2", termination="move_limit", plies=plies,
                          model_moves={"white": plies // 2, "black": plies // 2},
                          illegal={"white": illegal, "black": 0}, masked=False, engine_restarts=0, seconds=0.0,
                          pgn="", first_illegal_ply=first)

    records = [rec(0, 100, 0, None), rec(1, 80, 2, 10), rec(2, 60, 1, 31), rec(3, 40, 0, None)]
    cell = played_cell(1500, records)
    assert (cell.games, cell.illegal, cell.fully_legal, cell.max_per_game) == (4, 3, 2, 2)
    assert cell.fully_legal_share == 0.5 and cell.fully_legal_lo < 0.5 < cell.fully_legal_hi
    assert cell.median_first_illegal == pytest.approx(20.5) and strict_plies(records[1]) == 10
    assert cell.strict_plies == pytest.approx((100 + 10 + 31 + 40) / 4) and cell.mean_plies == pytest.approx(70)
    with pytest.raises(ValueError, match="first_illegal_ply"):
        played_cell(1500, [rec(4, 50, 1, None)])  # a log from before first illegal plies were recorded
