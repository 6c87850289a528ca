"""How strong is the model at each prompted rating, and does it play like humans of that rating?

Three measurements, each a library function over :class:`~chessdt.evals.subject.Subject` s:

1. :func:`play_ladder`: every subject plays every opponent of a ladder (Stockfish at nominal
   UCI_Elo rungs, Stockfish Skill Level 0, a random mover) `ladder_games` times: each opening
   line of a fixed list is played once with each colour (paired openings), and neighbouring
   opponents also play each other (`calibration_games`) so that the unanchored ones (random,
   Skill Level 0) are tied to the scale. One maximum-likelihood Elo fit over all games, with the
   UCI_Elo rungs fixed at their nominal ratings, gives each subject a measured Elo with a 95%
   interval; Spearman correlation and slope of measured vs prompted rating summarise it. Games
   stream to a JSONL log, so an interrupted run resumes. Nominal means nominal: at a fixed node
   budget Stockfish's UCI_Elo is not calibrated (`chessdt games ladder` shows how far off it is),
   so read the scale as "Stockfish-ladder Elo", comparable between models and prompts.
2. :func:`move_matching` (Maia's protocol): on held-out human games, first `skip_plies` plies
   dropped, top-1 agreement of the raw model with the move played, as a matrix of prompted
   rating x the mover's actual rating band (the band around each prompted rating), n per cell.
3. :func:`centipawn_loss`: on held-out positions, the centipawns the subject's move loses
   against Stockfish's best at a fixed node budget, per prompted rating (a cheap proxy).
"""

from __future__ import annotations

import math
from typing import Any
import random
import statistics
from collections import Counter
from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import chess
import chess.engine
import torch

from chessdt.play.arena import GameSpec, Seat, run_games
from chessdt.rules import Opponent
from chessdt.play.opponents import seat_for
from chessdt.play.gamelog import GameRecord
from chessdt.config import EvalConfig
from chessdt.stockfish.engine import Engine, EngineFailure, find_stockfish
from chessdt.errors import UserError
from chessdt.rules import CP_CAP, clipped_cp, final_cp, opening_lines, white_score
from chessdt.evals.results import JsonResult, fmt, jsonable
from chessdt.evals.subject import Subject, sampling_of
from chessdt.evals.heldout import HeldOutGame, band_label, band_of, guided_logits, teacher_forced_logits
from chessdt.evals.match import MatchResult, Setting, play_match
from chessdt.metrics import EloFit, fit_elo, mean_interval, slope, spearman
from chessdt.play.players import StockfishPlayer
from chessdt.play.policy import ModelPolicy, MoveStats
from chessdt.stockfish.referee import open_referee, referee_rule

# A subject is measured where it meets opponents near its own strength: a score of 20-80% against
# at least two of them; outside that its rating rests on one lopsided result or on extrapolation.
BRACKET = (0.2, 0.8)
BLUNDER_CP = 300  # a move losing at least this much counts as a blunder



# -- 1. ladder matches and the Elo fit ------------------------------------------------------------------------
@dataclass(frozen=True)
class SubjectRow:
    """A subject's measured strength."""

    label: str
    prompted: int | None  # prompted rating (None for a subject without one)
    elo: float  # measured Elo on the ladder's scale
    lo: float  # 95% interval
    hi: float
    games: int  # decided games (aborted ones are left out)
    score: float  # share of points over them
    scores: dict[str, float]  # share of points against each opponent
    illegal_per_game: float  # raw illegal attempts per game (0 by construction when masked)
    masked: bool  # whether it sampled with illegal moves masked
    bracketed: int = 0  # opponents it scored between BRACKET[0] and BRACKET[1] against (>= 2: bracketed)
    elo_adjudicated: float = math.nan  # with a referee: the same fit with every verdict of its rule standing
    adjudicated_lo: float = math.nan
    adjudicated_hi: float = math.nan


@dataclass(frozen=True)
class OpponentRow:
    label: str
    spec: str
    anchored: bool  # its nominal UCI_Elo is fixed in the fit
    elo: float  # nominal (anchored) or fitted
    lo: float
    hi: float


@dataclass(frozen=True)
class LadderResult:
    subjects: tuple[SubjectRow, ...]
    opponents: tuple[OpponentRow, ...]
    spearman: float  # rank correlation of measured vs prompted Elo
    slope: float  # least-squares slope of measured on prompted Elo (1 = perfectly calibrated steps)
    games: int  # decided games in the fit (calibration games included)
    aborted: int  # games ended by an engine failure (left out of the fit)
    engine_restarts: int  # engine processes replaced after a crash or hang
    move_limit_draws: int  # games adjudicated drawn at max_plies
    nodes: int  # Stockfish node budget per move
    virtual_draws: float


def ladder_specs(subjects: Sequence[Subject], opponents: Sequence[Opponent], cfg: EvalConfig) -> list[GameSpec]:
    """The games of a ladder run: subjects x opponents x paired openings, then calibration games."""
    lines = opening_lines(cfg.opening_plies)
    pairs = cfg.ladder_games // 2
    specs = []
    for s in subjects:
        for oi, o in enumerate(opponents):
            for g in range(cfg.ladder_games):
                k = (oi * pairs + g // 2) % len(lines)
                white = g % 2 == 0
                specs.append(GameSpec(
                    id=f"{s.label}|{o.label}|{g}", white=s.label if white else o.label,
                    black=o.label if white else s.label, opening=lines[k], seed=cfg.seed,
                    tags={"subject": s.label, "prompted": s.rating, "opponent": o.label,
                          "subject_color": "white" if white else "black", "opening": k}))
    for a, b in zip(opponents, opponents[1:]):
        for g in range(cfg.calibration_games):
            k = g // 2 % len(lines)
            w, bl = (a, b) if g % 2 == 0 else (b, a)
            specs.append(GameSpec(id=f"calibration|{a.label}|{b.label}|{g}", white=w.label, black=bl.label,
                                  opening=lines[k], seed=cfg.seed, tags={"calibration": True, "opening": k}))
    return specs


def _subject_meta(s: Subject) -> dict[str, Any]:
    if s.policy is not None:
        return {"label": s.label, "model": s.policy.model_id, "rating": s.rating, "sampling": jsonable(s.sampling)}
    return {"label": s.label, "rating": s.rating}


def play_ladder(subjects: Sequence[Subject], cfg: EvalConfig, out: Path | None = None, *,
                engine: str | Path | None = None, timeout_s: float = 30.0, progress: bool = False) -> LadderResult:
    """Play (or resume) the ladder games into the JSONL log `out` and fit Elo over them."""
    opponents = [Opponent.parse(spec) for spec in cfg.ladder]
    anchors = {o.label: float(o.elo) for o in opponents if o.elo is not None}
    if not anchors:
        raise UserError("eval.ladder needs at least one UCI_Elo rung (e.g. '1350') to anchor the Elo scale")
    labels = [s.label for s in subjects] + [o.label for o in opponents]
    if len(set(labels)) != len(labels):
        raise UserError("subject and opponent labels must be distinct")
    seats: dict[str, Seat] = {s.label: s.seat for s in subjects}
    for o in opponents:
        seats[o.label] = seat_for(o, engine or None, nodes=cfg.ladder_nodes, timeout_s=timeout_s)
    meta = {"kind": "strength-ladder", "subjects": [_subject_meta(s) for s in subjects], "ladder": list(cfg.ladder),
            "nodes": cfg.ladder_nodes, "max_plies": cfg.max_plies, "opening_plies": cfg.opening_plies,
            "seed": cfg.seed}
    rule = referee_rule(cfg)
    if rule is not None:
        meta["referee"] = rule.spec
    with open_referee(cfg) as referee:
        records = run_games(ladder_specs(subjects, opponents, cfg), seats, out, meta=meta, batch_size=cfg.batch_size,
                            workers=cfg.workers, max_plies=cfg.max_plies, progress=progress, referee=referee)
    if records and not any(r.decided for r in records):
        why = Counter(r.termination for r in records).most_common()
        raise UserError(f"all {len(records)} ladder games were aborted ({', '.join(f'{k}: {n}' for k, n in why)}), "
                        "so there is no Elo to fit; check the engine (--engine, eval.engine). A rerun plays "
                        "the aborted games again")
    return ladder_result(records, subjects, opponents, cfg.virtual_draws, cfg.ladder_nodes)


def ladder_result(records: Sequence[GameRecord], subjects: Sequence[Subject], opponents: Sequence[Opponent],
                  virtual_draws: float, nodes: int) -> LadderResult:
    """Fit Elo over ladder game records and summarise per subject and opponent."""
    anchors = {o.label: float(o.elo) for o in opponents if o.elo is not None}
    decided = [r for r in records if r.decided]
    fit: EloFit = fit_elo([(r.white, r.black, r.white_score) for r in decided], anchors, virtual_draws=virtual_draws)
    judged = any(r.referee or r.adjudication for r in decided)
    adjudicated = fit_elo([(r.white, r.black, white_score(r.adjudicated_result)) for r in decided], anchors,
                          virtual_draws=virtual_draws) if judged else None
    rows = []
    for s in subjects:
        mine = [r for r in records if s.label in (r.white, r.black)]
        won = [r for r in mine if r.decided]
        per_opp: dict[str, list[float]] = {}
        for r in won:
            per_opp.setdefault(r.tags.get("opponent", r.black if r.white == s.label else r.white), []).append(r.score_of(s.label))
        illegal = [r.illegal["white" if r.white == s.label else "black"] for r in mine]
        est = fit[s.label] if s.label in fit else None
        adj = adjudicated[s.label] if adjudicated is not None and s.label in adjudicated else None
        rows.append(SubjectRow(
            label=s.label, prompted=s.rating, elo=est.elo if est else math.nan, lo=est.lo if est else math.nan,
            hi=est.hi if est else math.nan, games=len(won),
            score=sum(r.score_of(s.label) for r in won) / len(won) if won else math.nan,
            scores={k: sum(v) / len(v) for k, v in per_opp.items()},
            illegal_per_game=sum(illegal) / len(illegal) if illegal else math.nan,
            masked=s.sampling.mask_illegal if s.policy is not None else False,
            bracketed=sum(BRACKET[0] <= sum(v) / len(v) <= BRACKET[1] for v in per_opp.values()),
            elo_adjudicated=adj.elo if adj else math.nan, adjudicated_lo=adj.lo if adj else math.nan,
            adjudicated_hi=adj.hi if adj else math.nan))
    opp_rows = []
    for o in opponents:
        est = fit[o.label] if o.label in fit else None
        opp_rows.append(OpponentRow(label=o.label, spec=o.label, anchored=o.label in anchors,
                                    elo=est.elo if est else math.nan, lo=est.lo if est else math.nan,
                                    hi=est.hi if est else math.nan))
    prompted = [(row.prompted, row.elo) for row in rows if row.prompted is not None]
    xs = [float(p) for p, _ in prompted]
    ys = [e for _, e in prompted]
    return LadderResult(subjects=tuple(rows), opponents=tuple(opp_rows), spearman=spearman(xs, ys), slope=slope(xs, ys),
                        games=len(decided), aborted=len(records) - len(decided),
                        engine_restarts=sum(r.engine_restarts for r in records),
                        move_limit_draws=sum(r.termination == "move_limit" for r in records),
                        nodes=nodes, virtual_draws=virtual_draws)


# -- 2. human move matching ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchingResult:
    prompted: tuple[int, ...]  # rows: prompted rating
    bands: tuple[str, ...]  # columns: the actual-rating band around each prompted rating
    accuracy: tuple[tuple[float, ...], ...]  # [row][column] top-1 agreement with the human move
    n: tuple[tuple[int, ...], ...]  # [row][column] positions (the same positions in every row)
    best_prompt: tuple[int | None, ...]  # per band: the prompted rating that matches it best (None: a tie)
    diagonal_peaks: int  # bands whose own prompted rating matches them strictly best (well conditioned: all)
    bands_with_data: int  # bands that had positions
    row_peaks: int  # prompted ratings strictly best on their own band (Maia's view; confounded by band difficulty)
    games: int  # held-out games used
    skip_plies: int
    references: tuple[ReferenceRow, ...] = ()  # UCI engines scored on exactly the same positions


@dataclass(frozen=True)
class ReferenceRow:
    """A reference engine's top-1 agreement with the human move, per band, on the model's positions."""

    label: str
    spec: str
    accuracy: tuple[float, ...]  # per band (the columns of MatchingResult)
    n: tuple[int, ...]
    failed: int  # positions where the engine failed (left out of its row)


def mover_plies(color: chess.Color, skip_plies: int, end: int) -> range:
    """Plies (moves) played by `color` from `skip_plies` on, below `end`.

    >>> list(mover_plies(chess.WHITE, 10, 16)), list(mover_plies(chess.BLACK, 10, 16))
    ([10, 12, 14], [11, 13, 15])
    """
    start = skip_plies + (1 if (skip_plies % 2 == 0) != (color == chess.WHITE) else 0)
    return range(start, end, 2)


def matched_positions(games: Sequence[HeldOutGame], ratings: Sequence[int], band_width: int, skip_plies: int,
                      max_moves: int) -> list[tuple[int, chess.Color, int, list[int]]]:
    """(game, mover, ply, band columns) of every position move matching scores: the mover's own
    moves from `skip_plies` on, within the model's context, for movers rated inside some band."""
    out: list[tuple[int, chess.Color, int, list[int]]] = []
    for gi, g in enumerate(games):
        for color in (chess.WHITE, chess.BLACK):
            cols = [ci for ci, r in enumerate(ratings) if band_of(g.rating(color), r, band_width)]
            if not cols:
                continue
            out.extend((gi, color, p, cols) for p in mover_plies(color, skip_plies, min(len(g.moves), max_moves)))
    return out


def reference_matching(spec: str, games: Sequence[HeldOutGame], ratings: Sequence[int], *, band_width: int,
                       skip_plies: int, max_moves: int, nodes: int, timeout_s: float = 30.0) -> ReferenceRow:
    """Top-1 agreement of a UCI engine (an opponent spec: 'uci=lc0 --weights=...@1500/1', '1350',
    'eps=0', ...) with the human moves, on the positions :func:`move_matching` scores. The engine sees
    the whole game (python-chess sends the moves from the start), as Maia expects."""
    opponent = Opponent.parse(spec)
    if opponent.kind == "random":
        raise UserError("a reference for move matching must be an engine, not the random mover")
    R = len(ratings)
    hits, n = [0] * R, [0] * R
    failed = 0
    player = seat_for(opponent, None, nodes=nodes, timeout_s=timeout_s).make(0)
    assert isinstance(player, StockfishPlayer)  # every engine opponent is one (a context manager)
    with player:
        for gi, _color, ply, cols in matched_positions(games, ratings, band_width, skip_plies, max_moves):
            g = games[gi]
            try:
                move = player.play(g.board(ply))
            except (EngineFailure, chess.engine.EngineError, RuntimeError):
                failed += 1
                continue
            for ci in cols:
                hits[ci] += move == g.moves[ply]
                n[ci] += 1
    return ReferenceRow(label=opponent.label, spec=spec, accuracy=tuple(h / k if k else math.nan for h, k in zip(hits, n)),
                        n=tuple(n), failed=failed)


@torch.no_grad()
def move_matching(policy: ModelPolicy, games: Sequence[HeldOutGame], ratings: Sequence[int], *,
                  band_width: int = 200, skip_plies: int = 10, batch_size: int = 16,
                  guidance: float = 0.0) -> MatchingResult:
    """Top-1 move matching of the raw model prompted at each rating, per actual rating band.

    The mover's rating slot holds the prompted rating; the opponent's slot (and any result slot)
    hold the game's own values, so only the prompt under test differs from the training input.
    A raw top-1 that is illegal counts as a miss. With `guidance` w > 0 the top-1 is that of
    cond + w * (cond - uncond) (classifier-free guidance, the second row with every condition unknown).
    """
    R = len(ratings)
    hits = [[0] * R for _ in range(R)]
    n = [[0] * R for _ in range(R)]
    jobs: list[tuple[int, chess.Color, int]] = []  # (game, colour, row)
    max_moves = policy.context - policy.prompt_len + 1  # as teacher_forced_logits cuts
    for gi, g in enumerate(games):
        for color in (chess.WHITE, chess.BLACK):
            if any(band_of(g.rating(color), r, band_width) for r in ratings):
                jobs.extend((gi, color, ri) for ri in range(R))
    used = {gi for gi, _, _ in jobs}
    prompts = []
    for gi, color, ri in jobs:
        g = games[gi]
        white, black = (ratings[ri], g.black) if color == chess.WHITE else (g.white, ratings[ri])
        prompts.append(policy.prompt(white, black, g.result))
    for j, logits in guided_logits(policy, games, [gi for gi, _, _ in jobs], prompts, batch_size, guidance):
        gi, color, ri = jobs[j]
        g = games[gi]
        cols = [ci for ci, r in enumerate(ratings) if band_of(g.rating(color), r, band_width)]
        plies = mover_plies(color, skip_plies, min(len(logits), max_moves))
        if not plies:
            continue
        top = logits[list(plies)].argmax(-1).tolist()
        k = sum(t == policy.vocab.encode_move(g.moves[p]) for t, p in zip(top, plies))
        for ci in cols:
            hits[ri][ci] += k
            n[ri][ci] += len(plies)
    acc = tuple(tuple(hits[ri][ci] / n[ri][ci] if n[ri][ci] else math.nan for ci in range(R)) for ri in range(R))
    best: list[int | None] = []  # per band: the prompted rating with the strictly highest accuracy
    for ci in range(R):
        col: list[tuple[float, int]] = [(acc[ri][ci], ri) for ri in range(R) if not math.isnan(acc[ri][ci])]
        best_acc = max([a for a, _ in col]) if col else math.nan
        winners = [ri for a, ri in col if a == best_acc]
        best.append(ratings[winners[0]] if len(winners) == 1 else None)
    row_peaks = 0
    for ri in range(R):
        row = [a for a in acc[ri] if not math.isnan(a)]
        if not math.isnan(acc[ri][ri]) and acc[ri][ri] == max(row) and row.count(acc[ri][ri]) == 1:
            row_peaks += 1
    with_data = sum(n[0][ci] > 0 for ci in range(R))
    return MatchingResult(
        prompted=tuple(ratings), bands=tuple(band_label(r, band_width) for r in ratings), accuracy=acc,
        n=tuple(tuple(row) for row in n), best_prompt=tuple(best),
        diagonal_peaks=sum(best[ci] == ratings[ci] for ci in range(R)), bands_with_data=with_data,
        row_peaks=row_peaks,
        games=len(used), skip_plies=skip_plies)


# -- 3. centipawn loss ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CplRow:
    label: str
    prompted: int | None
    positions: int
    mean: float  # average centipawn loss
    lo: float  # 95% interval of the mean
    hi: float
    median: float
    blunder_rate: float  # share of moves losing >= BLUNDER_CP
    accuracy: float = math.nan  # share of moves equal to the engine's best move
    vs_first: float = math.nan  # mean loss minus the first subject's, on the same positions (paired)
    vs_first_lo: float = math.nan  # 95% interval of that paired difference
    vs_first_hi: float = math.nan


@dataclass(frozen=True)
class CplResult:
    rows: tuple[CplRow, ...]
    nodes: int  # Stockfish node budget per analysed position
    cap: int  # evaluations clipped to +-cap centipawns
    spearman: float  # rank correlation of mean loss vs prompted rating (negative = stronger when prompted higher)
    failed: int  # positions skipped because the engine failed


def sample_positions(games: Sequence[HeldOutGame], n: int, *, skip_plies: int, max_ply: int,
                     seed: int = 0) -> list[tuple[int, int]]:
    """Up to n (game, ply) positions, one per game, at ply in [skip_plies, max_ply), not game over."""
    rng = random.Random(seed)
    out = []
    for gi, g in enumerate(games):
        hi = min(len(g.moves), max_ply)
        if hi <= skip_plies:
            continue
        out.append((gi, rng.randrange(skip_plies, hi)))
        if len(out) >= n:
            break
    return out


def _after_cp(engine: Engine, board: chess.Board, move: chess.Move, limit: chess.engine.Limit) -> float:
    mover = board.turn
    after = board.copy()
    after.push(move)
    final = final_cp(after, mover)
    return final if final is not None else clipped_cp(engine.analyse(after, limit)["score"], mover)


def centipawn_loss(subjects: Sequence[Subject], games: Sequence[HeldOutGame], *, positions: int, nodes: int,
                   skip_plies: int = 10, seed: int = 0, engine: str | Path | None = None,
                   batch_size: int = 16) -> CplResult:
    """Centipawn loss of each subject's move on the same held-out positions, judged by Stockfish
    (full strength, `nodes` per position). Model subjects are prompted as in play (own rating =
    prompted, opponent = the same) and choose with their sampling settings."""
    max_ply = min((s.policy.context - s.policy.prompt_len for s in subjects if s.policy is not None),
                  default=10_000)
    picks = sample_positions(games, positions, skip_plies=skip_plies, max_ply=max_ply, seed=seed)
    boards = [games[gi].board(ply) for gi, ply in picks]
    moves: dict[str, list[chess.Move]] = {}
    for si, s in enumerate(subjects):
        gen = torch.Generator().manual_seed(seed * 1000 + si)
        if s.prompted is not None:
            model, pol = s.prompted, s.prompted.policy
            prefixes = [HeldOutGame(moves=games[gi].moves[: ply + 1], white=None, black=None) for gi, ply in picks]
            prompts = [model.prompt(b.turn) for b in boards]
            chosen: list[chess.Move] = [chess.Move.null()] * len(picks)
            for j, logits in teacher_forced_logits(pol, prefixes, prompts, batch_size):
                chosen[j] = pol.choose(logits[-1:], [boards[j]], s.sampling, gen, MoveStats())[0]
            moves[s.label] = chosen
        else:
            with s.open_player(seed) as player:
                moves[s.label] = [player.play(b.copy()) for b in boards]
    limit = chess.engine.Limit(nodes=nodes)
    losses: dict[str, list[float]] = {s.label: [] for s in subjects}
    hits: dict[str, list[bool]] = {s.label: [] for s in subjects}
    failed = 0
    with Engine(find_stockfish(engine)) as sf:
        for j, board in enumerate(boards):
            game_tag = object()  # a fresh hash per position, so results do not depend on order
            try:
                info = sf.analyse(board, limit, game=game_tag,
                                  info=chess.engine.INFO_SCORE | chess.engine.INFO_PV)
                best = clipped_cp(info["score"], board.turn)
                best_move = info.get("pv", [None])[0]
                after: dict[chess.Move, float] = {}
                for m in {moves[s.label][j] for s in subjects}:
                    after[m] = _after_cp(sf, board, m, limit)
            except EngineFailure:
                failed += 1  # drop this position for every subject, so all see the same positions
                continue
            for s in subjects:
                losses[s.label].append(max(0.0, best - after[moves[s.label][j]]))
                hits[s.label].append(moves[s.label][j] == best_move)
    rows = []
    first = losses[subjects[0].label] if subjects else []
    for s in subjects:
        ls = losses[s.label]
        mean, lo, hi = mean_interval(ls)
        diff, dlo, dhi = mean_interval([a - b for a, b in zip(ls, first)]) if s is not subjects[0] else (0.0, 0.0, 0.0)
        rows.append(CplRow(label=s.label, prompted=s.rating, positions=len(ls), mean=mean, lo=lo, hi=hi,
                           median=statistics.median(ls) if ls else math.nan,
                           blunder_rate=sum(x >= BLUNDER_CP for x in ls) / len(ls) if ls else math.nan,
                           accuracy=sum(hits[s.label]) / len(ls) if ls else math.nan,
                           vs_first=diff, vs_first_lo=dlo, vs_first_hi=dhi))
    pr = [(float(r.prompted), r.mean) for r in rows if r.prompted is not None]
    return CplResult(rows=tuple(rows), nodes=nodes, cap=CP_CAP,
                     spearman=spearman([p for p, _ in pr], [m for _, m in pr]), failed=failed)


# -- all three ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StrengthResult(JsonResult):
    ladder: LadderResult | None
    matching: MatchingResult | None
    cpl: CplResult | None
    notes: tuple[str, ...]  # what was skipped and why
    match: MatchResult | None = None  # direct matches between the settings

    def format(self) -> str:
        """Markdown tables."""
        out: list[str] = []
        if self.ladder is not None:
            L = self.ladder
            out += [f"Ladder: {L.games} decided games ({L.aborted} aborted, {L.engine_restarts} engine restarts, "
                    f"{L.move_limit_draws} drawn at the move limit), Stockfish at {L.nodes} nodes per move", "",
                    "| subject | prompted | measured Elo | 95% interval | games | score | bracketed by | illegal/game |",
                    "|---|---:|---:|---|---:|---:|---:|---:|"]
            for r in L.subjects:
                out.append(f"| {r.label} | {r.prompted if r.prompted is not None else '-'} | {fmt(r.elo, 0)} | "
                           f"{fmt(r.lo, 0)} .. {fmt(r.hi, 0)} | {r.games} | {fmt(r.score, 1, True)} | "
                           f"{r.bracketed}{'' if r.bracketed >= 2 else ' (!)'} | "
                           f"{fmt(r.illegal_per_game, 2)}{' (masked)' if r.masked else ''} |")
            if any(not math.isnan(r.elo_adjudicated) for r in L.subjects):
                out += ["", "With the referee's verdicts standing (adjudicated; the games themselves were played "
                        "as above):", "", "| subject | adjudicated Elo | 95% interval |", "|---|---:|---|"]
                out += [f"| {r.label} | {fmt(r.elo_adjudicated, 0)} | {fmt(r.adjudicated_lo, 0)} .. "
                        f"{fmt(r.adjudicated_hi, 0)} |" for r in L.subjects]
            loose = [r.label for r in L.subjects if r.bracketed < 2]
            if loose:
                out += ["", f"(!) scored {BRACKET[0]:.0%}-{BRACKET[1]:.0%} against fewer than two opponents: "
                        f"{', '.join(loose)}; their ratings rest on lopsided results: add opponents near their "
                        "strength to eval.ladder (e.g. eps=P rungs)"]
            out += ["", "| opponent | Elo | 95% interval |", "|---|---:|---|"]
            for o in L.opponents:
                out.append(f"| {o.label} | {fmt(o.elo, 0)}{' (anchor)' if o.anchored else ''} | "
                           f"{fmt(o.lo, 0)} .. {fmt(o.hi, 0)} |")
            out += ["", f"Spearman(measured, prompted) = {fmt(L.spearman, 2)}; slope = {fmt(L.slope, 2)}", ""]
        if self.matching is not None:
            M = self.matching
            out += [f"Move matching (top-1, first {M.skip_plies} plies dropped, {M.games} games): "
                    "rows = prompted rating, columns = actual rating band, accuracy (n)", "",
                    "| prompted | " + " | ".join(M.bands) + " |", "|---:|" + "---:|" * len(M.bands)]
            for ri, prompted in enumerate(M.prompted):
                cells = [f"{fmt(a, 1, True)} ({k})" for a, k in zip(M.accuracy[ri], M.n[ri])]
                out.append(f"| {prompted} | " + " | ".join(cells) + " |")
            for ref in M.references:
                cells = [f"{fmt(a, 1, True)} ({k})" for a, k in zip(ref.accuracy, ref.n)]
                out.append(f"| {ref.label} (reference) | " + " | ".join(cells) + " |")
            out += ["", f"The diagonal peaks in {M.diagonal_peaks} of {M.bands_with_data} bands "
                    f"(best prompt per band: {', '.join(str(b) for b in M.best_prompt)}); "
                    f"rows peak on their own band in {M.row_peaks} of {len(M.prompted)}", ""]
        if self.cpl is not None:
            C = self.cpl
            first = C.rows[0].label if C.rows else ""
            out += [f"Centipawn loss (Stockfish {C.nodes} nodes, clipped at {C.cap} cp) and engine move accuracy "
                    f"(share of moves equal to Stockfish's best), all subjects on the same positions; the paired "
                    f"difference to {first} has its own interval", "",
                    "| subject | positions | mean loss | 95% interval | median | blunders | accuracy | "
                    f"loss - {first} (95%) |", "|---|---:|---:|---|---:|---:|---:|---|"]
            for cpl in C.rows:
                out.append(f"| {cpl.label} | {cpl.positions} | {fmt(cpl.mean)} | {fmt(cpl.lo)} .. {fmt(cpl.hi)} | "
                           f"{fmt(cpl.median)} | {fmt(cpl.blunder_rate, 1, True)} | {fmt(cpl.accuracy, 1, True)} | "
                           f"{fmt(cpl.vs_first)} ({fmt(cpl.vs_first_lo)} .. {fmt(cpl.vs_first_hi)}) |")
            out += ["", f"Spearman(mean loss, prompted) = {fmt(C.spearman, 2)}", ""]
        if self.match is not None:
            out += [self.match.format()]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"


PARTS = ("ladder", "match", "matching", "cpl")


def evaluate_strength(subjects: Sequence[Subject], games: Sequence[HeldOutGame], cfg: EvalConfig,
                      out_dir: Path | None = None, *, parts: Sequence[str] = PARTS, progress: bool = False) -> StrengthResult:
    """The strength evaluation of issue 4 at the sizes of `cfg`.

    Writes `strength_games.jsonl` (the resumable game log) and `strength.json` into `out_dir` if
    given. Move matching needs model subjects of one policy with prompted ratings; matching and
    centipawn loss need held-out games; a part that cannot run is skipped with a note.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise UserError(f"unknown strength parts {sorted(unknown)}; choose from {PARTS}")
    engine = cfg.engine or None
    notes: list[str] = []
    ladder = matching = cpl = None
    if "ladder" in parts:
        ladder = play_ladder(subjects, cfg, out_dir / "strength_games.jsonl" if out_dir else None, engine=engine,
                             progress=progress)
    # one model (one policy object behind every subject) or None
    policy = subjects[0].policy if subjects and len({id(s.policy) for s in subjects}) == 1 else None
    ratings = [s.rating for s in subjects if s.rating is not None]
    match = None
    if "match" in parts and cfg.match_games > 0:
        if policy is None or len(subjects) + len(cfg.match_extra) < 2:
            notes.append("direct matches skipped: they need two or more settings of one model")
        else:
            sampling = sampling_of(cfg)
            settings = [Setting.of(s.prompted) for s in subjects if s.prompted is not None]
            settings += [Setting.parse(x, default=sampling) for x in cfg.match_extra]
            with open_referee(cfg) as referee:
                match = play_match(policy, settings, out_dir / "match_games.jsonl" if out_dir else None,
                                   games=cfg.match_games,
                                   plan=cfg.match_plan, opening_plies=cfg.opening_plies, seed=cfg.seed,
                                   batch_size=cfg.batch_size, max_plies=cfg.max_plies, progress=progress,
                                   referee=referee)
    if "matching" in parts:
        if not games:
            notes.append("move matching skipped: no held-out games")
        elif policy is None or len(ratings) != len(subjects):
            notes.append("move matching skipped: it needs model subjects of one policy, each with a prompted rating")
        else:
            held = games[: cfg.matching_games]
            matching = move_matching(policy, held, ratings, band_width=cfg.band_width, skip_plies=cfg.skip_plies)
            max_moves = policy.context - policy.prompt_len + 1
            refs = tuple(reference_matching(spec, held, ratings, band_width=cfg.band_width, skip_plies=cfg.skip_plies,
                                            nodes=cfg.ladder_nodes, max_moves=max_moves)
                         for spec in cfg.matching_references)
            matching = dataclasses.replace(matching, references=refs)
    if "cpl" in parts:
        if not games:
            notes.append("centipawn loss skipped: no held-out games")
        elif cfg.cpl_positions > 0:
            cpl = centipawn_loss(subjects, games, positions=cfg.cpl_positions, nodes=cfg.cpl_nodes,
                                 skip_plies=cfg.skip_plies, seed=cfg.seed, engine=engine)
    result = StrengthResult(ladder=ladder, matching=matching, cpl=cpl, notes=tuple(notes), match=match)
    if out_dir is not None:
        result.save(out_dir / "strength.json")
    return result

