import random

import chess
import numpy as np
import pytest

from chessdt.tokenizer import (NUM_MOVES, RATING_MAX, RATING_MIN, Conditions, Vocab, all_moves, board_array,
                               check_rating, condition_prefix, condition_slots, game_inputs, position_inputs,
                               read_prefix, unconditional)


def test_vocabulary_is_pinned():
    vocab = Vocab()
    assert len(all_moves()) == NUM_MOVES == 1968
    assert vocab.size == 2004
    assert vocab.hash == "6066a40196eac68f"


def test_bucket_width_changes_vocab_and_hash():
    assert Vocab(rating_bucket=200).size == 1968 + 3 + 1 + 14 + 4
    assert Vocab(rating_bucket=200).hash != Vocab().hash
    with pytest.raises(ValueError):
        Vocab(rating_bucket=0)


def test_every_legal_move_of_random_games_is_encodable_and_round_trips():
    vocab = Vocab()
    rng = random.Random(1)
    seen = 0
    for _ in range(60):
        board = chess.Board()
        for _ in range(150):
            moves = list(board.legal_moves)
            if not moves:
                break
            for m in moves:
                assert vocab.decode_move(vocab.encode_move(m)) == m
                seen += 1
            promos = [m for m in moves if m.promotion]
            board.push(rng.choice(promos or moves))
    assert seen > 10_000


def test_castling_and_underpromotion_tokens_exist():
    vocab = Vocab()
    for uci in ("e1g1", "e1c1", "e8g8", "e8c8", "a7a8n", "b2a1r", "h7g8b", "c2c1q"):
        assert vocab.token_str(vocab.encode_move(chess.Move.from_uci(uci))) == uci
    with pytest.raises(KeyError):
        vocab.encode_move(chess.Move.from_uci("a1h8q"))  # no piece can promote on that line
    with pytest.raises(KeyError):
        vocab.encode_move(chess.Move.from_uci("a1b4"))  # neither a queen nor a knight move


def test_move_table_matches_encode_move():
    vocab = Vocab()
    table = vocab.move_table
    assert (table >= 0).sum() == NUM_MOVES
    for i, m in enumerate(all_moves()):
        promo = 0 if m.promotion is None else m.promotion - 1
        assert table[(m.from_square * 64 + m.to_square) * 5 + promo] == i == vocab.encode_move(m)


def test_rating_tokens_bucket_and_clip():
    vocab = Vocab(rating_bucket=100)
    assert vocab.rating_of_token(vocab.rating_token(1549)) == 1500
    assert vocab.rating_of_token(vocab.rating_token(1500)) == 1500
    assert vocab.rating_of_token(vocab.rating_token(1499)) == 1400
    assert vocab.rating_of_token(vocab.rating_token(100)) == RATING_MIN
    assert vocab.rating_of_token(vocab.rating_token(5000)) == RATING_MAX - 100
    assert vocab.rating_of_token(vocab.rating_token(None)) is None
    assert vocab.rating_token(None) == vocab.unknown_rating
    with pytest.raises(ValueError):
        vocab.rating_of_token(vocab.bos)


def test_results_specials_and_decode():
    vocab = Vocab()
    assert vocab.token_str(vocab.result_token("1-0")) == "<result:1-0>"
    assert vocab.token_str(vocab.result_token("*")) == "<result:?>"
    assert vocab.token_str(vocab.result_token(None)) == "<result:?>"
    ids = [vocab.bos, vocab.rating_token(2000), vocab.token_id("e2e4"), vocab.end]
    assert vocab.decode(np.array(ids)) == ["<bos>", "<rating:2000>", "e2e4", "<end>"]
    assert len({vocab.pad, vocab.bos, vocab.end, vocab.unknown_rating}) == 4
    assert not any(vocab.is_move(t) for t in (vocab.pad, vocab.bos, vocab.end))
    with pytest.raises(ValueError):
        vocab.decode_move(vocab.end)
    with pytest.raises(KeyError):
        vocab.token_id("<nope>")


def test_condition_slots_and_prefix_agree_for_every_label():
    v = Vocab()
    for parts in [(), ("elo",), ("outcome",), ("engine", "outcome"), ("elo", "outcome", "engine")]:
        slots = condition_slots(parts)
        ratings = {"elo": (1500, 1650), "engine": (2000, None)}
        prefix = condition_prefix(v, parts, lambda part: ratings[part], "0-1")
        assert prefix[0] == v.bos and len(prefix) == 1 + len(slots)
        for name, token in zip(slots, prefix[1:]):
            if name == "result":
                assert v.result_of_token(token) == "0-1"
            else:
                color, part = name.split("_")
                expected = ratings[part][0 if color == "white" else 1]
                assert v.rating_of_token(token) == (None if expected is None else expected // 100 * 100)
        read = read_prefix(v, slots, prefix)
        first = next((ratings[p] for p in parts if p in ratings), (None, None))  # elo before engine
        assert read == Conditions(*(None if r is None else r // 100 * 100 for r in first),
                                  "0-1" if "outcome" in parts else None)


def test_unknown_result_and_unconditional_prompt():
    v = Vocab()
    prefix = condition_prefix(v, ("elo", "outcome"), lambda part: (1800, 1900), "*")
    assert v.result_of_token(prefix[-1]) is None  # an unfinished game's result is unknown
    assert unconditional(v, prefix) == [v.bos, v.unknown_rating, v.unknown_rating, v.result_token(None)]
    with pytest.raises(ValueError):
        v.result_of_token(v.bos)


def test_check_rating_is_the_vocabulary_range():
    assert check_rating(RATING_MIN) == RATING_MIN and check_rating(RATING_MAX - 1) == RATING_MAX - 1
    for bad in (RATING_MIN - 1, RATING_MAX):
        with pytest.raises(ValueError, match=f"must be between {RATING_MIN} and {RATING_MAX - 1}"):
            check_rating(bad)


def test_legal_mask_is_the_legal_moves():
    v = Vocab()
    board = chess.Board("r3k2r/pP6/8/8/8/8/8/R3K2R w KQkq - 0 1")
    mask = v.legal_mask(board)
    assert mask.shape == (NUM_MOVES,) and mask.dtype.is_floating_point is False
    assert {v.decode_move(int(i)) for i in mask.nonzero().flatten()} == set(board.legal_moves)


def test_game_inputs_pad_or_cut_rows_as_position_inputs_lays_them_out():
    v = Vocab()
    short, long = chess.Board(), chess.Board()
    for m in ["e2e4", "e7e5"]:
        short.push_uci(m)
    for m in ["d2d4", "d7d5", "c2c4", "e7e6", "g1f3"]:
        long.push_uci(m)
    prompts = [[v.bos, v.rating_token(1200)], [v.bos, v.rating_token(2200)]]
    tokens, boards, plies = game_inputs(prompts, [short, long], 64, v)
    assert tokens.shape == (2, 7) and boards.shape == (2, 7, 64) and plies.shape == (2, 7)
    for row, (prompt, board) in enumerate(zip(prompts, [short, long])):
        t, b, p = position_inputs(prompt, board, 64, v)
        assert tokens[row, : len(t)].tolist() == t.tolist() and (boards[row, : len(t)] == b).all()
        assert plies[row, : len(t)].tolist() == p.tolist()
        assert (tokens[row, len(t):] == v.pad).all() and (boards[row, len(t):] == 0).all()
    assert (boards[1, -1] == board_array(long)).all() and (boards[1, 0] == board_array(chess.Board())).all()
    cut, cut_boards, cut_plies = game_inputs(prompts, [short, long], 64, v, cut_front=True)
    assert cut.shape == (2, 4) and cut[1].tolist() == tokens[1, 3:].tolist()
    assert cut_plies[1].tolist() == plies[1, 3:].tolist() and (cut_boards[1] == boards[1, 3:]).all()
