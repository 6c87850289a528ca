"""Is the value head calibrated? Its win/draw/loss forecasts against held-out games' results.

Every position of a held-out game with a known result (teacher-forced, the game under its own
players' ratings, up to the model's context) gets the value head's forecast for the side to move;
the outcome is the game's result from that side. Reported:

* Brier score, 3-class: sum over win/draw/loss of (forecast - outcome)^2, averaged over positions
  (0 is perfect, 2 is certainly wrong; forecasting 1/3 each scores 2/3); and the log loss;
* the same for two references: **base rates** (the data's win/draw/loss shares, one forecast for
  White to move and one for Black to move; from the training split when the games come from a
  prepared set, else from the held-out games themselves, which flatters the baseline), and the
  **start forecast** (the model's own forecast before the first move, held for the whole game:
  what the prompted ratings alone tell it);
* the differences with 95% intervals from a bootstrap over games (positions of one game are not
  independent);
* a reliability table: positions binned by forecast expected score (W + D/2), mean forecast
  against the mean actual score in each bin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import numpy as np
import torch

from chessdt.config import EvalConfig
from chessdt.evals.heldout import HeldOutGame, teacher_forced
from chessdt.evals.results import JsonResult, fmt
from chessdt.metrics import percentile_interval, resample
from chessdt.play.policy import ModelPolicy
from chessdt.rules import result_class

BINS = 10  # reliability bins of width 0.1 in expected score
PER_MOVER = 2  # base rates are kept apart for White to move and Black to move


@dataclass(frozen=True)
class Score:
    """One forecaster's mean scores over the held-out positions, its Brier score with a 95% interval."""

    name: str
    brier: float
    brier_lo: float
    brier_hi: float
    log_loss: float
    minus_model_lo: float = math.nan  # 95% interval of (this forecaster's Brier - the model's): > 0 = model better
    minus_model_hi: float = math.nan


@dataclass(frozen=True)
class ReliabilityBin:
    """Positions whose forecast expected score fell in [lo, hi)."""

    lo: float
    hi: float
    positions: int
    forecast: float  # mean forecast expected score (W + D/2)
    actual: float  # mean actual score of the side to move (1 win, 0.5 draw, 0 loss)


@dataclass(frozen=True)
class ValueResult(JsonResult):
    games: int  # held-out games with a known result
    positions: int  # positions forecast
    model: Score
    baselines: tuple[Score, ...]  # base rates, start forecast
    base_rates: dict[str, tuple[float, float, float]]  # 'white'/'black' to move -> W/D/L shares
    base_rates_from: str  # where the base rates were counted
    outcomes: tuple[int, int, int]  # positions whose side to move went on to win, draw, lose
    reliability: tuple[ReliabilityBin, ...]
    bootstrap: int  # resamples of the games behind each interval

    def format(self) -> str:
        """Markdown: the scores, then the reliability table."""
        w, d, loss = self.outcomes
        lines = [f"Held-out positions: {self.positions:,} from {self.games:,} games with a result "
                 f"(side to move went on to win {w:,}, draw {d:,}, lose {loss:,}). Base rates from "
                 f"{self.base_rates_from}. Intervals: 95%, bootstrap over games ({self.bootstrap:,} resamples).",
                 "", "| forecaster | Brier (3-class) | 95% interval | log loss | its Brier - model's (95%) |",
                 "|---|---:|---:|---:|---:|"]
        for s in (self.model, *self.baselines):
            diff = ("-" if math.isnan(s.minus_model_lo)
                    else f"{s.minus_model_lo:+.4f} .. {s.minus_model_hi:+.4f}")
            lines.append(f"| {s.name} | {fmt(s.brier, 4)} | {fmt(s.brier_lo, 4)} .. {fmt(s.brier_hi, 4)} | "
                         f"{fmt(s.log_loss, 4)} | {diff} |")
        lines += ["", "Reliability (forecast expected score W + D/2 of the side to move vs its actual score):", "",
                  "| forecast bin | positions | mean forecast | actual score |", "|---|---:|---:|---:|"]
        for b in self.reliability:
            if b.positions:
                lines.append(f"| {b.lo:.1f}-{b.hi:.1f} | {b.positions:,} | {fmt(b.forecast, 3)} | {fmt(b.actual, 3)} |")
        return "\n".join(lines)


def _triple(x: np.ndarray) -> tuple[float, float, float]:
    return float(x[0]), float(x[1]), float(x[2])


def _brier(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N,) 3-class Brier scores of forecasts p (N, 3) for outcome classes y (N,)."""
    onehot = np.eye(3)[y]
    return ((p - onehot) ** 2).sum(1)


def _log_loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))


@dataclass(frozen=True)
class BaseRates:
    """W/D/L shares over positions, for White to move (row 0) and Black to move (row 1), and their source."""

    rates: np.ndarray  # (2, 3)
    source: str


def count_rates(counts: np.ndarray, source: str) -> BaseRates:
    """Base rates from (2, 3) position counts."""
    return BaseRates(counts / np.maximum(counts.sum(1, keepdims=True), 1), source)


def base_rates(games: Sequence[HeldOutGame], plies: Sequence[int], source: str) -> BaseRates:
    """Base rates over positions of `games`: game i counts for its first plies[i] positions."""
    counts = np.zeros((PER_MOVER, 3))
    for g, n in zip(games, plies):
        if g.result is not None:
            for mover, row in ((chess.WHITE, 0), (chess.BLACK, 1)):
                counts[row, result_class(g.result, mover)] += (n + 1) // 2 if mover == chess.WHITE else n // 2
    return count_rates(counts, source)


def prepared_base_rates(path: Path, max_positions: int) -> BaseRates | None:
    """Base rates of a prepared set's training split (each game counting its first `max_positions`
    positions, as the model scores them); None when `path` is not a prepared set with results."""
    from chessdt.data.shards import PreparedData

    if not (Path(path) / "meta.json").is_file():
        return None
    data = PreparedData.open(path)
    split = data.splits["train"]
    if split.results is None:
        return None
    moves = np.minimum(np.diff(split.offsets) - data.prefix_len - 1, max_positions)  # less <end>
    known = split.results >= 0
    white = split.results[known].astype(np.int64)
    n = moves[known]
    counts = np.zeros((PER_MOVER, 3))
    np.add.at(counts[0], white, (n + 1) // 2)  # White to move: White's class
    np.add.at(counts[1], 2 - white, n // 2)  # Black to move: the class seen from Black
    return count_rates(counts, f"the training split of {path} ({int(known.sum()):,} games)")


def evaluate_value(policy: ModelPolicy, games: Sequence[HeldOutGame], cfg: EvalConfig, out_path: Path | None = None,
                   rates: BaseRates | None = None) -> ValueResult:
    """The value head's calibration on `games` (those with a known result); see the module doc.

    `rates` are the base-rate baseline (:func:`prepared_base_rates`); without them the held-out games
    give it, in-sample.
    """
    if not policy.has_value:
        raise ValueError(f"{policy.model_id} has no value head (model.value_head = false)")
    games = [g for g in games if g.result is not None and g.moves][: cfg.value_games]
    if not games:
        raise ValueError("no held-out game with a known result to measure the value head on")
    prompts = [policy.prompt(g.white, g.black) for g in games]
    forecasts: list[np.ndarray] = [np.zeros((0, 3))] * len(games)
    for i, _, value in teacher_forced(policy, games, prompts, cfg.batch_size, with_value=True):
        assert value is not None
        forecasts[i] = torch.softmax(value, dim=-1).numpy().astype(np.float64)
    if rates is None:
        rates = base_rates(games, [len(f) for f in forecasts],
                           "the held-out games themselves (in-sample: flatters the baseline)")
    # per position: outcome class, the model's, the base rates' and the start forecast
    ys, model_p, base_p, start_p, game_of = [], [], [], [], []
    for gi, (g, f) in enumerate(zip(games, forecasts)):
        assert g.result is not None
        movers = np.arange(len(f)) % 2  # 0: White to move
        ys.append(np.array([result_class(g.result, chess.WHITE if m == 0 else chess.BLACK) for m in movers]))
        model_p.append(f)
        base_p.append(rates.rates[movers])
        # the start forecast is White's; for Black to move it is the same forecast seen from the other side
        start = f[0]
        start_p.append(np.where(movers[:, None] == 0, start[None, :], start[None, ::-1]))
        game_of.append(np.full(len(f), gi))
    y = np.concatenate(ys)
    game_idx = np.concatenate(game_of)
    scored = {"model": np.concatenate(model_p), "base rates": np.concatenate(base_p),
              "start forecast": np.concatenate(start_p)}
    briers = {k: _brier(p, y) for k, p in scored.items()}
    # per-game sums, for the bootstrap over games
    n_games = len(games)
    count = np.bincount(game_idx, minlength=n_games).astype(np.float64)
    sums = {k: np.bincount(game_idx, weights=b, minlength=n_games) for k, b in briers.items()}
    draws = resample(n_games, cfg.value_bootstrap, cfg.seed)
    boot_n = count[draws].sum(1)
    boot = {k: s[draws].sum(1) / boot_n for k, s in sums.items()}

    def score(name: str) -> Score:
        lo, hi = percentile_interval(boot[name])
        d_lo, d_hi = (math.nan, math.nan) if name == "model" else percentile_interval(boot[name] - boot["model"])
        return Score(name=name, brier=float(briers[name].mean()), brier_lo=lo, brier_hi=hi,
                     log_loss=float(_log_loss(scored[name], y).mean()), minus_model_lo=d_lo, minus_model_hi=d_hi)

    p = scored["model"]
    expected = p[:, 0] + p[:, 1] / 2
    actual = np.array([1.0, 0.5, 0.0])[y]
    which = np.minimum((expected * BINS).astype(int), BINS - 1)
    bins = []
    for b in range(BINS):
        sel = which == b
        n = int(sel.sum())
        bins.append(ReliabilityBin(lo=b / BINS, hi=(b + 1) / BINS, positions=n,
                                   forecast=float(expected[sel].mean()) if n else math.nan,
                                   actual=float(actual[sel].mean()) if n else math.nan))
    result = ValueResult(
        games=n_games, positions=len(y), model=score("model"),
        baselines=(score("base rates"), score("start forecast")),
        base_rates={"white": _triple(rates.rates[0]), "black": _triple(rates.rates[1])}, base_rates_from=rates.source,
        outcomes=(int((y == 0).sum()), int((y == 1).sum()), int((y == 2).sum())),
        reliability=tuple(bins), bootstrap=cfg.value_bootstrap)
    if out_path is not None:
        result.save(out_path)
    return result
