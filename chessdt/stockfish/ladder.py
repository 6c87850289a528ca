"""Is the ladder a ladder? Score vs rating difference between the rungs of engine-rated games.

Reads only headers (WhiteElo, BlackElo, Result), so it works on any PGN with both ratings, though it
is meant for `games generate` output where ratings are nominal rungs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import chess.pgn

from chessdt.metrics import EloEstimate, elo_difference, fit_elo, wilson_interval
from chessdt.data.archives import open_text
from chessdt.data.pgn import parse_rating

_POINTS = {"1-0": (1.0, 0.0), "0-1": (0.0, 1.0), "1/2-1/2": (0.5, 0.5)}


@dataclass
class Tally:
    games: int = 0
    points: float = 0.0  # of the stronger (or, per rung, of this rung's) side
    draws: int = 0

    def add(self, points: float) -> None:
        self.games += 1
        self.points += points
        self.draws += points == 0.5

    @property
    def score(self) -> float:
        return self.points / self.games if self.games else float("nan")


@dataclass
class LadderReport:
    """Per rung, per pair of rungs and per rating difference: games and score."""

    rungs: dict[int, Tally] = field(default_factory=lambda: defaultdict(Tally))
    opp_sum: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    pairs: dict[tuple[int, int], Tally] = field(default_factory=lambda: defaultdict(Tally))  # (low, high): high's score
    by_diff: dict[int, Tally] = field(default_factory=lambda: defaultdict(Tally))  # |diff|: stronger side's score
    skipped: int = 0  # games without both ratings or a decisive/drawn result

    def add(self, white: int, black: int, result: str) -> None:
        if result not in _POINTS or white == black:
            self.skipped += 1
            return
        w, b = _POINTS[result]
        for rating, opp, pts in ((white, black, w), (black, white, b)):
            self.rungs[rating].add(pts)
            self.opp_sum[rating] += opp
        low, high = sorted((white, black))
        high_points = w if white == high else b
        self.pairs[(low, high)].add(high_points)
        self.by_diff[high - low].add(high_points)

    @property
    def games(self) -> int:
        return sum(t.games for t in self.pairs.values())

    def violations(self) -> list[tuple[int, int]]:
        """Pairs of rungs where the higher rung did not score above 50%."""
        return [p for p, t in sorted(self.pairs.items()) if t.games and t.score <= 0.5]

    def is_ladder(self) -> bool:
        """Stronger rungs score better: every higher rung beats every lower one on balance."""
        return bool(self.pairs) and not self.violations()

    def fitted_elo(self) -> dict[int, float]:
        """Maximum-likelihood Elo of each rung from all games (draws as half points), the middle rung
        anchored at its nominal rating, so the spread can be read against the nominal ratings."""
        return {k: e.elo for k, e in self.fit().items()}

    def fit(self) -> dict[int, EloEstimate]:
        """:meth:`fitted_elo` with each rung's 95% interval (the anchored middle rung has none)."""
        rows: list[tuple[str, str, float]] = []
        for (low, high), t in self.pairs.items():
            wins = round(t.points - 0.5 * t.draws)
            rows += [(str(high), str(low), 1.0)] * wins + [(str(high), str(low), 0.5)] * t.draws
            rows += [(str(high), str(low), 0.0)] * (t.games - wins - t.draws)
        ratings = sorted(self.rungs)
        middle = ratings[len(ratings) // 2]
        fit = fit_elo(rows, {str(middle): float(middle)}, virtual_draws=0.5)
        return {k: fit[str(k)] for k in ratings}

    def format(self) -> str:
        """Markdown tables: per rung, per rating difference, and the verdict."""
        lines = [f"{self.games:,} games" + (f" ({self.skipped:,} skipped: no rating or result)" if self.skipped else "")]
        fitted = self.fit()
        lines += ["", "| rung | games | score | draws | avg opponent | fitted Elo (middle rung anchored) | 95% interval |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for k in sorted(self.rungs):
            t, e = self.rungs[k], fitted[k]
            iv = "anchor" if e.anchored else f"{e.lo:.0f} .. {e.hi:.0f}"
            lines.append(f"| {k} | {t.games:,} | {100 * t.score:.1f}% | {100 * t.draws / t.games:.0f}% | "
                         f"{self.opp_sum[k] / t.games:.0f} | {e.elo:.0f} | {iv} |")
        lines += ["", "| higher rung | lower rung | games | higher rung's score | 95% interval | Elo difference |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for (low, high), t in sorted(self.pairs.items(), key=lambda kv: (kv[0][1] - kv[0][0], kv[0])):
            lo, hi = wilson_interval(t.points, t.games)
            lines.append(f"| {high} | {low} | {t.games:,} | {100 * t.score:.1f}% | {100 * lo:.1f}-{100 * hi:.1f}% "
                         f"| {elo_difference(t.score):+.0f} |")
        lines += ["", "| rating difference | games | stronger side's score | implied Elo difference |",
                  "|---:|---:|---:|---:|"]
        for d in sorted(self.by_diff):
            t = self.by_diff[d]
            lines.append(f"| {d} | {t.games:,} | {100 * t.score:.1f}% | {elo_difference(t.score):+.0f} |")
        bad = self.violations()
        lines.append("")
        if bad:
            lines.append("NOT a ladder: the higher rung scored <= 50% in " +
                         ", ".join(f"{h} vs {lo} ({100 * self.pairs[(lo, h)].score:.0f}%)" for lo, h in bad))
        else:
            lines.append(f"ladder OK: in all {len(self.pairs)} pairs of rungs the higher rung scored above 50%")
        return "\n".join(lines)


def ladder_report(files: Iterable[Path]) -> LadderReport:
    """Tally score vs rating difference over the games in `files` (headers only)."""
    report = LadderReport()
    for path in files:
        with open_text(path) as stream:
            while (headers := chess.pgn.read_headers(stream)) is not None:
                white, black = parse_rating(headers.get("WhiteElo")), parse_rating(headers.get("BlackElo"))
                if white is None or black is None:
                    report.skipped += 1
                    continue
                report.add(white, black, headers.get("Result", "*"))
    return report
