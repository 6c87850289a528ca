"""Does the model know the rules? Legality of its raw predictions, never masked.

On held-out game prefixes (teacher-forced, each game under its own players' ratings):

* top-1 legal: share of positions whose most likely move token is a legal move;
* sampled legal: share of moves sampled at the play-time temperature / top-p that are legal;
* illegal mass: probability (temperature 1) the model puts on illegal moves, averaged;

overall, by ply bucket and by the mover's rating band, and why each illegal top-1 pick was illegal
(:func:`illegal_reason`: blocked path, pinned piece, check not answered, ...). In played games (self-play at every
prompted rating, raw sampling): illegal attempts per game, where an attempt is a sampled illegal
move that the player then replaced by its most likely legal move; and strict play, where an illegal
move ends the game: the share of games with no illegal move and the plies to the first one.

Every figure states what the model was given besides the move tokens (:func:`model_inputs`): a model
fed the board, attack maps and pins is handed most of the rules, and its legal rate measures little.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import chess
import torch

from chessdt.play.arena import GameSpec, run_games
from chessdt.config import EvalConfig, ModelConfig
from chessdt.evals.results import JsonResult, fmt
from chessdt.evals.subject import sampling_of
from chessdt.evals.heldout import HeldOutGame, teacher_forced_logits
from chessdt.metrics import wilson_interval
from chessdt.play.gamelog import GameRecord
from chessdt.play.policy import ModelPolicy, Prompted, Sampling, sample
from chessdt.tokenizer import NUM_MOVES, Vocab


def model_inputs(model: ModelConfig) -> str:
    """What the model sees besides the move tokens, in one line: the family (pure sequence, board
    input, rule features), then its inputs.

    >>> model_inputs(ModelConfig(board_input=False, board_head=False, attack_features=False, move_features=False))
    'pure sequence (move tokens)'
    >>> model_inputs(ModelConfig(board_input=False, board_head=False, attack_features=False))
    'pure sequence (move tokens + move-structure embeddings: from/to-square, promotion; no board, no rules)'
    >>> model_inputs(ModelConfig())
    'rule features (move tokens + move-structure embeddings + board after every move + attack maps, pins, check + board head)'
    """
    parts = ["move tokens"]
    if model.move_features:
        parts.append("move-structure embeddings" + ("" if model.board_input else
                                                    ": from/to-square, promotion; no board, no rules"))
    if model.board_input:
        parts.append("board after every move")
    if model.attack_features:
        parts.append("attack maps, pins, check")
    if model.board_head:
        parts.append("board head")
    family = ("rule features" if model.attack_features or model.board_head
              else "board input" if model.board_input else "pure sequence")
    return f"{family} ({' + '.join(parts)})"


def input_line(inputs: str) -> str:
    """The line a legality figure starts with."""
    return f"**Model inputs: {inputs or 'not recorded (evaluated before inputs were recorded)'}.**"


@dataclass(frozen=True)
class LegalityCell:
    """Legality over one group of held-out positions."""

    group: str  # 'all', a ply bucket like '10-19', or a rating band like '1400-1599'
    positions: int
    top1_legal: float  # share of positions whose raw top-1 move is legal
    sampled_legal: float  # share of raw samples (play-time temperature / top-p) that are legal
    illegal_mass: float  # mean probability on illegal moves (temperature 1)


@dataclass(frozen=True)
class PlayedLegality:
    """Illegal attempts in full self-play games at one prompted rating (raw sampling, no mask)."""

    rating: int | None
    games: int
    moves: int  # moves the model chose
    illegal: int  # of those, sampled illegal moves (each replaced by the most likely legal move)
    per_game: float  # illegal attempts per game
    max_per_game: int
    mean_plies: float  # average game length in half-moves
    # -- strict play (an illegal move ends the game): the same games up to their first illegal sample --
    fully_legal: int = -1  # games in which the model never sampled an illegal move (-1: not recorded)
    fully_legal_lo: float = math.nan  # 95% Wilson interval of fully_legal / games
    fully_legal_hi: float = math.nan
    median_first_illegal: float = math.nan  # median plies before the first illegal move, over games that had one
    strict_plies: float = math.nan  # mean game length under strict rules (to the first illegal move, or the end)

    @property
    def fully_legal_share(self) -> float:
        return self.fully_legal / self.games if self.games and self.fully_legal >= 0 else math.nan


@dataclass(frozen=True)
class LegalityResult(JsonResult):
    overall: LegalityCell
    by_ply: tuple[LegalityCell, ...]
    by_rating: tuple[LegalityCell, ...]
    played: tuple[PlayedLegality, ...]
    held_out_games: int  # games the positions came from
    temperature: float  # of the sampled-legal measure and the played games
    top_p: float
    illegal_top1: dict[str, int] = field(default_factory=dict)  # illegal top-1 picks by reason
    inputs: str = ""  # what the model saw besides the move tokens (model_inputs); "" = not recorded

    def format(self) -> str:
        """Markdown tables, under the line that says what the model was given."""
        lines = [input_line(self.inputs), "",
                 f"Held-out positions: {self.overall.positions:,} from {self.held_out_games:,} games "
                 f"(raw model; sampled at T={self.temperature}, top-p={self.top_p})"]
        for title, cells in (("ply", (self.overall, *self.by_ply)), ("mover's rating", self.by_rating)):
            lines += ["", f"| {title} | positions | top-1 legal | sampled legal | illegal mass |",
                      "|---|---:|---:|---:|---:|"]
            for cell in cells:
                lines.append(f"| {cell.group} | {cell.positions:,} | {fmt(cell.top1_legal, 2, True)} | "
                             f"{fmt(cell.sampled_legal, 2, True)} | {fmt(cell.illegal_mass, 2, True)} |")
        if self.illegal_top1:
            n = self.overall.positions
            lines += ["", "| why the top-1 move was illegal | positions | share of all positions |", "|---|---:|---:|"]
            for reason, count in sorted(self.illegal_top1.items(), key=lambda kv: -kv[1]):
                lines.append(f"| {reason} | {count:,} | {fmt(count / max(n, 1), 2, True)} |")
        if self.played:
            lines += ["", "| prompted rating | self-play games | mean plies | model moves | illegal attempts | per game | max |",
                      "|---:|---:|---:|---:|---:|---:|---:|"]
            for p in self.played:
                lines.append(f"| {p.rating} | {p.games} | {p.mean_plies:.0f} | {p.moves:,} | {p.illegal:,} | "
                             f"{p.per_game:.2f} | {p.max_per_game} |")
            if any(p.fully_legal >= 0 for p in self.played):
                lines += ["", "Strict play (an illegal move loses; the same games cut at their first illegal sample):",
                          "", "| prompted rating | self-play games | fully legal [95%] | median plies to the first "
                          "illegal move | mean plies under strict rules |", "|---:|---:|---:|---:|---:|"]
                for p in self.played:
                    lines.append(f"| {p.rating} | {p.games} | {p.fully_legal} = {fmt(p.fully_legal_share, 0, True)} "
                                 f"[{fmt(p.fully_legal_lo, 0, True)}, {fmt(p.fully_legal_hi, 0, True)}] | "
                                 f"{p.median_first_illegal:.0f} | {p.strict_plies:.0f} |")
        return "\n".join(lines)


def ply_bucket(ply: int, edges: Sequence[int]) -> str:
    """Label of the bucket (given by sorted lower edges) that holds a ply.

    >>> ply_bucket(0, [0, 10, 20]), ply_bucket(15, [0, 10, 20]), ply_bucket(99, [0, 10, 20])
    ('0-9', '10-19', '20+')
    """
    k = bisect.bisect_right(edges, ply) - 1
    if k < 0:
        return f"<{edges[0]}"
    return f"{edges[k]}+" if k == len(edges) - 1 else f"{edges[k]}-{edges[k + 1] - 1}"


def rating_band(rating: int | None, width: int) -> str:
    """'1400-1599' style band (aligned to multiples of width) of a rating; '?' when unknown.

    >>> rating_band(1550, 200), rating_band(None, 200)
    ('1400-1599', '?')
    """
    if rating is None:
        return "?"
    lo = rating // width * width
    return f"{lo}-{lo + width - 1}"


def illegal_reason(board: chess.Board, token: int, vocab: Vocab) -> str:
    """Why the move token is not legal on the board (call it only for an illegal token).

    >>> illegal_reason(chess.Board(), Vocab().encode_move(chess.Move.from_uci("f1c4")), Vocab())
    'path blocked'
    """
    if token >= NUM_MOVES:
        return f"not a move: {vocab.decode([token])[0]}"
    move = vocab.decode_move(token)
    piece = board.piece_at(move.from_square)
    if piece is None or piece.color != board.turn:
        return "no piece of the mover on the from-square"
    target = board.piece_at(move.to_square)
    if target is not None and target.color == board.turn:
        return "onto the mover's own piece"
    back_rank = 0 if board.turn == chess.WHITE else 7
    if (piece.piece_type == chess.KING and move.from_square == chess.square(4, back_rank)
            and move.to_square in (chess.square(2, back_rank), chess.square(6, back_rank))):
        rook = chess.square(0 if chess.square_file(move.to_square) == 2 else 7, back_rank)
        if not board.castling_rights & chess.BB_SQUARES[rook]:
            return "castling without the right"
        if board.occupied & chess.between(move.from_square, rook):
            return "path blocked"
        return "castling out of, through or into check"
    if board.is_pseudo_legal(move):
        if board.is_check():
            return "does not answer the check"
        return "king steps into an attack" if piece.piece_type == chess.KING else "pinned piece leaves its line"
    if piece.piece_type == chess.PAWN:
        return "pawn cannot move so"
    alone = chess.Board(None)  # could this piece make this move on an otherwise empty board?
    alone.set_piece_at(move.from_square, piece)
    alone.turn = board.turn
    if move.promotion is None and move in alone.pseudo_legal_moves:
        return "path blocked"
    return "piece cannot move so"


@dataclass
class _Acc:
    n: int = 0
    top1: float = 0.0
    sampled: float = 0.0
    mass: float = 0.0

    def cell(self, group: str) -> LegalityCell:
        d = max(self.n, 1)
        return LegalityCell(group=group, positions=self.n, top1_legal=self.top1 / d if self.n else math.nan,
                            sampled_legal=self.sampled / d if self.n else math.nan,
                            illegal_mass=self.mass / d if self.n else math.nan)


def score_legality(policy: ModelPolicy, games: Sequence[HeldOutGame], *, positions: int,
                   ply_buckets: Sequence[int] = (0, 10, 20, 40, 80), band_width: int = 200,
                   temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                   batch_size: int = 16) -> tuple[LegalityCell, tuple[LegalityCell, ...], tuple[LegalityCell, ...], int,
                                                  dict[str, int]]:
    """(overall, by ply bucket, by rating band, games used, illegal top-1 picks by reason) over the
    first `positions` positions."""
    gen = torch.Generator().manual_seed(seed)
    total = _Acc()
    by_ply: defaultdict[str, _Acc] = defaultdict(_Acc)
    by_band: defaultdict[str, _Acc] = defaultdict(_Acc)
    reasons: dict[str, int] = defaultdict(int)
    used = 0
    prompts = [policy.prompt(g.white, g.black, g.result) for g in games]
    for i, logits in teacher_forced_logits(policy, games, prompts, batch_size):
        if total.n >= positions:
            break
        g = games[i]
        n = min(len(logits), positions - total.n)
        if n <= 0:
            continue
        used += 1
        lg = logits[:n]
        best = lg.argmax(-1)
        board = chess.Board()
        masks = []
        for j in range(n):
            masks.append(policy.vocab.legal_mask(board))
            if not masks[-1][best[j]]:
                reasons[illegal_reason(board, int(best[j]), policy.vocab)] += 1
            board.push(g.moves[j])
        mask = torch.stack(masks)  # (n, 1968)
        illegal_mass = 1.0 - (torch.softmax(lg, -1) * mask).sum(-1)  # (n,)
        top1 = mask.gather(1, best[:, None]).squeeze(1)
        picks = sample(lg, temperature, top_p, gen)
        sampled = mask.gather(1, picks[:, None]).squeeze(1)
        for j in range(n):
            mover = chess.WHITE if j % 2 == 0 else chess.BLACK
            t, s, m = float(top1[j]), float(sampled[j]), float(illegal_mass[j])
            for acc in (total, by_ply[ply_bucket(j, ply_buckets)], by_band[rating_band(g.rating(mover), band_width)]):
                acc.n += 1
                acc.top1 += t
                acc.sampled += s
                acc.mass += m
    ply_cells = tuple(by_ply[k].cell(k) for k in sorted(by_ply, key=lambda k: int(k.split("-")[0].strip("+<"))))
    band_cells = tuple(by_band[k].cell(k) for k in sorted(by_band, key=lambda k: (k == "?", 0 if k == "?" else int(k.split("-")[0]))))
    return total.cell("all"), ply_cells, band_cells, used, dict(reasons)


def played_legality(policy: ModelPolicy, ratings: Sequence[int | None], *, games: int, sampling: Sampling,
                    max_plies: int = 300, seed: int = 0, batch_size: int = 64) -> tuple[PlayedLegality, ...]:
    """Illegal attempts per game in `games` full self-play games at each prompted rating.

    Sampling is forced raw (mask_illegal off): with a mask there would be nothing to count.
    """
    raw = replace(sampling, mask_illegal=False)
    seats = {f"model@{r}": Prompted(policy, r, None, raw) for r in ratings}
    specs = [GameSpec(id=f"selfplay-{r}-{k}", white=f"model@{r}", black=f"model@{r}", seed=seed, tags={"rating": r})
             for r in ratings for k in range(games)]
    records = run_games(specs, seats, None, batch_size=batch_size, max_plies=max_plies)
    return tuple(played_cell(r, [x for x in records if x.tags["rating"] == r]) for r in ratings)


def strict_plies(record: GameRecord) -> int:
    """The game's length under strict rules: the plies before its first illegal sample, else all of them."""
    return record.plies if record.first_illegal_ply is None else record.first_illegal_ply


def played_cell(rating: int | None, records: Sequence[GameRecord]) -> PlayedLegality:
    """Illegal attempts and the strict-play measures of raw self-play games at one prompted rating."""
    per = [sum(x.illegal.values()) for x in records]
    n = len(records)
    legal = sum(k == 0 for k in per)
    lo, hi = wilson_interval(legal, n)
    first = sorted(x.first_illegal_ply for x in records if x.first_illegal_ply is not None)
    if len(first) != n - legal:
        raise ValueError("game records with illegal samples but no first_illegal_ply (played before it was recorded)")
    return PlayedLegality(rating=rating, games=n, moves=sum(sum(x.model_moves.values()) for x in records),
                          illegal=sum(per), per_game=sum(per) / n if n else math.nan, max_per_game=max(per, default=0),
                          mean_plies=sum(x.plies for x in records) / n if n else math.nan,
                          fully_legal=legal, fully_legal_lo=lo, fully_legal_hi=hi,
                          median_first_illegal=float(statistics.median(first)) if first else math.nan,
                          strict_plies=sum(strict_plies(x) for x in records) / n if n else math.nan)


def evaluate_legality(policy: ModelPolicy, games: Sequence[HeldOutGame], cfg: EvalConfig,
                      out: Path | None = None) -> LegalityResult:
    """The legality evaluation of issue 4 at the sizes of `cfg`; saved as JSON to `out` if given."""
    overall, by_ply, by_band, used, reasons = score_legality(
        policy, games, positions=cfg.legality_positions, ply_buckets=cfg.ply_buckets, band_width=cfg.band_width,
        temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    played = played_legality(policy, cfg.ratings, games=cfg.legality_selfplay, sampling=sampling_of(cfg),
                             max_plies=cfg.max_plies, seed=cfg.seed, batch_size=cfg.batch_size) \
        if cfg.legality_selfplay > 0 else ()
    result = LegalityResult(overall=overall, by_ply=by_ply, by_rating=by_band, played=played, held_out_games=used,
                            temperature=cfg.temperature, top_p=cfg.top_p, illegal_top1=reasons,
                            inputs=model_inputs(policy.cfg.model))
    if out is not None:
        result.save(out)
    return result
