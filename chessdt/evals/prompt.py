"""The prompt's effect where history cannot help: the first plies of held-out human games, by band.

A whole game tells a model much about its players' strength, so later in a game the history
competes with the rating prompt. In the first `prompt_plies` plies there is almost no history: what
the model does differently at prompt 1200 and prompt 2400 there is the prompt's doing alone. On the
held-out games, every move of a mover rated inside a band (the band around each prompted rating)
within those plies is scored under every prompt (the mover's rating slot holds the prompt; the
opponent's slot the game's own rating), with the model's distribution as it plays at temperature 1
(an illegal draw replaced by its best legal move; with ``eval.guidance`` w > 0, classifier-free
guidance as in play: cond + w * (cond - uncond), the second row with every condition unknown).
Reported, with 95% bootstrap intervals over games:

* **NLL matrix**: nats per move of each band's human moves under each prompt. A model the prompt
  steers explains a band best with its own prompt; the own-prompt gain is NLL(the prompt farthest
  from the band) - NLL(own prompt) on the same positions (paired), Allie's 0.067 nats at scale.
* **first-ply move shares**: White's first move, the data's share of each move by band (Wilson
  interval) beside the model's probability of it under each prompt.
* **first-ply distance**: total variation between the model's first-ply distribution under each
  prompt and each band's own (White's first move and Black's reply, pooled by (ply, move) over the
  band's games: the model's mean probability against the data's share). The plug-in distance to a
  finite sample is biased upwards by its sampling noise, alike for every prompt: compare prompts
  within a band (is a band's own prompt the closest?), not bands with each other.
* **spread**: how far apart the lowest and highest prompts put the first ply (TV between the two,
  on all scored first-ply positions) against how far apart the lowest and highest bands' own first
  plies are (TV between their shares): a prompt that steers as the data does moves as far.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import numpy as np
import torch
from tqdm import tqdm

from chessdt.config import EvalConfig
from chessdt.errors import UserError
from chessdt.evals.heldout import HeldOutGame, band_label, band_of, guided_logits
from chessdt.evals.results import JsonResult, fmt
from chessdt.evals.strength import mover_plies
from chessdt.metrics import bootstrap_ratio, percentile_interval, resample, wilson_interval
from chessdt.play.policy import ModelPolicy, Sampling

FIRST_PLIES = 2  # "first ply" of each side: White's first move and Black's reply


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% interval."""

    value: float
    lo: float
    hi: float

    def text(self, digits: int = 3, pct: bool = False) -> str:
        return f"{fmt(self.value, digits, pct)} [{fmt(self.lo, digits, pct)}, {fmt(self.hi, digits, pct)}]"


@dataclass(frozen=True)
class MoveShare:
    """One first move of White: its share in each band's games and its probability under each prompt."""

    move: str  # UCI
    data: tuple[Estimate, ...]  # per band: the share of the band's White players who opened with it
    model: tuple[float, ...]  # per prompt: the model's mean probability of it at the start position


@dataclass(frozen=True)
class PromptResult(JsonResult):
    prompted: tuple[int, ...]  # rows: prompted rating
    bands: tuple[str, ...]  # columns: the actual-rating band around each prompted rating
    plies: int  # plies scored from the start of each game
    games: int  # held-out games read
    positions: tuple[int, ...]  # per band: scored positions (a mover of the band to move)
    band_games: tuple[int, ...]  # per band: games with a scored position
    nll: tuple[tuple[Estimate, ...], ...]  # [prompt][band] nats per human move
    own_gain: tuple[Estimate | None, ...]  # per band: NLL(farthest prompt) - NLL(own prompt), paired
    best_nll: tuple[int | None, ...]  # per band: the prompt with the lowest NLL
    tv: tuple[tuple[Estimate, ...], ...]  # [prompt][band] total variation of the first-ply distributions
    best_tv: tuple[int | None, ...]  # per band: the prompt closest to the band's first plies
    first_moves: tuple[MoveShare, ...]  # White's most common first moves
    model_spread: Estimate  # TV between the lowest and highest prompt's first-ply distributions
    data_spread: Estimate  # TV between the lowest and highest band's first-ply shares
    bootstrap: int
    guidance: float = 0.0  # classifier-free guidance weight w of the scored distribution (0 = off)

    @property
    def own_best_nll(self) -> int:
        """Bands whose own prompt explains their moves best (of the bands with positions)."""
        return sum(b == r for b, r in zip(self.best_nll, self.prompted))

    @property
    def own_best_tv(self) -> int:
        """Bands whose own prompt's first plies are closest to theirs."""
        return sum(b == r for b, r in zip(self.best_tv, self.prompted))

    def format(self) -> str:
        with_data = sum(n > 0 for n in self.positions)
        head = "| prompt | " + " | ".join(f"band {b}" for b in self.bands) + " |"
        rule = "|---|" + "---:|" * len(self.bands)
        out = [f"The prompt where history cannot help: the first {self.plies} plies of {self.games:,} held-out games "
               f"(positions per band: {', '.join(f'{n:,}' for n in self.positions)}; games: "
               f"{', '.join(f'{n:,}' for n in self.band_games)}); 95% intervals: bootstrap over games "
               f"({self.bootstrap:,} resamples)"
               + (f"; guidance w={self.guidance:g} (cond + w * (cond - uncond))." if self.guidance else "."), "",
               f"NLL of the band's moves under each prompt, nats per move (own prompt best in {self.own_best_nll} of "
               f"{with_data} bands):", "", head, rule]
        for ri, r in enumerate(self.prompted):
            out.append(f"| {r} | " + " | ".join(e.text() for e in self.nll[ri]) + " |")
        out.append("| own-prompt gain | " + " | ".join(g.text() if g else "-" for g in self.own_gain) + " |")
        out += ["", f"Total variation between the prompt's and the band's first-ply distributions (White's first move "
                    f"and Black's reply; own prompt closest in {self.own_best_tv} of {with_data} bands):", "", head, rule]
        for ri, r in enumerate(self.prompted):
            out.append(f"| {r} | " + " | ".join(e.text() for e in self.tv[ri]) + " |")
        out += ["", f"Spread of the first ply: prompts {self.prompted[0]} vs {self.prompted[-1]} "
                    f"{self.model_spread.text()}; the data's bands {self.bands[0]} vs {self.bands[-1]} "
                    f"{self.data_spread.text()} (total variation).", "",
                "White's first move: the data's share by band, the model's probability by prompt:", "",
                "| move | " + " | ".join(f"data {b}" for b in self.bands) + " | "
                + " | ".join(f"prompt {r}" for r in self.prompted) + " |",
                "|---|" + "---:|" * (2 * len(self.bands))]
        for s in self.first_moves:
            out.append(f"| {s.move} | " + " | ".join(e.text(1, pct=True) for e in s.data) + " | "
                       + " | ".join(fmt(p, 1, pct=True) for p in s.model) + " |")
        return "\n".join(out)


def _tv_draws(data: np.ndarray, model: np.ndarray, draws: np.ndarray) -> tuple[float, np.ndarray]:
    """TV between pooled shares: data (G, K) per-game counts, model (G, K) per-game probability sums
    over the same positions; (estimate, one value per resample row of `draws` (S, G))."""

    def tv(d: np.ndarray, m: np.ndarray) -> np.ndarray:  # (..., K) sums -> (...,) TV of the normalised rows
        dn = d / np.maximum(d.sum(-1, keepdims=True), 1e-12)
        mn = m / np.maximum(m.sum(-1, keepdims=True), 1e-12)
        return 0.5 * np.abs(dn - mn).sum(-1)

    est = float(tv(data.sum(0), model.sum(0)))
    weights = _weights(draws, len(data))  # (S, G): how often each game is in each resample
    return est, tv(weights @ data, weights @ model)


def _weights(draws: np.ndarray, n: int) -> np.ndarray:
    """(S, n) multiplicities of each unit in each resample row of `draws` (S, n)."""
    out = np.zeros((len(draws), n))
    for s, row in enumerate(draws):
        out[s] = np.bincount(row, minlength=n)
    return out


def _estimate(est: float, boot: np.ndarray) -> Estimate:
    lo, hi = percentile_interval(boot)
    return Estimate(est, lo, hi)


@torch.no_grad()
def evaluate_prompt(policy: ModelPolicy, games: Sequence[HeldOutGame], cfg: EvalConfig,
                    out_path: Path | None = None, *, progress: bool = False) -> PromptResult:
    """The prompt table of `policy` on the first `cfg.prompt_plies` plies of `games`."""
    ratings, width, plies = cfg.ratings, cfg.band_width, cfg.prompt_plies
    R = len(ratings)
    games = [HeldOutGame(moves=g.moves[:plies], white=g.white, black=g.black, result=g.result) for g in games]
    # jobs: (game, mover colour, prompt) for every mover inside some band
    jobs: list[tuple[int, chess.Color, int]] = []
    for gi, g in enumerate(games):
        for color in chess.COLORS:
            if any(band_of(g.rating(color), r, width) for r in ratings):
                jobs.extend((gi, color, ri) for ri in range(R))
    if not jobs:
        raise UserError(f"no held-out game has a player rated inside the bands of eval.ratings "
                        f"({', '.join(band_label(r, width) for r in ratings)})")
    prompts = []
    for gi, color, ri in jobs:
        g = games[gi]
        white, black = (ratings[ri], g.black) if color == chess.WHITE else (g.white, ratings[ri])
        prompts.append(policy.prompt(white, black, g.result))
    G = len(games)
    nll_sum = np.zeros((R, R, G))  # [prompt][band][game]: summed NLL of the band's moves
    count = np.zeros((R, G))  # [band][game]: scored moves
    # first plies, pooled by (ply, move): keys numbered as met
    keys: dict[tuple[int, int], int] = {}
    first_data: dict[tuple[int, int, int], float] = {}  # (band, game, key) -> count
    first_model: dict[tuple[int, int, int, int], float] = {}  # (prompt, band, game, key) -> probability sum
    sampling = Sampling()
    boards: dict[int, list[chess.Board]] = {}
    bar = tqdm(total=len(jobs), unit="prompt", desc="prompt", disable=not progress)
    for j, logits in guided_logits(policy, games, [gi for gi, _, _ in jobs], prompts, cfg.batch_size, cfg.guidance):
        bar.update(1)
        gi, color, ri = jobs[j]
        g = games[gi]
        cols = [ci for ci, r in enumerate(ratings) if band_of(g.rating(color), r, width)]
        ps = list(mover_plies(color, 0, min(len(logits), plies)))
        if not ps:
            continue
        if gi not in boards:
            board = chess.Board()
            boards[gi] = []
            for m in g.moves:
                boards[gi].append(board.copy(stack=False))
                board.push(m)
        legal = torch.stack([policy.vocab.legal_mask(boards[gi][p]) for p in ps])
        probs = sampling.played(logits[ps], legal).double()  # (len(ps), 1968)
        played = [policy.vocab.encode_move(g.moves[p]) for p in ps]
        nll = -torch.log(probs[torch.arange(len(ps)), played].clamp_min(1e-12))
        for ci in cols:
            nll_sum[ri, ci, gi] += float(nll.sum())
            if ri == 0:
                count[ci, gi] += len(ps)
        for k, p in enumerate(ps):
            if p >= FIRST_PLIES:
                continue
            for mid in probs[k].nonzero().flatten().tolist():
                key = keys.setdefault((p, mid), len(keys))
                for ci in cols:
                    first_model[ri, ci, gi, key] = first_model.get((ri, ci, gi, key), 0.0) + float(probs[k, mid])
            key = keys.setdefault((p, played[k]), len(keys))
            if ri == 0:
                for ci in cols:
                    first_data[ci, gi, key] = first_data.get((ci, gi, key), 0.0) + 1.0
    bar.close()
    K = len(keys)
    data_dense = np.zeros((R, G, K))
    model_dense = np.zeros((R, R, G, K))
    for (ci, gi, key), v in first_data.items():
        data_dense[ci, gi, key] = v
    for (ri, ci, gi, key), v in first_model.items():
        model_dense[ri, ci, gi, key] = v

    B = cfg.prompt_bootstrap
    nll_rows: list[list[Estimate]] = [[] for _ in range(R)]
    tv_rows: list[list[Estimate]] = [[] for _ in range(R)]
    gains: list[Estimate | None] = []
    best_nll: list[int | None] = []
    best_tv: list[int | None] = []
    band_games: list[int] = []
    for ci in range(R):
        members = np.flatnonzero(count[ci] > 0)
        band_games.append(len(members))
        draws = resample(len(members), B, cfg.seed) if len(members) else np.zeros((0, 0), dtype=int)
        nan = Estimate(math.nan, math.nan, math.nan)
        for ri in range(R):
            if not len(members):
                nll_rows[ri].append(nan)
                tv_rows[ri].append(nan)
                continue
            nll_rows[ri].append(Estimate(*bootstrap_ratio(nll_sum[ri, ci, members], count[ci, members],
                                                          resamples=B, seed=cfg.seed)))
            tv_rows[ri].append(_estimate(*_tv_draws(data_dense[ci, members], model_dense[ri, ci, members], draws)))
        if not len(members):
            gains.append(None)
            best_nll.append(None)
            best_tv.append(None)
            continue
        far = max(range(R), key=lambda r: (abs(ratings[r] - ratings[ci]), r))
        gains.append(Estimate(*bootstrap_ratio(nll_sum[far, ci, members] - nll_sum[ci, ci, members],
                                               count[ci, members], resamples=B, seed=cfg.seed)) if far != ci else None)
        best_nll.append(_strict_best([nll_rows[ri][ci].value for ri in range(R)], ratings))
        best_tv.append(_strict_best([tv_rows[ri][ci].value for ri in range(R)], ratings))

    # White's first move: the data's share per band (Wilson), the model's mean probability per prompt
    ply0 = sorted(((mid, key) for (p, mid), key in keys.items() if p == 0), key=lambda t: t[1])
    total0 = data_dense[:, :, [k for _, k in ply0]].sum(1) if ply0 else np.zeros((R, 0))  # (R, moves)
    order = [o for o in np.argsort(-total0.sum(0), kind="stable") if total0[:, o].sum() > 0][: cfg.prompt_top_moves]
    all_model0 = model_dense[:, :, :, [k for _, k in ply0]].sum((1, 2)) if ply0 else np.zeros((R, 0))  # (R, moves)
    starts = all_model0.sum(1, keepdims=True)
    shares = []
    for o in order:
        mid = ply0[o][0]
        data = []
        for ci in range(R):
            n0 = float(total0[ci].sum())
            k0 = float(total0[ci, o])
            lo, hi = wilson_interval(k0, n0)
            data.append(Estimate(k0 / n0 if n0 else math.nan, lo, hi))
        model = tuple(float(all_model0[ri, o] / starts[ri, 0]) if starts[ri, 0] else math.nan for ri in range(R))
        shares.append(MoveShare(move=policy.vocab.decode_move(mid).uci(), data=tuple(data), model=model))

    # spread: lowest vs highest prompt on every scored first-ply position; lowest vs highest band's shares
    any_games = np.flatnonzero(count.sum(0) > 0)
    pooled = model_dense.sum(1)  # (R, G, K): a position in two bands would count twice; the prompts alike
    draws = resample(len(any_games), B, cfg.seed)
    model_spread = _estimate(*_tv_draws(pooled[0, any_games], pooled[-1, any_games], draws))
    lo_g, hi_g = np.flatnonzero(count[0] > 0), np.flatnonzero(count[-1] > 0)
    if len(lo_g) and len(hi_g) and R > 1:
        d_lo, d_hi = data_dense[0, lo_g], data_dense[-1, hi_g]
        w_lo = _weights(resample(len(lo_g), B, cfg.seed), len(lo_g))
        w_hi = _weights(resample(len(hi_g), B, cfg.seed + 1), len(hi_g))
        est = _tv_draws(d_lo.sum(0, keepdims=True), d_hi.sum(0, keepdims=True), np.zeros((0, 1), dtype=int))[0]
        boot = np.array([_tv_draws((w_lo[s] @ d_lo)[None], (w_hi[s] @ d_hi)[None], np.zeros((0, 1), dtype=int))[0]
                         for s in range(B)])
        data_spread = _estimate(est, boot)
    else:
        data_spread = Estimate(math.nan, math.nan, math.nan)

    result = PromptResult(
        prompted=tuple(ratings), bands=tuple(band_label(r, width) for r in ratings), plies=plies, games=len(games),
        positions=tuple(int(c) for c in count.sum(1)), band_games=tuple(band_games),
        nll=tuple(tuple(row) for row in nll_rows), own_gain=tuple(gains), best_nll=tuple(best_nll),
        tv=tuple(tuple(row) for row in tv_rows), best_tv=tuple(best_tv), first_moves=tuple(shares),
        model_spread=model_spread, data_spread=data_spread, bootstrap=B, guidance=cfg.guidance)
    if out_path is not None:
        result.save(out_path)
    return result


def _strict_best(values: Sequence[float], ratings: Sequence[int]) -> int | None:
    """The rating whose value is strictly lowest; None for a tie or no data.

    >>> _strict_best([0.3, 0.1, 0.2], [1200, 1600, 2000]), _strict_best([0.1, 0.1], [1200, 1600])
    (1600, None)
    """
    finite = [(v, r) for v, r in zip(values, ratings) if math.isfinite(v)]
    if not finite:
        return None
    best = min(v for v, _ in finite)
    winners = [r for v, r in finite if v == best]
    return winners[0] if len(winners) == 1 else None
