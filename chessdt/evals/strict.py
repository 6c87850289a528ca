"""Strength under strict rules (an illegal move loses) beside strength with replacement, by direct match.

A raw model (illegal moves not masked) that samples an illegal move has it replaced by its most
likely legal move and plays on (:meth:`chessdt.play.policy.ModelPolicy.choose`); under strict rules
that sample loses the game. The replacement draws no randomness, so the strict game is the played
game cut at its first illegal sample (:attr:`GameRecord.first_illegal_ply`): one match log
(`chessdt eval match`) gives both scores on the same games, paired by opening.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess

from chessdt.errors import UserError
from chessdt.evals.curve import run_inputs
from chessdt.evals.legality import input_line
from chessdt.evals.match import pair_results
from chessdt.evals.results import JsonResult, fmt
from chessdt.metrics import PairedScore, paired_score, wilson_interval
from chessdt.play.gamelog import GameRecord, read_game_log

ILLEGAL_MOVE = "illegal_move"  # termination of a game lost by an illegal move under strict rules


def offender(record: GameRecord) -> chess.Color | None:
    """The side whose illegal sample ends the game under strict rules (None: no illegal sample)."""
    p = record.first_illegal_ply
    return None if p is None else chess.WHITE if p % 2 == 0 else chess.BLACK


def strict_record(record: GameRecord) -> GameRecord:
    """The game under strict rules: cut at its first illegal sample, which loses; unchanged without one.

    A game whose model sampled among legal moves only (masked) cannot be judged strictly, nor one
    played before first illegal samples were recorded: both raise ValueError.
    """
    if record.masked:
        raise ValueError(f"game {record.id} was played with illegal moves masked: there is no strict version")
    side = offender(record)
    if side is None:
        if sum(record.illegal.values()):
            raise ValueError(f"game {record.id} has illegal samples but no first_illegal_ply "
                             "(played before it was recorded)")
        return record
    return dataclasses.replace(record, result="0-1" if side == chess.WHITE else "1-0", termination=ILLEGAL_MOVE,
                               plies=record.first_illegal_ply or 0, adjudication="", adjudication_ply=0)


@dataclass(frozen=True)
class StrictPair:
    """B against A with replacement and under strict rules, over the same game pairs."""

    a: str
    b: str
    replaced: PairedScore  # B's score as played (an illegal sample replaced by the best legal move)
    strict: PairedScore  # B's score when an illegal sample loses
    lost_to_illegal: dict[str, int]  # per setting: games it lost under strict rules by an illegal move
    fully_legal: int  # games in which neither side sampled an illegal move
    fully_legal_lo: float  # 95% Wilson interval of fully_legal / games
    fully_legal_hi: float


@dataclass(frozen=True)
class StrictMatchResult(JsonResult):
    log: str  # the match's game log
    pairs: tuple[StrictPair, ...]
    games: int
    inputs: str = ""  # model_inputs of the run whose eval folder holds the log ("" = not found)

    def format(self) -> str:
        out = [input_line(self.inputs), "", f"Strength with replacement and under strict rules (an illegal move loses), same games "
               f"({self.log}, {self.games} decided games); B's score and Elo B - A, 95% intervals from the "
               "per-pair variance", "",
               "| A | B | games | fully legal [95%] | lost by an illegal move: A / B | B's score replaced | "
               "Elo replaced | B's score strict | Elo strict |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for p in self.pairs:
            r, s = p.replaced, p.strict
            out.append(f"| {p.a} | {p.b} | {r.games} | {p.fully_legal} = {fmt(p.fully_legal / max(r.games, 1), 0, True)} "
                       f"[{fmt(p.fully_legal_lo, 0, True)}, {fmt(p.fully_legal_hi, 0, True)}] | "
                       f"{p.lost_to_illegal.get(p.a, 0)} / {p.lost_to_illegal.get(p.b, 0)} | "
                       f"{r.score:.3f} | {fmt(r.elo, 0)} [{fmt(r.elo_lo, 0)}, {fmt(r.elo_hi, 0)}] | "
                       f"{s.score:.3f} | {fmt(s.elo, 0)} [{fmt(s.elo_lo, 0)}, {fmt(s.elo_hi, 0)}] |")
        return "\n".join(out) + "\n"


def strict_pairs(records: Sequence[GameRecord]) -> tuple[StrictPair, ...]:
    """Every (A, B) pair of a match's records, scored with replacement and under strict rules."""
    decided = [r for r in records if r.decided and "a" in r.tags]
    try:
        strict = [strict_record(r) for r in decided]
    except ValueError as e:
        raise UserError(str(e)) from None
    out = []
    for a, b in dict.fromkeys((r.tags["a"], r.tags["b"]) for r in decided):
        mine = [r for r in decided if (r.tags["a"], r.tags["b"]) == (a, b)]
        lost = {x: 0 for x in (a, b)}
        for r in mine:
            side = offender(r)
            if side is not None:
                lost[r.white if side == chess.WHITE else r.black] += 1
        legal = sum(r.first_illegal_ply is None for r in mine)
        lo, hi = wilson_interval(legal, len(mine))
        out.append(StrictPair(a=a, b=b, replaced=paired_score(pair_results(decided, a, b)),
                              strict=paired_score(pair_results(strict, a, b)), lost_to_illegal=lost,
                              fully_legal=legal, fully_legal_lo=lo, fully_legal_hi=hi))
    return tuple(out)


def strict_match(log: Path, out: Path | None = None) -> StrictMatchResult:
    """Read a match's game log and score each pair with replacement and under strict rules."""
    if not Path(log).is_file():
        raise UserError(f"{log}: no such match log (the .jsonl that `chessdt eval match` writes)")
    try:
        _, records = read_game_log(Path(log))
    except (ValueError, KeyError) as e:
        raise UserError(f"{log}: not a chessdt game log ({' '.join(str(e).split())[:120]})") from None
    pairs = strict_pairs(records)
    if not pairs:
        raise UserError(f"{log}: no decided match games (a match log's games carry the tags a and b)")
    # a match log of `chessdt eval match` lies in <run_dir>/eval/, beside the run's config.json
    result = StrictMatchResult(log=str(log), pairs=pairs, games=sum(p.replaced.games for p in pairs),
                               inputs=run_inputs(Path(log).resolve().parent.parent))
    if out is not None:
        result.save(out)
    return result

