"""Engine quality tags for any PGN: per player ACPL, accuracy %, blunders and a calibrated engine Elo.

Every position of a game is analysed once by Stockfish at a fixed node budget. A move's centipawn
loss is the drop of the mover's evaluation (capped at +-1000 cp, mate counts as 1000) from before to
after the move; accuracy is Lichess's formula (win% from centipawns, per-move accuracy from the win%
drop, game accuracy = mean of the volatility-weighted and harmonic means). `WhiteEngineElo` and
`BlackEngineElo` come from a linear calibration fitted on games whose Elo is known (`fit_calibration`),
saved as JSON with its held-out error and reused by `label`.

Output is appended in whole batches with a `LabelIndex` tag per game, so an interrupted run resumes.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import chess
import chess.engine
import chess.pgn
import numpy as np
from tqdm import tqdm

from chessdt.stockfish.engine import Engine, EngineCommand, EngineFailure
from chessdt.errors import UserError
from chessdt.files import exclusive_beside
from chessdt.rules import clipped_cp, final_cp
from chessdt.stockfish.framed import FramedWriter, repair
from chessdt.data.archives import open_text
from chessdt.data.pgn import iter_games, parse_rating
from chessdt.stockfish.workers import imap_stateful

log = logging.getLogger(__name__)

INDEX_TAG = "LabelIndex"
_INDEX_RE = re.compile(r'^\[LabelIndex "(\d+)"\]', re.M)
_OWN = ("accuracy", "log_acpl", "blunder_rate", "mistake_rate")
# Calibration inputs, in order: the player's own quality, the opponent's (rated games pair players of
# similar strength, so the opponent's play carries information too) and the game's length.
FEATURES = (*_OWN, *(f"opp_{f}" for f in _OWN), "log_plies")


@dataclass(frozen=True, kw_only=True)
class LabelConfig:
    """How games are analysed and judged."""

    nodes: int = 5000  # node budget per analysed position (the calibration must use the same)
    blunder_cp: int = 300  # a move losing at least this many centipawns is a blunder
    mistake_cp: int = 100  # ... at least this many, a mistake (used by the calibration)
    min_moves: int = 10  # fewer own moves than this: quality tags written, but no engine Elo
    hash_mb: int = 16  # transposition table per engine


# -- pure math ------------------------------------------------------------------------------------
def win_percent(cp: float) -> float:
    """Lichess win% (0-100) for the side with this evaluation.

    >>> win_percent(0), round(win_percent(300), 1)
    (50.0, 75.1)
    """
    return 50.0 + 50.0 * (2.0 / (1.0 + math.exp(-0.00368208 * cp)) - 1.0)


def move_accuracy(win_before: float, win_after: float) -> float:
    """Lichess per-move accuracy (0-100) from the mover's win% before and after the move.

    >>> move_accuracy(60, 60), round(move_accuracy(60, 40), 1)
    (100.0, 41.0)
    """
    if win_after >= win_before:
        return 100.0
    raw = 103.1668100711649 * math.exp(-0.04354415386753951 * (win_before - win_after)) - 3.166924740191411
    return max(0.0, min(100.0, raw + 1.0))  # +1: Lichess's bonus for imperfect analysis


def game_accuracy(white_cps: list[float], first_mover: chess.Color = chess.WHITE) -> dict[chess.Color, float]:
    """Lichess game accuracy per colour from White-POV evaluations after each move (initial included
    as the first element), i.e. len(white_cps) = plies + 1."""
    wins = [win_percent(cp) for cp in white_cps]
    n_moves = len(wins) - 1
    if n_moves < 1:
        return {}
    window = max(2, min(8, n_moves // 10))
    windows = [wins[:window]] * max(0, min(window, len(wins)) - 2)
    windows += [wins[i:i + window] for i in range(0, max(1, len(wins) - window + 1))]
    weights = [max(0.5, min(12.0, float(np.std(w)))) for w in windows]
    per: dict[chess.Color, list[tuple[float, float]]] = {chess.WHITE: [], chess.BLACK: []}
    for i in range(n_moves):
        color = first_mover if i % 2 == 0 else not first_mover
        before, after = wins[i], wins[i + 1]
        if color == chess.BLACK:
            before, after = 100.0 - before, 100.0 - after
        per[color].append((move_accuracy(before, after), weights[min(i, len(weights) - 1)]))
    out: dict[chess.Color, float] = {}
    for color, items in per.items():
        if not items:
            continue
        weighted = sum(a * w for a, w in items) / sum(w for _, w in items)
        harmonic = len(items) / sum(1.0 / max(a, 1e-9) for a, _ in items)
        out[color] = (weighted + harmonic) / 2.0
    return out


# -- one game -------------------------------------------------------------------------------------
@dataclass
class PlayerQuality:
    moves: int = 0
    acpl: float = 0.0
    accuracy: float = 0.0
    blunders: int = 0
    mistakes: int = 0

    def features(self) -> list[float]:
        n = max(self.moves, 1)
        return [self.accuracy, math.log1p(self.acpl), self.blunders / n, self.mistakes / n]


def features(player: PlayerQuality, opponent: PlayerQuality) -> list[float]:
    """Calibration inputs for `player` (order of FEATURES)."""
    return [*player.features(), *opponent.features(), math.log1p(player.moves + opponent.moves)]


def analyse_game(engine: Engine, game: chess.pgn.Game, cfg: LabelConfig) -> dict[chess.Color, PlayerQuality]:
    """ACPL, accuracy, blunders and mistakes of both players of `game`."""
    board = game.board()
    first = board.turn
    limit = chess.engine.Limit(nodes=cfg.nodes)
    tag = object()  # new game for the engine (clears its hash): labels do not depend on game order
    moves = list(game.mainline_moves())
    evals: list[float] = []  # White POV, one per position
    for i in range(len(moves) + 1):
        done = final_cp(board, chess.WHITE)
        if done is not None:
            evals.append(done)
        else:
            info = engine.analyse(board, limit, game=tag)
            evals.append(clipped_cp(info["score"], chess.WHITE))
        if i < len(moves):
            board.push(moves[i])
    quality = {chess.WHITE: PlayerQuality(), chess.BLACK: PlayerQuality()}
    losses: dict[chess.Color, list[float]] = {chess.WHITE: [], chess.BLACK: []}
    for i in range(len(moves)):
        color = first if i % 2 == 0 else not first
        sign = 1.0 if color == chess.WHITE else -1.0
        loss = max(0.0, sign * (evals[i] - evals[i + 1]))
        losses[color].append(loss)
    accuracy = game_accuracy(evals, first)
    for color, q in quality.items():
        ls = losses[color]
        q.moves = len(ls)
        q.acpl = sum(ls) / len(ls) if ls else 0.0
        q.accuracy = accuracy.get(color, 100.0)
        q.blunders = sum(loss >= cfg.blunder_cp for loss in ls)
        q.mistakes = sum(loss >= cfg.mistake_cp for loss in ls)
    return quality


# -- calibration ----------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Linear map from per-player quality features to Elo, with its held-out error."""

    coef: list[float]  # intercept, then one weight per FEATURES entry
    nodes: int  # node budget the features were measured with
    rmse: float  # held-out root mean squared error, Elo points
    mae: float  # held-out mean absolute error
    baseline_rmse: float  # held-out RMSE of always predicting the training mean
    n_train: int  # players (two per game) used for the fit
    n_test: int  # players held out
    source: str  # the file the fit used
    features: tuple[str, ...] = FEATURES
    engine: str = ""  # engine id name
    min_moves: int = 10

    def predict(self, player: PlayerQuality, opponent: PlayerQuality) -> int:
        x = [1.0, *features(player, opponent)]
        return int(round(sum(c * v for c, v in zip(self.coef, x))))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            d = json.loads(path.read_text())
            d["features"] = tuple(d["features"])
            cal = cls(**d)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise UserError(f"cannot read calibration {path}: {e}") from None
        if cal.features != FEATURES:
            raise UserError(f"calibration {path} uses features {cal.features}, this version needs {FEATURES}")
        return cal

    def format(self) -> str:
        return (f"engine Elo calibration ({self.nodes} nodes/position, fitted on {self.source}): "
                f"{self.n_train:,} players to fit, {self.n_test:,} held out; held-out RMSE {self.rmse:.0f}, "
                f"MAE {self.mae:.0f} Elo (predicting the mean: RMSE {self.baseline_rmse:.0f})")


def fit_calibration(rows: list[tuple[list[float], int]], *, nodes: int, source: str, engine: str = "",
                    test_share: float = 0.2, seed: int = 0, min_moves: int = 10) -> Calibration:
    """Least-squares fit of Elo on quality features; error measured on a held-out share of games.

    `rows` holds (features, elo) per player, two consecutive rows per game (kept together in the split).
    """
    if len(rows) < 20:
        raise UserError(f"calibration needs at least 10 rated games with {min_moves}+ moves each, got {len(rows) // 2}")
    games = list(range(len(rows) // 2))
    random.Random(seed).shuffle(games)
    n_test = max(1, int(len(games) * test_share))
    test_g, train_g = set(games[:n_test]), games[n_test:]
    train = [rows[2 * g + k] for g in train_g for k in (0, 1)]
    test = [rows[2 * g + k] for g in sorted(test_g) for k in (0, 1)]
    X = np.array([[1.0, *f] for f, _ in train])
    y = np.array([e for _, e in train], dtype=float)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    Xt = np.array([[1.0, *f] for f, _ in test])
    yt = np.array([e for _, e in test], dtype=float)
    err = Xt @ coef - yt
    return Calibration(coef=[float(c) for c in coef], nodes=nodes, rmse=float(np.sqrt(np.mean(err ** 2))),
                       mae=float(np.mean(np.abs(err))), baseline_rmse=float(np.sqrt(np.mean((yt - y.mean()) ** 2))),
                       n_train=len(train), n_test=len(test), source=source, engine=engine, min_moves=min_moves)


# -- reading and running ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    index: int
    text: str  # the game as PGN


def _tasks(path: Path, skip: set[int]) -> Iterator[_Task]:
    with open_text(path) as stream:
        for index, raw in enumerate(iter_games(stream)):
            if index in skip:
                continue
            head = "".join(f'[{k} "{_quote(v)}"]\n' for k, v in raw.headers.items())
            yield _Task(index, head + "\n" + raw.movetext + "\n\n")


def _quote(value: str) -> str:
    r"""A header value escaped for PGN.

    >>> print(_quote('say "hi"'))
    say \"hi\"
    """
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class _Done:
    index: int
    game: chess.pgn.Game | None
    quality: dict[chess.Color, PlayerQuality] | None
    skip: str | None  # why the game was skipped
    engine: str


class _Analyser:
    def __init__(self, engine_path: EngineCommand, cfg: LabelConfig) -> None:
        self.cfg = cfg
        self.engine = Engine(engine_path, hash_mb=cfg.hash_mb)

    def __enter__(self) -> _Analyser:
        self.engine.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()


def _analyse_task(state: _Analyser, task: _Task) -> _Done:
    game = chess.pgn.read_game(io.StringIO(task.text))
    if game is None:
        return _Done(task.index, None, None, "unreadable", "")
    if game.errors:
        return _Done(task.index, None, None, "illegal or unreadable move", "")
    if "Variant" in game.headers and game.headers["Variant"].lower() not in ("standard", "chess", ""):
        return _Done(task.index, None, None, "non-standard variant", "")
    if game.end().ply() - game.ply() == 0:
        return _Done(task.index, None, None, "no moves", "")
    for attempt in range(3):  # the Engine restarts itself; a game is retried whole on a failure
        try:
            return _Done(task.index, game, analyse_game(state.engine, game, state.cfg), None, state.engine.name)
        except EngineFailure as e:
            log.warning("game %d: %s; retrying", task.index, e)
            state.engine.restart()
    return _Done(task.index, None, None, "engine failure", "")


def _tag_game(game: chess.pgn.Game, quality: dict[chess.Color, PlayerQuality], cfg: LabelConfig,
              calibration: Calibration | None, index: int) -> str:
    h = game.headers
    for color, prefix in ((chess.WHITE, "White"), (chess.BLACK, "Black")):
        q = quality[color]
        h[f"{prefix}ACPL"] = f"{q.acpl:.1f}"
        h[f"{prefix}Accuracy"] = f"{q.accuracy:.1f}"
        h[f"{prefix}Blunders"] = str(q.blunders)
        if calibration is not None and q.moves >= calibration.min_moves:
            h[f"{prefix}EngineElo"] = str(calibration.predict(q, quality[not color]))
    h["EngineLabel"] = f"nodes={cfg.nodes} blunder={cfg.blunder_cp}cp"
    h[INDEX_TAG] = str(index)
    return str(game) + "\n\n"


@dataclass
class LabelSummary:
    labeled: int = 0  # games labeled by this run
    total: int = 0  # games in the output now
    skipped: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    seconds: float = 0.0
    out: str = ""

    def format(self) -> str:
        rate = 60.0 * self.labeled / max(self.seconds, 1e-9)
        lines = [f"wrote {self.out}: {self.labeled:,} games labeled ({rate:,.0f} games/min), {self.total:,} in the file"]
        if self.skipped:
            lines.append("skipped: " + ", ".join(f"{k} {v:,}" for k, v in self.skipped.most_common()))
        return "\n".join(lines)


def _workers(workers: int) -> int:
    return workers or os.cpu_count() or 1


def label(path: Path, out: Path, engine_path: EngineCommand, cfg: LabelConfig, *,
          calibration: Path | None = None, workers: int = 0, flush_every: int = 50,
          progress: bool = True) -> LabelSummary:
    """Write `path`'s games to `out` with quality tags (and engine Elo if a calibration is given)."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    cal = Calibration.load(calibration) if calibration is not None else None
    if cal is not None and cal.nodes != cfg.nodes:
        raise UserError(f"calibration {calibration} was fitted at {cal.nodes} nodes/position; "
                        f"label with --nodes {cal.nodes} (or fit a new one)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_beside(out, f"games output {out}"):  # two runs would label and append the same games
        return _label(path, out, engine_path, cfg, cal, workers, flush_every, progress)


def _label(path: Path, out: Path, engine_path: EngineCommand, cfg: LabelConfig, cal: Calibration | None,
           workers: int, flush_every: int, progress: bool) -> LabelSummary:
    done = {int(i) for i in _INDEX_RE.findall(repair(out))}
    summary = LabelSummary(total=len(done), out=str(out))
    writer = FramedWriter(out)
    start = time.monotonic()
    bar = tqdm(unit="game", disable=not progress, desc="label", initial=len(done))
    try:
        setup = functools.partial(_Analyser, engine_path, cfg)
        for result in imap_stateful(setup, _analyse_task, _tasks(path, done), _workers(workers)):
            bar.update(1)
            if result.skip is not None:
                summary.skipped[result.skip] += 1
                continue
            assert result.game is not None and result.quality is not None
            writer.add(_tag_game(result.game, result.quality, cfg, cal, result.index))
            summary.labeled += 1
            summary.total += 1
            if len(writer.buffer) >= flush_every:
                writer.flush()
    finally:
        writer.flush()
        bar.close()
    summary.seconds = time.monotonic() - start
    return summary


def calibrate(path: Path, out: Path, engine_path: EngineCommand, cfg: LabelConfig, *, games: int = 1000,
              workers: int = 0, seed: int = 0, progress: bool = True,
              rows_out: Path | None = None) -> Calibration:
    """Fit the engine-Elo calibration on up to `games` games of `path` with both Elo tags; save it to `out`."""
    if not path.exists():
        raise UserError(f"{path}: no such file")

    def rated() -> Iterator[_Task]:
        n = 0
        for task in _tasks(path, set()):
            if n >= games:
                return
            head = task.text[:task.text.find("\n\n")]
            w = parse_rating(_tag(head, "WhiteElo"))
            b = parse_rating(_tag(head, "BlackElo"))
            if w is not None and b is not None:
                n += 1
                yield task

    rows: list[tuple[list[float], int]] = []
    name = ""
    setup = functools.partial(_Analyser, engine_path, cfg)
    for result in tqdm(imap_stateful(setup, _analyse_task, rated(), _workers(workers)), total=games,
                       unit="game", desc="calibrate", disable=not progress):
        if result.game is None or result.quality is None:
            continue
        q = result.quality
        if min(q[chess.WHITE].moves, q[chess.BLACK].moves) < cfg.min_moves:
            continue
        name = result.engine
        h = result.game.headers
        rows.append((features(q[chess.WHITE], q[chess.BLACK]), int(parse_rating(h["WhiteElo"]) or 0)))
        rows.append((features(q[chess.BLACK], q[chess.WHITE]), int(parse_rating(h["BlackElo"]) or 0)))
    if rows_out is not None:  # the measured features, so a new fit needs no new analysis
        rows_out.parent.mkdir(parents=True, exist_ok=True)
        rows_out.write_text(json.dumps({"features": FEATURES, "nodes": cfg.nodes, "rows": rows}) + "\n")
    fit = fit_calibration(rows, nodes=cfg.nodes, source=path.name, engine=name, seed=seed, min_moves=cfg.min_moves)
    fit.save(out)
    return fit


def _tag(head: str, key: str) -> str | None:
    m = re.search(rf'^\[{key} "([^"]*)"\]', head, re.M)
    return m.group(1) if m else None
