import random

import chess
import numpy as np
import pytest

from chessdt.tokenizer import NUM_MOVES, RATING_MAX, RATING_MIN, Vocab, all_moves


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
