"""Shared test helpers: synthetic games from python-chess, fixture paths, the shared data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import chess
import chess.pgn
import pytest

from chessdt.config import EvalConfig
from chessdt.evals.heldout import HeldOutGame, load_games

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(os.environ.get("CHESSDT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def random_game(seed: int, max_plies: int = 120, headers: dict[str, str] | None = None) -> chess.pgn.Game:
    """A legal random game (seeded), biased to captures and promotions so odd moves appear."""
    rng = random.Random(seed)
    board = chess.Board()
    game = chess.pgn.Game()
    node: chess.pgn.GameNode = game
    for _ in range(rng.randint(4, max_plies)):
        moves = list(board.legal_moves)
        if not moves:
            break
        promos = [m for m in moves if m.promotion]
        move = rng.choice(promos) if promos and rng.random() < 0.7 else rng.choice(moves)
        node = node.add_variation(move)
        board.push(move)
    outcome = board.outcome()
    game.headers["Result"] = outcome.result() if outcome else rng.choice(["1-0", "0-1", "1/2-1/2"])
    game.headers["WhiteElo"] = str(rng.randint(800, 2800))
    game.headers["BlackElo"] = str(rng.randint(800, 2800))
    game.headers["Site"] = f"https://example.org/game{seed}"
    game.headers["TimeControl"] = rng.choice(["60+0", "180+2", "600+0", "1800+30"])
    for k, v in (headers or {}).items():
        game.headers[k] = v
    return game


def random_pgn(n: int, seed: int = 0, **kw: object) -> str:
    return "\n\n".join(str(random_game(seed + i, **kw)) for i in range(n)) + "\n"  # type: ignore[arg-type]


@pytest.fixture
def shared_lichess() -> Path:
    path = SHARED_DATA / "lichess-2017.pgn.zst"
    if not path.is_file():
        pytest.skip(f"shared data not present at {path}")
    return path


def _tiny_trained(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Path:
    """A checkpoint of experiments/tiny.toml trained a few steps on random games (seconds on CPU)."""
    from chessdt.checkpoint import resolve_checkpoint
    from chessdt.config import load_config
    from chessdt.data.prepare import prepare
    from chessdt.train import train

    root = tmp_path_factory.mktemp("tiny")
    (root / "games.pgn").write_text(random_pgn(60, seed=1))
    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "tiny.toml", [
        f"data.prepared={root / 'data'}", f"run_dir={root / 'run'}", "data.val_fraction=0.1",
        "model.context=64", "train.device=cpu", "train.max_steps=4", "train.warmup_steps=1",
        "train.batch_tokens=512", "train.eval_every=4", "train.save_every=4", "train.eval_tokens=1024", *extra])
    prepare([str(root / "games.pgn")], root / "data", cfg.data, workers=1, progress=False)
    return resolve_checkpoint(train(cfg, progress=False))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of experiments/tiny.toml trained a few steps on random games (seconds on CPU)."""
    return _tiny_trained(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_value_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with a value head (model.value_head), trained a few steps at a high value weight."""
    return _tiny_trained(tmp_path_factory, "model.value_head=true", "train.value_weight=5", "train.max_steps=8",
                         "train.eval_every=8", "train.save_every=8")


@pytest.fixture(autouse=True)
def no_engine_left_open():
    """Fail a test that leaves a UCI engine open: its thread would keep pytest from exiting."""
    import threading
    import time

    def engine_threads() -> set[int]:
        return {t.ident for t in threading.enumerate() if t.name.startswith("SimpleEngine") and t.is_alive()}

    before = engine_threads()
    yield
    deadline = time.monotonic() + 3.0
    while (left := engine_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"{len(left)} UCI engine(s) left open by this test"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny batches run far faster on one torch thread (and do not fight other jobs for cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- held-out games and a small eval config, for the evaluator tests ------------------------------
@pytest.fixture(scope="module")
def pgn_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("heldout") / "games.pgn"
    path.write_text(random_pgn(40, seed=100, max_plies=90))
    return path


@pytest.fixture(scope="module")
def games(pgn_file: Path) -> list[HeldOutGame]:
    return load_games(pgn_file, 40)


def small_cfg(**kw: object) -> EvalConfig:
    base: dict[str, object] = dict(ratings=(1200, 1600, 2000), legality_positions=300, legality_selfplay=2,
                                   max_plies=40, ladder=("random", "1350"), ladder_games=2, calibration_games=2,
                                   matching_games=20, cpl_positions=4, cpl_nodes=10, ladder_nodes=5,
                                   openings_games=6, openings_vs_games=4, openings_opponent="random",
                                   repeat_samples=20, batch_size=8, workers=1, match_games=4)
    base.update(kw)
    return EvalConfig(**base)  # type: ignore[arg-type]
