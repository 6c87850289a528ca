"""Direct matches between settings of one model: the instrument that resolves tens of Elo.

Two or more settings of a checkpoint (prompted rating, the rating it is told its opponent has,
temperature, top-p, guidance) play each other. Every game pair plays one opening line twice with
the colours swapped, so the pair's two results share their opening and the interval comes from
the variance of the pair score (the pentanomial model used in engine testing). All games of a
match advance together through the model's KV cache, stream to a JSONL log and resume.

What is reported: per pair of settings, W/D/L, the score and the Elo difference with a 95%
interval, how the games ended (stalemates given while a piece up are a symptom of weak play
that cannot convert, counted separately); over all games one Bradley-Terry fit relative to the
first setting, with intervals from a bootstrap over game pairs; for two settings an optional
SPRT that stops the match once "B is elo1 stronger" or "B is at most elo0 stronger" is decided.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import chess
import numpy as np

from chessdt.checks import check_guidance, check_temperature, check_top_p
from chessdt.errors import UserError
from chessdt.evals.results import JsonResult, fmt, jsonable
from chessdt.metrics import (PairedScore, fit_elo, paired_score, percentile_interval, resample_strata, sprt_bounds,
                             sprt_llr, wilson_interval)
from chessdt.play.arena import GameSpec, Seat, run_games
from chessdt.play.gamelog import GameRecord
from chessdt.play.policy import ModelPolicy, Prompted, Sampling
from chessdt.rules import material, opening_lines, white_score
from chessdt.stockfish.referee import Referee, RefereeRule, verdict_of
# The keys of a setting, by their one-letter short forms.
SETTING_KEYS = {"r": "rating", "o": "opponent", "t": "temperature", "p": "top_p", "g": "guidance", "m": "mask",
                "c": "checkpoint"}
AHEAD = 3  # material lead (pawns) at which a stalemate counts as a thrown-away win


# -- settings -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One way to play the model, before there is a model: what a :class:`~chessdt.play.policy.Prompted`
    holds besides the policy, parsed from text, labelled, and stored in match logs."""

    rating: int | None  # prompted rating of the model's side (None = the unknown-rating token)
    opponent_rating: int | None = None  # the rating it is told the other side has (None = same as rating)
    sampling: Sampling = field(default_factory=Sampling)
    checkpoint: str = ""  # another checkpoint than the match's own ("" = the match's checkpoint)

    @classmethod
    def parse(cls, spec: str, default: Sampling = Sampling()) -> Setting:
        """'2000', 'rating=2000', 'rating=2000,temperature=0.3,top_p=0.9,guidance=1,opponent=1500',
        'rating=?' (the unknown token), 'rating=1350,checkpoint=runs/rl/checkpoints/step_0000040' (a
        second model); keys may be shortened to their first letter (r, o, t, p, g, m, c).

        >>> s = Setting.parse("r=2000,t=0.3"); (s.rating, s.sampling.temperature, s.label)
        (2000, 0.3, 'r2000 T0.3')
        >>> Setting.parse("1500").label
        'r1500'
        """
        rating: int | None = None
        opponent: int | None = None
        checkpoint = ""
        values: dict[str, Any] = {"temperature": default.temperature, "top_p": default.top_p,
                                  "guidance": default.guidance, "mask_illegal": default.mask_illegal}
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise UserError(f"empty setting {spec!r}")
        try:
            for i, part in enumerate(parts):
                key, sep, value = part.partition("=")
                if not sep and i == 0:
                    key, value = "rating", part
                key = SETTING_KEYS.get(key.strip().lower(), key.strip().lower())
                value = value.strip()
                if key == "rating":
                    rating = None if value == "?" else int(value)
                elif key == "opponent":
                    opponent = None if value in ("?", "same") else int(value)
                elif key in ("temperature", "top_p", "guidance"):
                    values[key] = float(value)
                elif key == "mask":
                    values["mask_illegal"] = value.lower() in ("1", "true", "yes")
                elif key == "checkpoint" and value:
                    checkpoint = value
                else:
                    raise ValueError(key)
        except ValueError:
            raise UserError(f"bad setting {spec!r}: use e.g. 'rating=2000,temperature=0.5' "
                            f"(keys: {', '.join(SETTING_KEYS.values())})") from None
        for key, check in (("temperature", check_temperature), ("top_p", check_top_p), ("guidance", check_guidance)):
            try:
                check(values[key])
            except ValueError as e:
                raise UserError(f"setting {spec!r}: {key} {e}") from None
        return cls(rating, opponent, Sampling(**values), checkpoint)

    @property
    def label(self) -> str:
        """Short unique name: 'r2000', 'r2000 o1500 T0.3 p0.9 g1'."""
        s = self.sampling
        out = f"r{self.rating if self.rating is not None else '?'}"
        if self.opponent_rating is not None:
            out += f" o{self.opponent_rating}"
        if s.temperature != 1.0:
            out += f" T{s.temperature:g}"
        if s.top_p != 1.0:
            out += f" p{s.top_p:g}"
        if s.guidance:
            out += f" g{s.guidance:g}"
        if s.mask_illegal:
            out += " masked"
        if self.checkpoint:
            out += f" @{self.checkpoint}"
        return out

    @property
    def deterministic(self) -> bool:
        """Always the most likely move: replaying an opening replays the game."""
        return self.sampling.temperature == 0

    def prompted(self, policy: ModelPolicy) -> Prompted:
        """This setting of `policy`: the value the arena plays."""
        return Prompted(policy, self.rating, self.opponent_rating, self.sampling)

    @classmethod
    def of(cls, model: Prompted, checkpoint: str = "") -> Setting:
        """The setting a prompted model plays at."""
        return cls(model.rating, model.opponent_rating, model.sampling, checkpoint)


# -- the schedule -------------------------------------------------------------------------------------------
def match_pairs(n: int, plan: str) -> list[tuple[int, int]]:
    """Which settings meet: 'all' (round robin) or 'adjacent' (neighbours in the list, plus first vs last).

    >>> match_pairs(4, "adjacent"), match_pairs(3, "all")
    ([(0, 1), (1, 2), (2, 3), (0, 3)], [(0, 1), (0, 2), (1, 2)])
    """
    if plan == "all":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    if plan == "adjacent":
        pairs = [(i, i + 1) for i in range(n - 1)]
        return pairs + ([(0, n - 1)] if n > 2 else [])
    raise UserError(f"match plan {plan!r}: use 'all' or 'adjacent'")


def pair_specs(a: str, b: str, rounds: range, lines: Sequence[tuple[str, ...]], seed: int) -> list[GameSpec]:
    """Game pairs `rounds` between seats a and b: round r plays opening r (cycling) with a as White, then as Black."""
    specs = []
    for r in rounds:
        k = r % len(lines)
        for c in (0, 1):
            white, black = (a, b) if c == 0 else (b, a)
            specs.append(GameSpec(id=f"{a}|{b}|{r}|{c}", white=white, black=black, opening=lines[k], seed=seed,
                                  tags={"a": a, "b": b, "round": r, "opening": k}))
    return specs


# -- results ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversion:
    """Games in which the referee's rule named a setting the winner, and what became of them."""

    verdicts: int  # games the rule adjudicated to this setting
    played_out: int  # of them, played on to the end (validation)
    won: int  # of those, won on the board
    lo: float  # 95% Wilson interval of won / played_out
    hi: float

    @property
    def rate(self) -> float:
        return self.won / self.played_out if self.played_out else math.nan


@dataclass(frozen=True)
class PairRow:
    """B against A over their game pairs."""

    a: str
    b: str
    score: PairedScore  # B's score, games as played (adjudicated where the referee stopped one)
    terminations: dict[str, int]
    stalemates_ahead: dict[str, int]  # per setting: stalemates it gave while >= AHEAD pawns up
    distinct_games: int  # games with distinct move sequences (deterministic settings repeat games)
    llr: float | None = None  # SPRT log-likelihood ratio, when one was run
    # -- with a referee (None without) --
    adjudicated: PairedScore | None = None  # B's score with every verdict of the referee's rule standing
    played_out: PairedScore | None = None  # B's score on the board; None when some verdict was not played out
    conversion: dict[str, Conversion] | None = None  # per setting


@dataclass(frozen=True)
class RatingRow:
    label: str
    elo: float  # Bradley-Terry rating relative to the first setting
    lo: float  # 95% bootstrap interval over game pairs
    hi: float
    games: int
    score: float


@dataclass(frozen=True)
class SprtResult:
    elo0: float
    elo1: float
    alpha: float
    beta: float
    llr: float
    lower: float
    upper: float
    decision: str  # 'H1' (B is elo1 stronger), 'H0' (at most elo0), or 'none' (max games reached)


@dataclass(frozen=True)
class MatchResult(JsonResult):
    settings: tuple[str, ...]
    model: str
    pairs: tuple[PairRow, ...]
    ratings: tuple[RatingRow, ...]
    games: int
    aborted: int
    seconds: float  # wall time of the games played by this call
    sprt: SprtResult | None = None
    notes: tuple[str, ...] = ()
    referee: str = ""  # the referee's rule (RefereeRule.spec), "" = none

    def pair(self, a: str, b: str) -> PairRow:
        for p in self.pairs:
            if (p.a, p.b) == (a, b):
                return p
        raise KeyError((a, b))

    def format(self) -> str:
        out = [f"Direct matches of {self.model}: {self.games} games, paired openings "
               f"(each opening once with each colour); B's score and Elo difference B - A, 95% intervals "
               "from the per-pair variance", "",
               "| A | B | games | B: W / D / L | B's score | Elo B - A | 95% interval | distinct games |",
               "|---|---|---:|---|---:|---:|---|---:|"]
        for p in self.pairs:
            s = p.score
            out.append(f"| {p.a} | {p.b} | {s.games} | {s.wins} / {s.draws} / {s.losses} | {s.score:.3f} | "
                       f"{fmt(s.elo, 0)} | {fmt(s.elo_lo, 0)} .. {fmt(s.elo_hi, 0)} | {p.distinct_games} |")
        out += ["", "How the games ended (stalemate (ahead) = stalemates given while at least "
                f"{AHEAD} pawns of material up):", "", "| A | B | " + " | ".join(_TERMS) + " | stalemate (ahead): A / B |",
                "|---|---|" + "---:|" * (len(_TERMS) + 1)]
        for p in self.pairs:
            cells = [str(p.terminations.get(t, 0)) for t in _TERMS]
            out.append(f"| {p.a} | {p.b} | " + " | ".join(cells) +
                       f" | {p.stalemates_ahead.get(p.a, 0)} / {p.stalemates_ahead.get(p.b, 0)} |")
        judged = [p for p in self.pairs if p.adjudicated is not None]
        if judged:
            out += ["", f"Referee adjudication ({self.referee}): Elo B - A on the board and with every verdict of the "
                    "rule standing; conversion = games the rule gave a setting that it then won on the board "
                    "(played-out games only; 1 - conversion is the false-adjudication rate), 95% intervals", "",
                    "| A | B | Elo played out | Elo adjudicated | verdicts (played out) | false adjudications "
                    "| A converts | B converts |", "|---|---|---:|---:|---:|---:|---:|---:|"]
            for p in judged:
                assert p.adjudicated is not None and p.conversion is not None
                po = p.played_out
                played = (f"{fmt(po.elo, 0)} [{fmt(po.elo_lo, 0)}, {fmt(po.elo_hi, 0)}]" if po is not None
                          else "- (verdicts not all played out)")
                ad = p.adjudicated
                ca, cb = p.conversion[p.a], p.conversion[p.b]
                n_out = ca.played_out + cb.played_out
                false = n_out - ca.won - cb.won
                f_lo, f_hi = wilson_interval(false, n_out)
                out.append(f"| {p.a} | {p.b} | {played} | {fmt(ad.elo, 0)} [{fmt(ad.elo_lo, 0)}, {fmt(ad.elo_hi, 0)}] "
                           f"| {ca.verdicts + cb.verdicts} ({n_out}) "
                           f"| {false} = {fmt(false / n_out if n_out else math.nan, 1, True)} "
                           f"[{fmt(f_lo, 1, True)}, {fmt(f_hi, 1, True)}] | {_conv(ca)} | {_conv(cb)} |")
        if len(self.ratings) > 2:
            out += ["", f"One Bradley-Terry fit over all games, relative to {self.settings[0]} "
                    "(95% intervals: bootstrap over game pairs)", "",
                    "| setting | Elo | 95% interval | games | score |", "|---|---:|---|---:|---:|"]
            for r in self.ratings:
                out.append(f"| {r.label} | {fmt(r.elo, 0)} | {fmt(r.lo, 0)} .. {fmt(r.hi, 0)} | {r.games} | "
                           f"{fmt(r.score, 1, True)} |")
        if self.sprt is not None:
            t = self.sprt
            verdict = {"H1": f"B is stronger by {t.elo1:g} Elo (H1 accepted)",
                       "H0": f"B is at most {t.elo0:g} Elo stronger (H0 accepted)",
                       "none": "undecided at the game limit"}[t.decision]
            out += ["", f"SPRT elo0={t.elo0:g}, elo1={t.elo1:g}, alpha={t.alpha:g}, beta={t.beta:g}: "
                    f"LLR {t.llr:.2f} in ({t.lower:.2f}, {t.upper:.2f}): {verdict}"]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"


def _conv(c: Conversion) -> str:
    return (f"{c.won}/{c.played_out} = {fmt(c.rate, 0, True)} [{fmt(c.lo, 0, True)}, {fmt(c.hi, 0, True)}]"
            if c.played_out else "-")


_TERMS = ("checkmate", "stalemate", "insufficient_material", "threefold_repetition", "fifty_moves", "move_limit",
          "adjudication")


def stalemate_giver_ahead(record: GameRecord) -> str | None:
    """The seat that stalemated its opponent while at least AHEAD pawns of material up, else None."""
    if record.termination != "stalemate":
        return None
    board = record.game().end().board()
    giver = not board.turn  # the side that moved last
    if material(board, giver) - material(board, board.turn) >= AHEAD:
        return record.white if giver == chess.WHITE else record.black
    return None


Outcome = Literal["as played", "adjudicated"]


def pair_results(records: Sequence[GameRecord], a: str, b: str, outcome: Outcome = "as played") -> list[list[float]]:
    """B's results per game pair (rounds in order), decided games only: as the games ended, or with
    every verdict of the referee's rule standing ('adjudicated')."""
    rounds: dict[int, list[float]] = {}
    for r in records:
        if r.decided and r.tags.get("a") == a and r.tags.get("b") == b:
            result = r.adjudicated_result if outcome == "adjudicated" else r.result
            score = white_score(result) if b == r.white else 1.0 - white_score(result)
            rounds.setdefault(int(r.tags["round"]), []).append(score)
    return [rounds[k] for k in sorted(rounds)]


def conversion(records: Sequence[GameRecord], label: str) -> Conversion:
    """How often `label` won, on the board, the games the referee's rule adjudicated to it."""
    mine = [r for r in records if r.decided and r.adjudication
            and (r.white if r.adjudication == "1-0" else r.black) == label]
    out = [r for r in mine if r.played_out]
    won = sum(not r.false_adjudication for r in out)
    lo, hi = wilson_interval(won, len(out))
    return Conversion(verdicts=len(mine), played_out=len(out), won=won, lo=lo, hi=hi)


def rejudge(record: GameRecord, rule: RefereeRule) -> GameRecord:
    """A played-out game's record as `rule` would have judged it, from its stored referee scores (the
    scores' node budget is the one they were recorded with). Records of games stopped at a verdict
    cannot be rejudged: their ends are unknown."""
    if not record.played_out:
        raise ValueError(f"game {record.id} stopped at a verdict: it cannot be rejudged")
    verdict = verdict_of(record.referee, rule)
    result, ply = verdict or ("", 0)
    return dataclasses.replace(record, adjudication=result, adjudication_ply=ply)


def pair_row(records: Sequence[GameRecord], a: str, b: str, llr: float | None = None) -> PairRow:
    mine = [r for r in records if r.tags.get("a") == a and r.tags.get("b") == b and r.decided]
    ahead = Counter(x for x in (stalemate_giver_ahead(r) for r in mine) if x is not None)
    distinct = len({r.pgn.split("\n\n", 1)[-1] for r in mine})
    judged = any(r.referee or r.adjudication for r in mine)
    adjudicated = paired_score(pair_results(records, a, b, "adjudicated")) if judged else None
    all_out = all(r.played_out for r in mine)
    return PairRow(a=a, b=b, score=paired_score(pair_results(records, a, b)),
                   terminations=dict(Counter(r.termination for r in mine)), stalemates_ahead=dict(ahead),
                   distinct_games=distinct, llr=llr, adjudicated=adjudicated,
                   played_out=paired_score(pair_results(records, a, b)) if judged and all_out else None,
                   conversion={x: conversion(mine, x) for x in (a, b)} if judged else None)


def bradley_terry(records: Sequence[GameRecord], labels: Sequence[str], *, samples: int = 200,
                  seed: int = 0) -> list[RatingRow]:
    """Ratings relative to labels[0] from all decided games; intervals from resampling game pairs."""
    units: dict[tuple[str, str, int], list[GameRecord]] = {}
    for r in records:
        if r.decided and "round" in r.tags:
            units.setdefault((r.tags["a"], r.tags["b"], int(r.tags["round"])), []).append(r)
    strata: dict[tuple[str, str], list[list[GameRecord]]] = {}
    for (a, b, _), games in sorted(units.items()):
        strata.setdefault((a, b), []).append(games)

    def fit(groups: list[list[GameRecord]]) -> dict[str, float]:
        rows = [(g.white, g.black, g.white_score) for unit in groups for g in unit]
        f = fit_elo(rows, {labels[0]: 0.0})
        return {x: (f[x].elo if x in f else math.nan) for x in labels}

    everything = [u for s in strata.values() for u in s]
    if not everything:
        return [RatingRow(x, math.nan, math.nan, math.nan, 0, math.nan) for x in labels]
    point = fit(everything)
    groups = list(strata.values())
    draws: dict[str, list[float]] = {x: [] for x in labels}
    for picks in resample_strata([len(s) for s in groups], samples, seed):
        sample = [s[i] for s, rows in zip(groups, picks) for i in rows]
        for x, v in fit(sample).items():
            draws[x].append(v)
    rows = []
    for x in labels:
        played = [g for u in everything for g in u if x in (g.white, g.black)]
        score = sum(g.score_of(x) for g in played) / len(played) if played else math.nan
        lo, hi = percentile_interval(np.array(draws[x]), method="inverted_cdf") if x != labels[0] else (0.0, 0.0)
        rows.append(RatingRow(x, point[x], lo, hi, len(played), score))
    return rows


# -- playing ----------------------------------------------------------------------------------------------------
def play_match(policy: ModelPolicy, settings: Sequence[Setting], out: Path | None = None, *, games: int = 400,
               plan: str = "adjacent", opening_plies: int = 4, seed: int = 0, batch_size: int = 64,
               max_plies: int = 300, sprt: tuple[float, float] | None = None, alpha: float = 0.05,
               beta: float = 0.05, progress: bool = False,
               others: Mapping[str, ModelPolicy] | None = None, referee: Referee | None = None) -> MatchResult:
    """Play (or resume) a match between settings of one policy and measure it.

    A setting with a `checkpoint` plays with `others[checkpoint]` instead (e.g. an RL checkpoint
    against its base); games between two models still advance together, one KV cache per model.

    `games` is the number of games per pair of settings (even: whole pairs). With `sprt=(elo0, elo1)`
    (two settings only) the games are played in chunks of `batch_size` and the match stops as soon
    as the SPRT decides; `games` is then the maximum. With a started `referee` every game is judged
    (:mod:`chessdt.stockfish.referee`) and the result shows Elo on the board and adjudicated.
    """
    labels = [s.label for s in settings]
    if len(settings) < 2:
        raise UserError("a match needs at least two settings")
    if len(set(labels)) != len(labels):
        raise UserError(f"settings must differ: {labels}")
    if games < 2 or games % 2:
        raise UserError(f"games per pair must be even and at least 2, got {games}")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size}: games advanced together must be at least 1")
    if sprt is not None and len(settings) != 2:
        raise UserError("the SPRT compares exactly two settings")
    others = others or {}
    missing = sorted({s.checkpoint for s in settings if s.checkpoint and s.checkpoint not in others})
    if missing:
        raise UserError(f"settings name checkpoints that were not loaded: {missing}")
    seats: dict[str, Seat] = {s.label: s.prompted(others[s.checkpoint] if s.checkpoint else policy)
                              for s in settings}
    lines = opening_lines(opening_plies)
    pairs = match_pairs(len(settings), plan) if sprt is None else [(0, 1)]
    meta = {"kind": "match", "model": policy.model_id, "settings": [jsonable(s) for s in settings],
            "opening_plies": opening_plies, "seed": seed, "max_plies": max_plies}
    if referee is not None:
        meta["referee"] = referee.rule.spec
    start = time.monotonic()
    notes: list[str] = []
    n_pairs = games // 2
    test: SprtResult | None = None
    if sprt is None:
        specs = [g for i, j in pairs for g in pair_specs(labels[i], labels[j], range(n_pairs), lines, seed)]
        records = run_games(specs, seats, out, meta=meta, batch_size=batch_size, max_plies=max_plies,
                            progress=progress, referee=referee)
    else:
        lower, upper = sprt_bounds(alpha, beta)
        chunk = max(1, batch_size // 2)
        done, decision, llr = 0, "none", 0.0
        specs = []
        while done < n_pairs:
            done = min(n_pairs, done + chunk)
            specs = pair_specs(labels[0], labels[1], range(done), lines, seed)
            records = run_games(specs, seats, out, meta=meta, batch_size=batch_size, max_plies=max_plies,
                                progress=progress, referee=referee)
            llr = sprt_llr(pair_results(records, labels[0], labels[1]), *sprt)
            if llr >= upper or llr <= lower:
                decision = "H1" if llr >= upper else "H0"
                break
        test = SprtResult(elo0=sprt[0], elo1=sprt[1], alpha=alpha, beta=beta, llr=llr, lower=lower, upper=upper,
                          decision=decision)
    rows = tuple(pair_row(records, labels[i], labels[j]) for i, j in pairs)
    if any(s.deterministic for s in settings):
        dup = [p for p in rows if p.distinct_games < p.score.games]
        if dup:
            notes.append("deterministic settings replay games from the same opening: "
                         + "; ".join(f"{p.a} vs {p.b}: {p.distinct_games} distinct of {p.score.games}" for p in dup)
                         + " (the interval overstates the precision)")
    aborted = sum(not r.decided for r in records)
    return MatchResult(settings=tuple(labels), model=policy.model_id, pairs=rows,
                       ratings=tuple(bradley_terry(records, labels, seed=seed)), games=len(records) - aborted,
                       aborted=aborted, seconds=round(time.monotonic() - start, 1), sprt=test, notes=tuple(notes),
                       referee=referee.rule.spec if referee is not None else "")
