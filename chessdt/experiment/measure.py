"""Measuring the frontier's settings: strength against the reference, variety, and the rater's view.

Strength: every setting plays `match_games` games against the reference (paired openings, both
colours; adjudicated by the referee when [eval] has one). Variety: self-play openings, and the exact
per-position distributions on held-out positions whose every legal move Stockfish scored. The rater:
on the same match games, the learned rater's expected score of the setting's side at the RL horizon
(rl.max_plies, or the game's end), beside the referee's expected score of the same position; the gap
is how far the rater overrates the setting's play (its blind spots, which RL against it may find).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chess
import chess.engine
import numpy as np

from chessdt.config import Config
from chessdt.evals.heldout import HeldOutGame, band_of
from chessdt.evals.variety import (Estimate, LineVariety, PositionVariety, ScoredPosition, line_variety,
                                   model_distribution, position_values, position_variety, quantilizer_distribution,
                                   sample_positions, score_position)
from chessdt.experiment.arms import ArmSetting
from chessdt.metrics import elo_difference, js_divergence, mean_interval, paired_score, resample
from chessdt.play.arena import GameSpec, Seat, run_games
from chessdt.play.gamelog import GameRecord
from chessdt.play.policy import Prompted
from chessdt.rater import Rater
from chessdt.rules import opening_lines, white_score

log = logging.getLogger(__name__)

REFERENCE = "reference"


@dataclass(frozen=True)
class Point:
    """One arm setting, measured."""

    arm: str
    label: str
    setting: str
    elo: Estimate  # against the reference
    games: int
    score: float
    lines: tuple[LineVariety, ...]  # per k in variety_plies
    positions: PositionVariety
    kl_from_reference: float | None  # mean KL(setting || reference) in bits over the held-out positions
    js_from_band: float | None  # JS divergence (bits) of first-k lines from the data's games at the prompted rating
    js_from_top: float | None  # the same from the data's games at the top rating
    # the learned rater (the base's value head) and the referee on the same match games, at the RL horizon:
    rater: Estimate | None = None  # the rater's expected score of this setting's side
    referee: Estimate | None = None  # the referee's (Stockfish's) expected score of the same positions
    exploit: Estimate | None = None  # rater - referee, per game: how much the rater overrates this setting's play
    group: str = ""  # the setting without its seed (RL)
    seed: int | None = None


def kl_bits(p: dict[chess.Move, float], q: dict[chess.Move, float], floor: float = 1e-12) -> float:
    """KL(p || q) in bits between two move distributions ({move: probability}); rounding below 0 is 0."""
    return max(0.0, sum(v * math.log2(v / max(q.get(m, 0.0), floor)) for m, v in p.items() if v > 0))


def measure(cfg: Config, reference: Prompted, arms: Sequence[ArmSetting], games: Sequence[HeldOutGame],
            out: Path, progress: bool,
            rater: Rater | None = None) -> tuple[list[Point], dict[str, Any], list[dict[str, Any]]]:
    """Play and measure every setting; returns the points, the bootstrap draws for the frontier and
    the RL settings' blind spots of the rater (positions it overrates most)."""
    from chessdt.evals.match import Outcome, pair_results, pair_specs
    from chessdt.stockfish.engine import Engine, find_stockfish
    from chessdt.stockfish.referee import open_referee, referee_rule

    ex = cfg.experiment
    out.mkdir(parents=True, exist_ok=True)
    seats: dict[str, Seat] = {REFERENCE: reference, **{a.label: a.seat for a in arms}}
    # strength: every setting against the reference
    lines2 = opening_lines(2)
    specs = [g for a in arms for g in pair_specs(REFERENCE, a.label, range(ex.match_games // 2), lines2, ex.seed)]
    log.info("strength: %d games", len(specs))
    rule = referee_rule(cfg.eval)
    meta = {"kind": "experiment-matches", **({"referee": rule.spec} if rule is not None else {})}
    with open_referee(cfg.eval) as referee:
        records = run_games(specs, seats, out / "matches.jsonl", meta=meta, batch_size=ex.batch_size,
                            workers=cfg.eval.workers, max_plies=ex.max_plies, progress=progress, referee=referee)
    # with a referee the frontier's strength is adjudicated (who plays better, not who can finish)
    outcome: Outcome = "adjudicated" if rule is not None else "as played"
    # variety: self-play openings
    plies = max(ex.variety_plies)
    variety_specs = [GameSpec(id=f"{x}|v{i}", white=x, black=x, seed=ex.seed)
                     for x in [REFERENCE, *(a.label for a in arms)] for i in range(ex.variety_games)]
    openings = run_games(variety_specs, seats, out / "openings.jsonl", meta={"kind": "experiment-openings"},
                         batch_size=max(ex.batch_size, ex.variety_games), workers=cfg.eval.workers,
                         max_plies=plies, progress=progress)
    lines: dict[str, list[tuple[str, ...]]] = {}
    for spec, rec in zip(variety_specs, openings):
        lines.setdefault(spec.white, []).append(rec.line())
    # positions: every legal move scored once
    positions = _scored_positions(cfg, games, out / "positions.json", Engine(find_stockfish(cfg.eval.engine or None)))
    width = cfg.eval.band_width
    rng_seed = ex.seed
    points: list[Point] = []
    draws: dict[str, dict[str, np.ndarray]] = {}
    spots: list[dict[str, Any]] = []
    reference_dists = [model_distribution(reference, p.board) for p in positions]
    rung_dists = _rung_distributions(cfg, arms, positions)
    horizon = rater.horizon(cfg.rl.max_plies) if rater is not None else cfg.rl.max_plies
    ref_arm = ArmSetting("reference", REFERENCE, ex.reference, reference, reference)
    for a in [ref_arm, *arms]:
        label, model = a.label, a.model
        if label == REFERENCE:
            elo, elo_draws, n, score = Estimate(0.0, 0.0, 0.0), np.zeros(ex.bootstrap), 0, 0.5
        else:
            pairs = pair_results(records, REFERENCE, label, outcome)
            s = paired_score(pairs)
            elo_draws = _elo_draws(pairs, ex.bootstrap, rng_seed)
            elo, n, score = Estimate(_elo(s.score), _elo(s.lo), _elo(s.hi)), s.games, s.score
        variety = [line_variety(lines[label], k, ex.bootstrap, rng_seed) for k in ex.variety_plies]
        if a.rung is not None:
            dists = rung_dists[label]
        elif model is not None:
            dists = reference_dists if model is reference else [model_distribution(model, p.board) for p in positions]
        else:
            dists = [quantilizer_distribution(d, p.scores, ex.quantilizer_k, a.q, seed=rng_seed + i)
                     for i, (d, p) in enumerate(zip(reference_dists, positions))]
        pv, pv_draws = position_variety(position_values(dists, positions, ex.good_cp), positions, ex.good_cp,
                                        ex.bootstrap, rng_seed)
        frontier_k = ex.variety_plies.index(ex.frontier_plies)
        kl = float(np.mean([kl_bits(d, r) for d, r in zip(dists, reference_dists)])) if positions else None
        own = Counter(tuple(x[: ex.frontier_plies]) for x in lines[label] if len(x) >= ex.frontier_plies)
        rating = model.rating if model is not None else a.rung.rating if a.rung is not None else reference.rating

        def js(center: int | None) -> float | None:
            data = _data_lines(games, ex.frontier_plies, center, width)
            return js_divergence(own, data) if own and data else None

        mine = [r for r in records if r.decided and label in (r.white, r.black) and REFERENCE in (r.white, r.black)]
        judged = horizon_judgements(mine, label, rater, horizon) if rater is not None and label != REFERENCE else None
        rated, refereed, exploit = (None, None, None) if judged is None else _judged_estimates(judged)
        points.append(Point(a.arm, label, a.setting, elo, n, score, tuple(v for v, _ in variety), pv, kl,
                            js(rating) if rating is not None else None, js(None), rater=rated, referee=refereed,
                            exploit=exploit, group=a.group or a.setting, seed=a.seed))
        draws[label] = {"elo": elo_draws, "line_entropy": variety[frontier_k][1], "position_entropy": pv_draws[:, 0],
                        "good_mass": pv_draws[:, 1], "good_entropy": pv_draws[:, 2], "cp_loss": pv_draws[:, 3]}
        if judged is not None and a.arm.startswith("rl-"):
            spots.extend(blind_spots(judged, label, SPOTS))
    spots.sort(key=lambda x: -x["gap"])
    return points, draws, spots


SPOTS = 5  # blind spots kept per RL setting


@dataclass(frozen=True)
class Judged:
    """One match game at the horizon, as the rater and the referee see it from the rated side."""

    record: GameRecord
    ply: int  # the position judged: after this many plies (the horizon, or the game's end)
    rater: float  # the rater's expected score
    referee: float  # the referee's expected score (the result where the rules ended the game; nan unwatched)
    referee_cp: int | None


def horizon_judgements(records: Sequence[GameRecord], label: str, rater: Rater, horizon: int) -> list[Judged]:
    """Each game's position at the horizon judged by the rater and by the referee's stored score, from
    `label`'s side."""
    games, colors = [], []
    for r in records:
        color = chess.WHITE if r.white == label else chess.BLACK
        games.append((list(r.game().mainline_moves()), color))
        colors.append(color)
    rated = rater.scores(games, horizon)
    out = []
    for r, (moves, color), x in zip(records, games, rated):
        ply = min(len(moves), horizon)
        cp = r.referee[ply - 1] if 0 < ply <= len(r.referee) else None
        pov: int | None = None
        if ply == len(moves) and r.termination not in ("adjudication", "move_limit"):  # the rules ended it: the truth
            white = white_score(r.result)
            ref = white if color == chess.WHITE else 1.0 - white
        elif cp is not None:
            pov = cp if color == chess.WHITE else -cp
            ref = chess.engine.Cp(pov).wdl(model="sf15.1", ply=ply).expectation()
        else:
            ref = math.nan
        out.append(Judged(r, ply, float(x), float(ref), pov))
    return out


def _judged_estimates(judged: Sequence[Judged]) -> tuple[Estimate, Estimate | None, Estimate | None]:
    rater = Estimate(*mean_interval([j.rater for j in judged]))
    refereed = [j for j in judged if math.isfinite(j.referee)]
    if not refereed:
        return rater, None, None
    return (rater, Estimate(*mean_interval([j.referee for j in refereed])),
            Estimate(*mean_interval([j.rater - j.referee for j in refereed])))


def blind_spots(judged: Sequence[Judged], label: str, n: int) -> list[dict[str, Any]]:
    """The `n` positions the rater overrates most for `label` (rater - referee expected score)."""
    out = []
    for j in sorted((j for j in judged if math.isfinite(j.referee)), key=lambda j: j.referee - j.rater)[:n]:
        board = chess.Board()
        for m in list(j.record.game().mainline_moves())[: j.ply]:
            board.push(m)
        out.append({"label": label, "game": j.record.id, "ply": j.ply, "fen": board.fen(), "rater": j.rater,
                    "referee": j.referee, "referee_cp": j.referee_cp, "gap": j.rater - j.referee,
                    "result": j.record.result})
    return out


def _rung_distributions(cfg: Config, arms: Sequence[ArmSetting],
                        positions: Sequence[ScoredPosition]) -> dict[str, list[dict[chess.Move, float]]]:
    """Each rung's exact policy on the held-out positions (Stockfish at the rung's own node budget)."""
    from chessdt.stockfish.engine import Engine, find_stockfish
    from chessdt.stockfish.softmax import DEFAULT_LINE_NODES, rung_policy

    rungs = [a for a in arms if a.rung is not None]
    if not rungs:
        return {}
    out: dict[str, list[dict[chess.Move, float]]] = {}
    with Engine(find_stockfish(cfg.eval.engine or None)) as engine:
        for a in rungs:
            assert a.rung is not None
            out[a.label] = [rung_policy(engine, p.board, a.rung.strength, a.rung.nodes or DEFAULT_LINE_NODES) for p in positions]
    return out


def _elo(score: float) -> float:
    """The Elo difference at a score, a score of 0 or 1 clipped to 0.001 or 0.999 (+-1200 Elo)."""
    return elo_difference(float(np.clip(score, 1e-3, 1 - 1e-3))) if math.isfinite(score) else math.nan


def _elo_draws(pairs: Sequence[Sequence[float]], samples: int, seed: int) -> np.ndarray:
    """Bootstrap draws of the Elo difference, resampling game pairs."""
    scores = [float(np.mean(p)) for p in pairs if len(p)]
    weights = [len(p) for p in pairs if len(p)]
    if not scores:
        return np.full(samples, np.nan)
    s, w = np.array(scores), np.array(weights, dtype=float)
    return np.array([_elo(float((s[idx] * w[idx]).sum() / w[idx].sum())) for idx in resample(len(s), samples, seed)])


def _scored_positions(cfg: Config, games: Sequence[HeldOutGame], path: Path, engine: Any) -> list[ScoredPosition]:
    """The held-out positions with every legal move scored (cached in `path`)."""
    ex = cfg.experiment
    boards = sample_positions(games, ex.positions, ex.seed)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("nodes") == ex.position_nodes and len(saved["positions"]) == len(boards):
            return [ScoredPosition(b, {chess.Move.from_uci(m): float(v) for m, v in s.items()})
                    for b, s in zip(boards, saved["positions"])]
    with engine:
        scored = [score_position(engine, b, ex.position_nodes) for b in boards]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"nodes": ex.position_nodes,
                               "positions": [{m.uci(): v for m, v in p.scores.items()} for p in scored]}))
    tmp.replace(path)
    return scored


def _data_lines(games: Sequence[HeldOutGame], k: int, center: int | None, width: int) -> Counter[tuple[str, ...]]:
    """First-k-ply lines of the held-out data games whose players' mean rating lies in the band around
    `center` (None: whose players both hold the top rating among them)."""
    rated = [(g, g.white, g.black) for g in games if g.white is not None and g.black is not None]
    if not rated:
        return Counter()
    if center is None:
        top = max(min(w, b) for _, w, b in rated)
        keep = [g for g, w, b in rated if min(w, b) >= top]
    else:
        keep = [g for g, _, _ in rated if band_of(g.mean_rating, center, width)]
    return Counter(tuple(m.uci() for m in g.moves[:k]) for g in keep if len(g.moves) >= k)


