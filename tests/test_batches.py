from __future__ import annotations

from pathlib import Path

import chess
import numpy as np
import pytest
import torch
from tiny_data import game_arrays, write_dataset

from chessdt.data.batches import IGNORE, Batcher, packing_efficiency, rating_token_ids, segments
from chessdt.data.shards import PreparedData, Split
from chessdt.tokenizer import Vocab, position_inputs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return PreparedData.open(write_dataset(tmp_path_factory.mktemp("d") / "data", n_train=80, max_plies=120))


def test_segments_cover_every_move_once(data: PreparedData) -> None:
    split = data.splits["train"]
    segs = segments(split, data.prefix_len, context=16)
    body = np.diff(split.offsets) - data.prefix_len
    for g in range(split.n_games):
        mine = segs[segs[:, 0] == g]
        covered = sum(int(n) + 1 - data.prefix_len for _, _, n in mine)
        assert covered == body[g]
        assert (mine[:, 2] <= 16).all()


def test_batch_targets_skip_condition_tokens(data: PreparedData) -> None:
    b = Batcher(data, "train", context=16, batch_tokens=256, boards=True)
    batch = b.batch(np.arange(len(b.segs)))
    P = data.prefix_len
    assert (batch.targets[:, : P - 1] == IGNORE).all()  # <bos> and the first rating predict nothing
    for row, (g, s, n) in enumerate(b.segs):
        game = data.splits["train"].game(int(g))
        # inputs: the prefix, then the segment's moves; targets: the moves, shifted by one
        assert batch.tokens[row, :P].tolist() == game[:P].tolist()
        want = game[P + s : P + s + n + 1 - P].astype(np.int64)
        assert batch.targets[row, P - 1 : n].tolist() == want.tolist()
        assert (batch.targets[row, n:] == IGNORE).all()
        if s > 0:  # a later segment's prefix carries the board reached before its first move
            assert int(batch.plies[row, 0]) == s


@pytest.mark.parametrize("context", [16, 40, 256])
def test_every_board_the_model_sees_is_python_chess_board(data: PreparedData, context: int) -> None:
    # boards are not stored: a batch replays its games; each position must hold python-chess's board
    # after that token (the start position under the prefix of a game's first segment, the board
    # before its first move under a later segment's prefix, the last board under <end>)
    b = Batcher(data, "train", context=context, batch_tokens=1024, boards=True)
    P = data.prefix_len
    checked = 0
    boards = {g: game_arrays(g, data.vocab, max_plies=120)[1] for g in range(data.splits["train"].n_games)}
    for ids in b.epoch_plan(0):
        batch = b.batch(ids)
        assert batch.boards is not None
        for row, (g, s, n) in enumerate(b.segs[ids]):
            want = boards[int(g)]  # (tokens, 64): python-chess's board after each token
            assert (batch.boards[row, :P].numpy() == want[P + s - 1 if s else 0]).all()
            assert (batch.boards[row, P:n].numpy() == want[P + s : P + s + n - P]).all()
            checked += int(n)
    assert checked == int(b.segs[:, 2].sum()) > 1000


def test_batches_without_boards_carry_none(data: PreparedData) -> None:
    b = Batcher(data, "train", context=64, batch_tokens=512, boards=False)
    assert b.batch(b.epoch_plan(0)[0]).boards is None


def test_batches_are_mostly_real_tokens() -> None:
    # 3,000 games with lengths spread like human games (median ~75 plies, a long tail)
    rng = np.random.default_rng(0)
    lengths = 3 + np.clip(rng.lognormal(np.log(75), 0.5, 3000).astype(np.int64), 2, 400)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    split = Split(tokens=np.zeros(offsets[-1], np.uint16), offsets=offsets)
    vocab = Vocab()
    data = PreparedData(path=Path("."), meta={"prefix": ["white_elo", "black_elo"]}, vocab=vocab,
                        splits={"train": split})
    b = Batcher(data, "train", context=256, batch_tokens=8192, boards=False)
    eff = packing_efficiency(b)
    assert eff >= 0.9, eff
    naive = b.segs[:, 2].sum() / (len(b.segs) * 256)  # padding every game to the context
    assert naive < 0.5


def test_condition_dropout(data: PreparedData) -> None:
    ratings = rating_token_ids(data.vocab)
    ids = np.arange(len(Batcher(data, "train", 128, 1024, True).segs))

    def cond(p: float, key: tuple[int, ...]) -> torch.Tensor:
        b = Batcher(data, "train", 128, 1024, True, cond_dropout=p, seed=3)
        return b.batch(ids, dropout_key=key).tokens[:, 1:3]

    assert np.isin(cond(0.0, (0,)).numpy(), ratings).all()
    assert (cond(1.0, (0,)) == data.vocab.unknown_rating).all()
    half = cond(0.5, (0,))
    hidden = (half == data.vocab.unknown_rating).all(dim=1).float().mean()
    assert 0.25 < hidden < 0.75
    # a game's two ratings are hidden together (the unconditioned prompt of guidance)
    assert ((half[:, 0] == data.vocab.unknown_rating) == (half[:, 1] == data.vocab.unknown_rating)).all()
    assert torch.equal(half, cond(0.5, (0,))) and not torch.equal(half, cond(0.5, (1,)))


def test_stream_is_resumable_and_split_between_ranks(data: PreparedData) -> None:
    b = Batcher(data, "train", 64, 512, True, cond_dropout=0.3, seed=1)
    n = len(b.epoch_plan(0))
    it = b.stream()
    straight = [next(it) for _ in range(n + 5)]  # crosses into the second epoch
    resumed = b.stream(start=n - 2)
    for x in straight[n - 2 :]:
        y = next(resumed)
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.targets, y.targets)
    r0, r1 = b.stream(rank=0, world=2), b.stream(rank=1, world=2)
    seen0 = [next(r0).targets for _ in range(n // 2)]  # targets: condition dropout differs per rank
    seen1 = [next(r1).targets for _ in range(n // 2)]
    assert torch.equal(seen0[0], straight[0].targets) and torch.equal(seen1[0], straight[1].targets)
    assert torch.equal(seen0[1], straight[2].targets) and torch.equal(seen1[1], straight[3].targets)
    assert sum(x.n_real for x in straight[:n]) == int(b.segs[:, 2].sum())  # an epoch is every segment


def test_position_inputs_match_training_batches(data: PreparedData) -> None:
    b = Batcher(data, "train", context=16, batch_tokens=256, boards=True)
    P = data.prefix_len
    split = data.splits["train"]
    g, s, n = (int(v) for v in b.segs[b.segs[:, 1] > 0][0])  # a later segment of a long game
    row = int(np.nonzero((b.segs[:, 0] == g) & (b.segs[:, 1] == s))[0][0])
    batch = b.batch(np.array([row]))
    game = split.game(g)
    board = chess.Board()
    for tok in game[P : P + s + n - P]:
        board.push(data.vocab.decode_move(int(tok)))
    tokens, boards, plies = position_inputs(list(game[:P]), board, 16, data.vocab)
    assert tokens.tolist() == batch.tokens[0, :n].tolist()
    assert (boards == batch.boards[0, :n].numpy()).all()
    assert plies.tolist() == batch.plies[0, :n].tolist()


def test_a_context_that_is_not_a_multiple_of_eight_is_never_exceeded(data: PreparedData) -> None:
    """Issue 24, case 8: batch widths were rounded up to a multiple of 8 past the context (12 -> 16), and
    the model refused the batch with a traceback; model.context=4..7 failed the same way."""
    for context in (4, 12):
        b = Batcher(data, "train", context=context, batch_tokens=256, boards=True)
        widths = {b.batch(ids).tokens.shape[1] for ids in b.epoch_plan(0)}
        assert max(widths) == context, widths
