"""Does a softmax ladder choose among good moves? Variety of each rung, from its games and its exact policy.

For each softmax rung of a `games generate` file (:mod:`chessdt.stockfish.softmax`):

* **in the file**: the entropy of its first move as White, and of its first reply as Black after its
  own most common first move (both counted over the file's games, with the number of games);
* **exact**: the mean entropy of its policy, and of its policy among good moves (within `good_cp` of
  the best, renormalised), over the positions it was to move in the first 20 plies and in all plies
  of `games` of its games, with 95% bootstrap intervals over games;
* **self-play**: how many of `selfplay` games of the rung against itself are distinct after
  `selfplay_plies` plies (sampled from the exact policy, seeded).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import chess.pgn
import numpy as np
from tqdm import tqdm

from chessdt.errors import UserError
from chessdt.evals.results import JsonResult, fmt
from chessdt.metrics import bootstrap_ratio, entropy_bits
from chessdt.stockfish.engine import Engine, EngineCommand
from chessdt.stockfish.generate import Rung, ladder_rungs, read_games
from chessdt.stockfish.softmax import DEFAULT_LINE_NODES, good_entropy, policy_of, sample, score_moves, softmax_weights

EARLY_PLIES = 20  # "the opening": plies counted for the early entropies


@dataclass(frozen=True)
class RungVariety:
    rating: int
    rung: str
    games: int  # games of this rung in the file
    first_move_bits: float  # entropy of its first move as White, in the file
    first_move_games: int
    top_first_move: str  # its most common first move (SAN) and that move's share
    top_first_share: float
    reply_bits: float  # entropy of its first reply as Black after top_first_move, in the file
    reply_games: int
    scored_games: int  # games whose positions were scored for the exact entropies
    early_bits: tuple[float, float, float]  # exact policy entropy, first EARLY_PLIES plies (mean, lo, hi)
    early_good_bits: tuple[float, float, float]  # among good moves, first EARLY_PLIES plies
    all_bits: tuple[float, float, float]  # exact policy entropy, all plies
    all_good_bits: tuple[float, float, float]  # among good moves, all plies
    selfplay: int  # self-play games played (0 = not measured)
    selfplay_distinct: int  # of them distinct after selfplay_plies


@dataclass(frozen=True)
class LadderVariety(JsonResult):
    path: str
    rows: tuple[RungVariety, ...]
    good_cp: int
    selfplay_plies: int

    def format(self) -> str:
        def iv(t: tuple[float, float, float]) -> str:
            return f"{fmt(t[0], 2)} [{fmt(t[1], 2)}, {fmt(t[2], 2)}]"

        lines = [f"Variety of the softmax rungs of {self.path} (entropies in bits; exact = the rung's own policy on "
                 f"its positions in the file, 95% bootstrap interval over games; good = within {self.good_cp} cp "
                 "of the best).", "",
                 "| rung | games | 1st move as White (games) | top 1st move | reply as Black to it (games) "
                 f"| exact, plies < {EARLY_PLIES} | good, plies < {EARLY_PLIES} | exact, all | good, all "
                 f"| self-play distinct at ply {self.selfplay_plies} |",
                 "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            sp = f"{r.selfplay_distinct} of {r.selfplay}" if r.selfplay else "-"
            lines.append(f"| {r.rung} | {r.games:,} | {fmt(r.first_move_bits, 2)} ({r.first_move_games:,}) "
                         f"| {r.top_first_move} {fmt(r.top_first_share, 0, pct=True)} "
                         f"| {fmt(r.reply_bits, 2)} ({r.reply_games:,}) | {iv(r.early_bits)} | {iv(r.early_good_bits)} "
                         f"| {iv(r.all_bits)} | {iv(r.all_good_bits)} | {sp} |")
        return "\n".join(lines)


def _opening(game: chess.pgn.Game) -> list[chess.Move]:
    """A game's first two moves (fewer if it is shorter)."""
    moves = []
    for move in game.mainline_moves():
        moves.append(move)
        if len(moves) == 2:
            break
    return moves


def _selfplay_distinct(engine: Engine, rung: Rung, games: int, plies: int, seed: int, progress: bool) -> int:
    lines = set()
    for i in tqdm(range(games), desc=f"self-play {rung.rating}", disable=not progress, unit="game"):
        rng = random.Random(f"selfplay/{seed}/{rung}/{i}")
        board = chess.Board()
        while board.ply() < plies and board.outcome() is None:
            s = score_moves(engine, board, rung.nodes or DEFAULT_LINE_NODES)
            board.push(sample(policy_of(s, rung.strength), rng))
        lines.add(tuple(board.move_stack))
    return len(lines)


def ladder_variety(path: Path, engine_path: EngineCommand, *, ratings: Sequence[int] = (), games: int = 40,
                   selfplay: int = 400, selfplay_plies: int = 10, good_cp: int = 50, seed: int = 0,
                   progress: bool = False) -> LadderVariety:
    """The variety table of the softmax rungs of a ladder file (`ratings`: only these rungs)."""
    all_games = list(read_games(path))
    if not all_games:
        raise UserError(f"{path}: no games")
    rungs = ladder_rungs(all_games[0].headers.get("Event", ""))
    if not rungs:
        raise UserError(f"{path}: not a `chessdt games generate` file (no ladder settings in its Event tag)")
    chosen = [r for r in rungs if r.strength.softmax is not None and (not ratings or r.rating in ratings)]
    if not chosen:
        raise UserError(f"{path}: no softmax rung{' rated ' + ', '.join(map(str, ratings)) if ratings else ''} "
                        f"among {', '.join(str(r) for r in rungs)}")
    rows = []
    with Engine(engine_path, hash_mb=1) as engine:
        for rung in sorted(chosen, key=lambda r: -r.rating):
            tag = str(rung.rating)
            as_white = [g for g in all_games if g.headers.get("WhiteElo") == tag]
            as_black = [g for g in all_games if g.headers.get("BlackElo") == tag]
            first = Counter(line[0] for line in (_opening(g) for g in as_white) if line)
            top, top_n = first.most_common(1)[0] if first else (None, 0)
            replies = Counter(line[1] for line in (_opening(g) for g in as_black) if len(line) == 2 and line[0] == top)
            mine = sorted(as_white + as_black, key=lambda g: int(g.headers.get("LadderIndex", "0")))[:games]
            sums = np.zeros((len(mine), 6))  # early H, early good H, early n, all H, all good H, all n
            for gi, g in enumerate(tqdm(mine, desc=f"exact {rung.rating}", disable=not progress, unit="game")):
                color = chess.WHITE if g.headers.get("WhiteElo") == tag else chess.BLACK
                board = g.board()
                for move in g.mainline_moves():
                    if board.turn == color:
                        s = score_moves(engine, board, rung.nodes or DEFAULT_LINE_NODES)
                        p = softmax_weights(s, rung.strength)
                        h, hg = entropy_bits(p), good_entropy(s.cp, p, good_cp)
                        early = board.ply() < EARLY_PLIES
                        sums[gi] += [h * early, hg * early, early, h, hg, 1]
                    board.push(move)
            distinct = _selfplay_distinct(engine, rung, selfplay, selfplay_plies, seed, progress) if selfplay else 0
            rows.append(RungVariety(
                rating=rung.rating, rung=str(rung), games=len(as_white) + len(as_black),
                first_move_bits=entropy_bits(first.values()) if first else float("nan"),
                first_move_games=sum(first.values()),
                top_first_move=chess.Board().san(top) if top is not None else "-",
                top_first_share=top_n / max(sum(first.values()), 1),
                reply_bits=entropy_bits(replies.values()) if replies else float("nan"),
                reply_games=sum(replies.values()), scored_games=len(mine),
                early_bits=bootstrap_ratio(sums[:, 0], sums[:, 2], seed=seed),
                early_good_bits=bootstrap_ratio(sums[:, 1], sums[:, 2], seed=seed),
                all_bits=bootstrap_ratio(sums[:, 3], sums[:, 5], seed=seed),
                all_good_bits=bootstrap_ratio(sums[:, 4], sums[:, 5], seed=seed),
                selfplay=selfplay, selfplay_distinct=distinct))
    return LadderVariety(path=str(path), rows=tuple(rows), good_cp=good_cp, selfplay_plies=selfplay_plies)
