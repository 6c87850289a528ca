"""Fidelity: does the model, prompted with a rung's rating, reproduce that rung's exact policy?

On held-out games of a softmax ladder (:mod:`chessdt.stockfish.softmax`), every position where a
softmax rung was to move has a known answer: the distribution the generator sampled that move from.
The model sees the same game under its own players' ratings (the prompt names the mover's rung) and
gives its distribution over legal moves as it plays them (temperature 1, an illegal draw replaced by
its best legal move). Per prompted rung, with 95% intervals from a bootstrap over games:

* KL(rung || model) in bits per position: how surprised the model is by the rung's choices;
* entropy ratio H(model) / H(rung) (ratio of the means): below 1 the model is more certain than the
  data's policy (collapse), above 1 less;
* total variation, 1/2 sum |p_rung - p_model|;
* agreement: the model's most likely move is the rung's most likely move;
* the rung's own entropy among good moves (within `good_cp` of the best, renormalised).

The rung of each player comes from the ladder file's Event tag (or eval.fidelity_rungs), matched
to a game's rating through the prepared set's rating bucket.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import chess.pgn
import numpy as np
import torch
from tqdm import tqdm

from chessdt.config import EvalConfig
from chessdt.data.archives import open_text
from chessdt.errors import UserError
from chessdt.evals.heldout import HeldOutGame, teacher_forced_logits
from chessdt.evals.openings import entropy_rows
from chessdt.evals.results import JsonResult, fmt
from chessdt.metrics import bootstrap_ratio
from chessdt.play.policy import ModelPolicy, Sampling
from chessdt.stockfish.engine import Engine, find_stockfish
from chessdt.stockfish.generate import Rung, ladder_rungs
from chessdt.stockfish.softmax import DEFAULT_LINE_NODES, good_entropy, score_moves, softmax_weights


@dataclass(frozen=True)
class FidelityRow:
    """One prompted rung: the model at that rating against the rung's exact policy."""

    rating: int  # the rung's nominal rating, the prompt
    rung: str  # its spec
    games: int  # held-out games with positions of this rung
    positions: int  # positions where this rung was to move
    kl: float  # KL(rung || model), bits per position
    kl_lo: float
    kl_hi: float
    h_rung: float  # mean entropy of the rung's policy, bits
    h_model: float  # mean entropy of the model's, bits
    ratio: float  # h_model / h_rung
    ratio_lo: float
    ratio_hi: float
    tv: float  # mean total variation distance
    tv_lo: float
    tv_hi: float
    agree: float  # share of positions where the two most likely moves are the same
    agree_lo: float
    agree_hi: float
    h_good: float  # the rung's mean entropy among good moves (within good_cp of the best), bits


@dataclass(frozen=True)
class FidelityResult(JsonResult):
    rows: tuple[FidelityRow, ...]
    games: int  # held-out games read
    skipped_games: int  # games none of whose players is a softmax rung of the ladder
    nodes: str  # node budget per scored move, per rung
    max_plies: int  # positions per game scored (from the start)
    good_cp: int
    bootstrap: int

    def format(self) -> str:
        lines = [f"Fidelity on {self.games:,} held-out games ({self.skipped_games:,} without a softmax rung left out), "
                 f"the first {self.max_plies} plies of each; each position's exact rung policy from Stockfish "
                 f"({self.nodes} nodes per move scored). KL(rung || model) in bits; entropy ratio H(model) / H(rung); "
                 f"TV = total variation; agree = same most likely move. 95% intervals: bootstrap over games "
                 f"({self.bootstrap:,} resamples).", "",
                 "| prompt (rung) | games | positions | KL bits | H(rung) | H(model) | entropy ratio | TV | agree | "
                 f"H(rung) among moves within {self.good_cp} cp |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append(
                f"| {r.rating} ({r.rung}) | {r.games:,} | {r.positions:,} | {fmt(r.kl, 3)} [{fmt(r.kl_lo, 3)}, {fmt(r.kl_hi, 3)}] "
                f"| {fmt(r.h_rung, 2)} | {fmt(r.h_model, 2)} | {fmt(r.ratio, 2)} [{fmt(r.ratio_lo, 2)}, {fmt(r.ratio_hi, 2)}] "
                f"| {fmt(r.tv, 3)} [{fmt(r.tv_lo, 3)}, {fmt(r.tv_hi, 3)}] "
                f"| {fmt(r.agree, 1, pct=True)} [{fmt(r.agree_lo, 1, pct=True)}, {fmt(r.agree_hi, 1, pct=True)}] "
                f"| {fmt(r.h_good, 2)} |")
        return "\n".join(lines)


def rungs_of(cfg: EvalConfig, data_inputs: Sequence[str]) -> tuple[Rung, ...]:
    """The ladder's rungs: eval.fidelity_rungs if set, else the Event tag of the first ladder file
    among the data inputs. UserError when neither names a softmax rung."""
    from chessdt.stockfish.generate import parse_rungs

    if cfg.fidelity_rungs:
        rungs = parse_rungs(",".join(cfg.fidelity_rungs))
    else:
        rungs = ()
        for name in data_inputs:
            path = Path(name)
            if path.is_file():
                try:
                    with open_text(path) as stream:  # the first game's headers: no need to read the file
                        headers = chess.pgn.read_headers(stream)
                except (OSError, ValueError, UnicodeError):
                    continue
                found = ladder_rungs(headers.get("Event", "")) if headers is not None else None
                if found:
                    rungs = found
                    break
    softmax = tuple(r for r in rungs if r.strength.softmax is not None)
    if not softmax:
        raise UserError("fidelity needs a ladder with softmax rungs: train on a `chessdt games generate` file with "
                        "RATING:softmax=T rungs, or set eval.fidelity_rungs")
    return softmax


def match_rung(rating: int | None, rungs: Sequence[Rung], bucket: int) -> Rung | None:
    """The rung a game's rating stands for: the nearest within one rating bucket (a prepared set
    stores the middle of the rung's bucket).

    >>> rungs = (Rung.parse("1000:softmax=85"), Rung.parse("2000:softmax=20"))
    >>> match_rung(2050, rungs, 100).rating, match_rung(1500, rungs, 100), match_rung(None, rungs, 100)
    (2000, None, None)
    """
    if rating is None:
        return None
    best = min(rungs, key=lambda r: abs(r.rating - rating))
    return best if abs(best.rating - rating) < bucket else None


def compare(p_rung: torch.Tensor, p_model: torch.Tensor) -> tuple[float, float, float, float, float]:
    """(KL(rung || model) bits, H(rung), H(model), total variation, same most likely move) of two
    distributions over the same moves (1-D tensors).

    >>> p = torch.tensor([0.5, 0.5, 0.0]); q = torch.tensor([0.25, 0.25, 0.5])
    >>> [round(x, 3) for x in compare(p, q)]
    [1.0, 1.0, 1.5, 0.5, 0.0]
    """
    p, q = p_rung.double(), p_model.double()
    kl = float(torch.where(p > 0, p * (p.clamp_min(1e-300).log2() - q.clamp_min(1e-12).log2()), 0.0).sum())
    return (max(kl, 0.0), float(entropy_rows(p[None])[0]), float(entropy_rows(q[None])[0]),
            0.5 * float((p - q).abs().sum()), float(p.argmax() == q.argmax()))


@torch.no_grad()
def evaluate_fidelity(policy: ModelPolicy, games: Sequence[HeldOutGame], rungs: Sequence[Rung], cfg: EvalConfig,
                      out_path: Path | None = None, *, progress: bool = False) -> FidelityResult:
    """The fidelity table of `policy` on `games` against the exact policies of `rungs`."""
    bucket = policy.vocab.rating_bucket
    plies = cfg.fidelity_plies
    # per rung: per-game sums of kl, h_rung, h_model, tv, agree, h_good and the position count
    sums: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    usable = [g for g in games if any(match_rung(g.rating(c), rungs, bucket) for c in chess.COLORS)]
    prompts = [policy.prompt(g.white, g.black, g.result) for g in usable]
    total = sum(min(len(g.moves), plies) for g in usable)
    bar = tqdm(total=total, unit="pos", desc="fidelity", disable=not progress)
    with Engine(find_stockfish(cfg.engine or None), hash_mb=1) as engine:
        for i, logits in teacher_forced_logits(policy, usable, prompts):
            g = usable[i]
            board = chess.Board()
            for j in range(min(len(logits), plies)):
                rung = match_rung(g.rating(board.turn), rungs, bucket)
                if rung is not None:
                    scores = score_moves(engine, board, rung.nodes or DEFAULT_LINE_NODES)
                    p_rung = torch.tensor(softmax_weights(scores, rung.strength), dtype=torch.float64)
                    ids = torch.tensor([policy.vocab.encode_move(m) for m in scores.moves])
                    legal = torch.zeros(1, logits.shape[-1], dtype=torch.bool)
                    legal[0, ids] = True
                    p_model = Sampling().played(logits[j : j + 1], legal)[0, ids].double()
                    row = np.array([*compare(p_rung, p_model),
                                    good_entropy(scores.cp, p_rung.tolist(), cfg.fidelity_good_cp), 1.0])
                    acc = sums[rung.rating]
                    acc[i] = acc.get(i, np.zeros(7)) + row
                bar.update(1)
                board.push(g.moves[j])
    bar.close()
    rows = []
    for rung in sorted(rungs, key=lambda r: r.rating):
        per_game = np.array(list(sums[rung.rating].values())) if sums.get(rung.rating) else np.zeros((0, 7))
        if not len(per_game):
            continue
        n = per_game[:, 6]

        def mean(col: int) -> tuple[float, float, float]:
            return bootstrap_ratio(per_game[:, col], n, resamples=cfg.value_bootstrap, seed=cfg.seed)

        kl, h_r, h_m, tv, agree = (mean(c) for c in range(5))
        ratio = bootstrap_ratio(per_game[:, 2], per_game[:, 1], resamples=cfg.value_bootstrap, seed=cfg.seed)
        rows.append(FidelityRow(rating=rung.rating, rung=str(rung), games=len(per_game), positions=int(n.sum()),
                                kl=kl[0], kl_lo=kl[1], kl_hi=kl[2], h_rung=h_r[0], h_model=h_m[0],
                                ratio=ratio[0], ratio_lo=ratio[1], ratio_hi=ratio[2], tv=tv[0], tv_lo=tv[1],
                                tv_hi=tv[2], agree=agree[0], agree_lo=agree[1], agree_hi=agree[2],
                                h_good=mean(5)[0]))
    if not rows:
        raise UserError("no held-out position was played by a softmax rung of the ladder "
                        f"({', '.join(str(r) for r in rungs)}): are these the ladder's games?")
    nodes = ", ".join(f"{r.rating}: {r.nodes}" for r in sorted(rungs, key=lambda r: r.rating))
    result = FidelityResult(rows=tuple(rows), games=len(usable), skipped_games=len(games) - len(usable), nodes=nodes,
                            max_plies=plies, good_cp=cfg.fidelity_good_cp, bootstrap=cfg.value_bootstrap)
    if out_path is not None:
        result.save(out_path)
    return result

