"""How varied is the model's opening play at each prompted rating, next to humans of that rating?

For each subject (a policy at a prompted rating, or any Player): N self-play games and N games
against one fixed opponent, played only as far as the longest line measured (no opening book).
From the first k plies of those games (k = 2, 4, 8, 12 by default):

* entropy in bits of the distribution of first-k-ply lines, the number of distinct lines and the
  share of the most common one;
* Jensen-Shannon divergence (bits, 0..1) from the same distribution in held-out human games whose
  players' mean rating lies in the subject's band;
* mean policy entropy (bits) of the distribution the subject actually plays from (temperature,
  top-p, guidance, and the replacement of illegal samples applied) over its moves in those plies;
* the repeated-prompt test: the same position sampled N times: distinct moves, top move's share.

The same line and repeated-position metrics are computed on the human games of each band, with
the same number of games as the model (plug-in entropies grow with the sample size, so only equal
sizes compare).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import torch

from chessdt.play.arena import GameSpec, Seat, run_games
from chessdt.rules import Opponent
from chessdt.play.opponents import seat_for
from chessdt.play.gamelog import GameRecord
from chessdt.rules import parse_line
from chessdt.config import EvalConfig
from chessdt.evals.results import JsonResult, fmt
from chessdt.evals.subject import Subject
from chessdt.evals.heldout import HeldOutGame, band_label, band_of
from chessdt.metrics import entropy_bits, js_divergence
from chessdt.play.policy import Sampling, Session

Line = tuple[str, ...]  # UCI moves


@dataclass(frozen=True)
class LineStats:
    """The distribution of first-k-ply lines over a set of games."""

    k: int
    games: int  # games at least k plies long (the ones counted)
    entropy: float  # bits
    distinct: int  # different lines
    top_share: float  # share of the most common line
    top_line: str  # it, in SAN
    js_to_data: float | None  # JS divergence (bits) from the human band's lines; None on data rows


@dataclass(frozen=True)
class RepeatStats:
    """One position sampled many times."""

    line: str  # the position: moves from the start (SAN), 'start' for the initial position
    samples: int
    distinct: int  # different moves among the samples
    top_share: float  # share of the most common move
    top_move: str  # it, in SAN


@dataclass(frozen=True)
class OpeningRow:
    source: str  # 'self-play', 'vs <opponent>', or 'data'
    label: str  # subject label, or 'data <band>' for the held-out games of a band
    rating: int | None  # prompted rating (data: the band's prompted rating)
    games: int
    lines: tuple[LineStats, ...]
    policy_entropy: float | None  # mean bits over the subject's moves (None for data and non-model players)
    repeat: tuple[RepeatStats, ...]  # the repeated-prompt test (on a subject's first row only)


@dataclass(frozen=True)
class OpeningsResult(JsonResult):
    rows: tuple[OpeningRow, ...]
    line_plies: tuple[int, ...]
    band_width: int
    opponent: str
    notes: tuple[str, ...]

    def format(self) -> str:
        """Markdown tables: entropy, distinct lines, top share, JS divergence; policy entropy; repeats."""
        ks = self.line_plies
        head = "| source | subject | games | " + " | ".join(f"k={k}" for k in ks) + " |"
        rule = "|---|---|---:|" + "---:|" * len(ks)
        out: list[str] = []
        for title, cell in (
            ("Entropy of first-k-ply lines (bits)", lambda s: fmt(s.entropy, 2)),
            ("Distinct lines / top line's share", lambda s: f"{s.distinct} / {fmt(s.top_share, 0, True)}"),
            ("Jensen-Shannon divergence from human games of the band (bits, 0..1)", lambda s: fmt(s.js_to_data, 2)),
        ):
            out += [title, "", head, rule]
            for r in self.rows:
                out.append(f"| {r.source} | {r.label} | {r.games} | " + " | ".join(cell(s) for s in r.lines) + " |")
            out.append("")
        out += ["Mean policy entropy over the first plies (bits per move) and the repeated-prompt test "
                "(distinct moves / top share of N samples)", ""]
        lines = next((tuple(rep.line for rep in r.repeat) for r in self.rows if r.repeat), ())
        out += ["| source | subject | policy entropy | " + " | ".join(lines) + " |",
                "|---|---|---:|" + "---:|" * len(lines)]
        for r in self.rows:
            reps = " | ".join(f"{x.distinct} / {fmt(x.top_share, 0, True)} ({x.top_move})" for x in r.repeat) \
                if r.repeat else " | ".join("" for _ in lines)
            out.append(f"| {r.source} | {r.label} | {fmt(r.policy_entropy, 2)} | {reps} |")
        out += [""] + [f"note: {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"


# -- distributions --------------------------------------------------------------------------------------------
def entropy_rows(probs: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of each row of a (B, V) probability matrix."""
    logp = torch.where(probs > 0, probs.log2(), torch.zeros_like(probs))
    return -(probs * logp).sum(-1)


def line_stats(lines: Sequence[Line], k: int, reference: Sequence[Line] | None = None) -> LineStats:
    """Distribution of the first k plies of games given as move lists (games shorter than k left out)."""
    counts = Counter(tuple(line[:k]) for line in lines if len(line) >= k)
    n = sum(counts.values())
    js = None
    if reference is not None:
        ref = Counter(tuple(line[:k]) for line in reference if len(line) >= k)
        js = js_divergence(counts, ref) if counts and ref else math.nan
    if not counts:
        return LineStats(k=k, games=0, entropy=math.nan, distinct=0, top_share=math.nan, top_line="", js_to_data=js)
    top, top_n = counts.most_common(1)[0]
    return LineStats(k=k, games=n, entropy=entropy_bits(counts.values()), distinct=len(counts), top_share=top_n / n,
                     top_line=_san(top), js_to_data=js)


def _san(line: Sequence[str]) -> str:
    board = chess.Board()
    return board.variation_san([chess.Move.from_uci(m) for m in line]) if line else "start"


def _repeat_stats(line: Line, moves: Sequence[str]) -> RepeatStats:
    counts = Counter(moves)
    label = _san(line)
    if not counts:
        return RepeatStats(line=label, samples=0, distinct=0, top_share=math.nan, top_move="")
    top, top_n = counts.most_common(1)[0]
    board = chess.Board()
    for m in line:
        board.push_uci(m)
    return RepeatStats(line=label, samples=len(moves), distinct=len(counts), top_share=top_n / len(moves),
                       top_move=board.san(chess.Move.from_uci(top)))


def _repeat_lines(cfg: EvalConfig) -> list[Line]:
    return [() if text.strip() in ("", "start") else tuple(m.uci() for m in parse_line(text)) for text in cfg.repeat_lines]


# -- the model side --------------------------------------------------------------------------------------------------
@torch.no_grad()
def policy_entropy(subject: Subject, records: Sequence[GameRecord], plies: int) -> float | None:
    """Mean entropy (bits) of the distribution the subject played from, over its moves in the first
    `plies` plies of the given games (replayed through a Session: the play path, guidance included)."""
    if subject.prompted is None:
        return None
    model = subject.prompted
    rows: list[tuple[int, chess.Color]] = []
    prompts = []
    lines = [[chess.Move.from_uci(m) for m in r.line()[:plies]] for r in records]
    for gi, r in enumerate(records):
        for color, name in ((chess.WHITE, r.white), (chess.BLACK, r.black)):
            if name == subject.label:
                rows.append((gi, color))
                prompts.append(model.prompt(color))
    if not rows:
        return math.nan
    session = Session(model.policy, prompts, model.sampling.guidance)
    total, count = 0.0, 0
    for ply in range(plies):
        logits = session.logits
        pick = [i for i, (gi, color) in enumerate(rows) if ply < len(lines[gi]) and (ply % 2 == 0) == (color == chess.WHITE)]
        if pick:
            boards = [session.boards[i] for i in pick]
            legal = torch.stack([model.policy.vocab.legal_mask(b) for b in boards])
            probs = model.sampling.played(logits[pick].cpu(), legal)
            ent = entropy_rows(probs)
            total += float(ent.sum())
            count += len(pick)
        if all(ply + 1 >= len(lines[gi]) for gi, _ in rows):
            break
        session.push([lines[gi][ply] if ply < len(lines[gi]) else None for gi, _ in rows])
    return total / count if count else math.nan


@torch.no_grad()
def repeated_prompt(subject: Subject, line: Line, samples: int, seed: int = 0) -> RepeatStats:
    """The position after `line`, sampled `samples` times at the subject's settings."""
    board = chess.Board()
    for m in line:
        board.push_uci(m)
    if subject.prompted is not None:
        model = subject.prompted
        pol = model.policy
        session = Session(pol, [model.prompt(board.turn)], model.sampling.guidance)
        for m in line:
            session.push([chess.Move.from_uci(m)])
        probs = model.sampling.played(session.logits.cpu(), pol.vocab.legal_mask(board)[None])[0]
        gen = torch.Generator().manual_seed(seed)
        draws = torch.multinomial(probs, samples, replacement=True, generator=gen).tolist()
        moves = [pol.vocab.decode_move(t).uci() for t in draws]
    else:
        moves = []
        for i in range(samples):  # a fresh, differently seeded player per sample: N independent draws
            with subject.open_player(seed + i) as player:
                moves.append(player.play(board.copy()).uci())
    return _repeat_stats(line, moves)


def _play_lines(subjects: Sequence[Subject], opponent: Opponent | None, games: int, plies: int, cfg: EvalConfig,
                tag: str) -> dict[str, list[GameRecord]]:
    """`games` games of `plies` plies per subject: self-play (opponent None) or against the opponent."""
    seats: dict[str, Seat] = {s.label: s.seat for s in subjects}
    specs = []
    for s in subjects:
        for g in range(games):
            if opponent is None:
                white = black = s.label
            else:
                white, black = (s.label, opponent.label) if g % 2 == 0 else (opponent.label, s.label)
            specs.append(GameSpec(id=f"{tag}|{s.label}|{g}", white=white, black=black, seed=cfg.seed,
                                  tags={"subject": s.label}))
    if opponent is not None:
        seats[opponent.label] = seat_for(opponent, cfg.engine or None, nodes=cfg.ladder_nodes)
    records = run_games(specs, seats, None, batch_size=cfg.batch_size, workers=cfg.workers, max_plies=plies)
    out: dict[str, list[GameRecord]] = {s.label: [] for s in subjects}
    for r in records:
        out[r.tags["subject"]].append(r)
    return out


# -- the whole evaluation ----------------------------------------------------------------------------------------------
def evaluate_openings(subjects: Sequence[Subject], games: Sequence[HeldOutGame], cfg: EvalConfig,
                      out_dir: Path | None = None) -> OpeningsResult:
    """The openings evaluation of issue 4 at the sizes of `cfg` (saved to out_dir/openings.json)."""
    ks = tuple(sorted(set(cfg.line_plies)))
    plies = max(ks)
    repeat = _repeat_lines(cfg)
    opponent = Opponent.parse(cfg.openings_opponent) if cfg.openings_vs_games > 0 else None
    notes: list[str] = []
    rng = random.Random(cfg.seed)
    human_lines = [tuple(m.uci() for m in g.moves[:plies]) for g in games]

    def band_games(rating: int | None) -> list[int]:
        return [i for i, g in enumerate(games) if rating is not None and band_of(g.mean_rating, rating, cfg.band_width)]

    selfplay = _play_lines(subjects, None, cfg.openings_games, plies, cfg, "self") if cfg.openings_games > 0 else {}
    versus = _play_lines(subjects, opponent, cfg.openings_vs_games, plies, cfg, "vs") if opponent is not None else {}
    rows: list[OpeningRow] = []
    for s in subjects:
        band = band_games(s.rating)
        reference = [human_lines[i] for i in band] or None
        if reference is None:
            notes.append(f"{s.label}: no held-out human games in its band; JS divergence not computed")
        first = True  # the repeated-prompt test depends on the subject only: shown on its first row
        for source, recs in (("self-play", selfplay.get(s.label)), (f"vs {opponent.label if opponent else ''}", versus.get(s.label))):
            if not recs:
                continue
            lines = [r.line() for r in recs]
            rows.append(OpeningRow(
                source=source, label=s.label, rating=s.rating, games=len(recs),
                lines=tuple(line_stats(lines, k, reference) for k in ks),
                policy_entropy=policy_entropy(s, recs, plies),
                repeat=tuple(repeated_prompt(s, line, cfg.repeat_samples, cfg.seed) for line in repeat) if first else ()))
            first = False
        if band and s.rating is not None:  # a band exists only around a prompted rating
            n = cfg.openings_games or cfg.openings_vs_games
            pick = sorted(rng.sample(band, min(n, len(band))))
            if len(band) < n:
                notes.append(f"data {band_label(s.rating, cfg.band_width)}: only {len(band)} held-out games "
                             f"(model rows use {n}); entropies are not comparable at unequal sizes")
            lines = [human_lines[i] for i in pick]
            rows.append(OpeningRow(
                source="data", label=f"data {band_label(s.rating, cfg.band_width)}", rating=s.rating,
                games=len(pick), lines=tuple(line_stats(lines, k) for k in ks), policy_entropy=None,
                repeat=tuple(_data_repeat(games, band, line, cfg.repeat_samples, rng) for line in repeat)))
    result = OpeningsResult(rows=tuple(rows), line_plies=ks, band_width=cfg.band_width,
                            opponent=opponent.label if opponent else "", notes=tuple(notes))
    if out_dir is not None:
        result.save(out_dir / "openings.json")
    return result


def _data_repeat(games: Sequence[HeldOutGame], band: Sequence[int], line: Line, samples: int,
                 rng: random.Random) -> RepeatStats:
    """The repeated-prompt test on human games: the next move in up to `samples` band games that
    reached the position by that line."""
    k = len(line)
    nxt = [games[i].moves[k].uci() for i in band
           if len(games[i].moves) > k and tuple(m.uci() for m in games[i].moves[:k]) == line]
    if len(nxt) > samples:
        nxt = rng.sample(nxt, samples)
    return _repeat_stats(line, nxt)
