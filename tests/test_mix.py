"""Which training games an epoch draws (issue 27): rating bands for learnability checks, and
rating-stratified or cross-strength oversampling (chessdt.data.mix)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import _tiny_trained
from tiny_data import write_dataset

from chessdt.config import ConfigError, TrainConfig, load_config
from chessdt.data import mix
from chessdt.data.batches import Batcher
from chessdt.data.shards import PreparedData
from chessdt.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    return PreparedData.open(write_dataset(tmp_path_factory.mktemp("mix") / "data", n_train=40, n_val=4))


def test_game_ratings_read_each_game_prefix(data: PreparedData) -> None:
    split = data.splits["train"]
    ratings = mix.game_ratings(data, split)
    assert ratings.shape == (split.n_games, 2)
    for g in range(split.n_games):
        game = split.game(g)
        assert ratings[g].tolist() == [data.vocab.rating_of_token(int(game[1])),
                                       data.vocab.rating_of_token(int(game[2]))]


def test_unknown_ratings_are_minus_one(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "d", n_train=3, n_val=1)
    tokens = np.memmap(path / "train.tokens", dtype=np.uint16, mode="r+")
    data = PreparedData.open(path)
    tokens[int(data.splits["train"].offsets[1]) + 2] = data.vocab.unknown_rating  # game 1: Black unknown
    tokens.flush()
    ratings = mix.game_ratings(PreparedData.open(path), PreparedData.open(path).splits["train"])
    assert ratings[1, 1] == -1 and ratings[1, 0] >= 0 and (ratings[[0, 2]] >= 0).all()


def test_a_prefix_without_ratings_is_refused(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "d", n_train=3, n_val=1)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "prefix": ["result", "result"]}))
    data = PreparedData.open(path)
    with pytest.raises(UserError, match="holds no player ratings"):
        mix.game_ratings(data, data.splits["train"])


RATINGS = np.array([[1100, 1200], [2300, 2500], [1500, 1600], [1200, 2000], [-1, 1500], [1500, 1500],
                    [1600, 1500], [2200, 1200]])


def test_bands_keep_games_whose_two_players_lie_in_one_band() -> None:
    reps = mix.repeats(RATINGS, bands=[(0, 1299), (2200, 4000)])
    assert reps.tolist() == [1, 1, 0, 0, 0, 0, 0, 0]  # [2200, 1200]: one player in each band is not kept
    assert mix.repeats(RATINGS).tolist() == [1] * len(RATINGS)


def test_cross_adds_a_draw_per_200_points_of_gap_up_to_the_cap() -> None:
    assert mix.repeats(RATINGS, oversample="cross").tolist() == [1, 2, 1, 4, 1, 1, 1, 4]
    assert mix.repeats(RATINGS, oversample="cross", oversample_max=3).tolist() == [1, 2, 1, 3, 1, 1, 1, 3]
    # with bands, a game left out stays out
    assert mix.repeats(RATINGS, bands=[(1000, 2000)], oversample="cross").tolist() == [1, 0, 1, 4, 0, 1, 1, 0]


def test_rating_oversampling_evens_out_the_bands_of_mean_rating() -> None:
    ratings = np.array([[1500, 1500]] * 6 + [[1300, 1300]] * 3 + [[2400, 2400]] + [[-1, -1]])
    reps = mix.repeats(ratings, oversample="rating", oversample_max=10)
    assert reps.tolist() == [1] * 6 + [2] * 3 + [6] + [1]  # each band drawn 6 times per epoch
    capped = mix.repeats(ratings, oversample="rating", oversample_max=4)
    assert capped[9] == 4 and capped[:9].tolist() == reps[:9].tolist()


def test_an_unknown_oversample_is_refused() -> None:
    with pytest.raises(ValueError, match="oversample 'elo'"):
        mix.repeats(RATINGS, oversample="elo")


def test_batcher_draws_repeated_games_and_only_kept_ones(data: PreparedData) -> None:
    split = data.splits["train"]
    ratings = mix.game_ratings(data, split)
    reps = np.zeros(split.n_games, dtype=np.int64)
    reps[:5], reps[5] = 1, 3
    batcher = Batcher(data, "train", context=64, batch_tokens=512, boards=False, game_repeats=lambda epoch: reps)
    plain = Batcher(data, "train", context=64, batch_tokens=512, boards=False)
    plan = np.concatenate(batcher.epoch_plan(0))
    assert len(plan) == sum(int((plain.segs[:, 0] == g).sum()) * int(reps[g]) for g in range(8))
    drawn: list[tuple[int, int]] = []
    for seg_ids in batcher.epoch_plan(0):
        batch = batcher.batch(seg_ids)
        drawn += [(int(row[1]), int(row[2])) for row in batch.tokens]
    kept = {(data.vocab.rating_token(int(w)), data.vocab.rating_token(int(b))) for w, b in ratings[:6]}
    assert set(drawn) <= kept
    games = batcher.segs[plan, 0]
    assert int((games == 5).sum()) == 3 * int((plain.segs[:, 0] == 5).sum())
    assert int((games == 6).sum()) == 0


def test_batcher_refuses_a_mix_that_keeps_nothing(data: PreparedData) -> None:
    with pytest.raises(UserError, match="no train game is left"):
        Batcher(data, "train", context=64, batch_tokens=512, boards=False,
                game_repeats=lambda epoch: np.zeros(data.splits["train"].n_games, dtype=np.int64))


def test_band_cap_keeps_at_most_cap_draws_per_band_and_spares_the_rest() -> None:
    ratings = np.array([[2400, 2500]] * 30 + [[2600, 2700]] * 3 + [[1200, 1300]] * 4 + [[-1, 2500]] * 2)
    reps = np.ones(len(ratings), dtype=np.int64)
    reps[30] = 4  # a repeated game counts each draw
    out = mix.cap_bands(reps, ratings, cap=5, seed=0, epoch=0)
    assert out[:30].sum() == 5 and set(out[:30].tolist()) <= {0, 1}  # the big band: 5 of its 30 draws
    assert out[30:33].sum() == 5 and out[30] <= 4  # 6 draws over the cap of 5, the repeats included
    assert out[33:].tolist() == [1, 1, 1, 1, 1, 1]  # under the cap, and unknown ratings: untouched
    assert mix.cap_bands(reps, ratings, cap=0, seed=0, epoch=0).tolist() == reps.tolist()
    assert mix.cap_bands(reps, ratings, cap=100, seed=0, epoch=0).tolist() == reps.tolist()


def test_band_cap_draws_a_fresh_sample_each_epoch_and_repeats_it_for_a_seed() -> None:
    ratings = np.array([[2400, 2500]] * 200)
    per_epoch = mix.epoch_repeats(ratings, band_cap=20, seed=3)
    first, second = per_epoch(0), per_epoch(1)
    assert first.sum() == second.sum() == 20
    assert first.tolist() != second.tolist()  # 20 of 200: the chance of the same pick is 1 in 10^27
    assert mix.epoch_repeats(ratings, band_cap=20, seed=3)(0).tolist() == first.tolist()
    assert mix.epoch_repeats(ratings, band_cap=20, seed=4)(0).tolist() != first.tolist()


def test_batcher_draws_only_the_capped_sample_of_each_epoch(data: PreparedData) -> None:
    split = data.splits["train"]
    ratings = mix.game_ratings(data, split)
    ratings[:] = 2400  # one band: a cap of 10 games per epoch
    per_epoch = mix.epoch_repeats(ratings, band_cap=10, seed=0)
    batcher = Batcher(data, "train", context=512, batch_tokens=4096, boards=False, game_repeats=per_epoch)
    for epoch in (0, 1):
        games = set(batcher.segs[np.concatenate(batcher.epoch_plan(epoch)), 0].tolist())
        assert games == set(np.flatnonzero(per_epoch(epoch)).tolist()) and len(games) == 10


def test_config_checks_and_parses_the_mix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="band_cap"):
        TrainConfig(band_cap=-1)
    with pytest.raises(ConfigError, match="train.oversample='elo'"):
        TrainConfig(oversample="elo")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="oversample_max"):
        TrainConfig(oversample_max=0)
    with pytest.raises(ConfigError, match=r"\[2000, 1000\]"):
        TrainConfig(rating_bands=((2000, 1000),))
    cfg = load_config(ROOT / "experiments" / "tiny.toml",
                      ["train.rating_bands=[[0, 1299], [2200, 4000]]", "train.oversample=cross"])
    assert cfg.train.rating_bands == ((0, 1299), (2200, 4000)) and cfg.train.oversample == "cross"


def test_training_logs_its_mix(tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="chessdt.train")
    _tiny_trained(tmp_path_factory, "train.oversample=cross", "train.rating_bands=[[0, 1999]]", "train.band_cap=3")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training mix"))
    assert "games drawn" in line and "outside train.rating_bands or over train.band_cap" in line


def test_a_malformed_list_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a TOML list"):
        load_config(ROOT / "experiments" / "tiny.toml", ["train.rating_bands=[[0, 1299]"])
