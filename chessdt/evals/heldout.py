"""Held-out human games: read them, group them by rating band, and score the model on them.

Games come from a prepared data directory (its validation split: games the model never trained
on) or from a PGN file. A prepared set stores ratings as bucket tokens, so a player's rating is
the middle of its bucket (1500-1599 -> 1550); a PGN file gives the exact header ratings.

Scoring is teacher-forced: one forward pass over a whole game gives the model's raw logits for
every move of it (up to the model's context), exactly as in training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import chess
import chess.pgn
import torch

from chessdt.config import Config
from chessdt.errors import UserError
from chessdt.model import GPT
from chessdt.play.policy import ModelPolicy
from chessdt.rules import RESULTS, WHITE_RESULTS
from chessdt.tokenizer import game_inputs, read_prefix, unconditional


@dataclass(frozen=True)
class HeldOutGame:
    """A game's moves and its players' ratings (None when unknown)."""

    moves: tuple[chess.Move, ...]
    white: int | None
    black: int | None
    result: str | None = None  # 1-0, 0-1, 1/2-1/2 when known (fills an outcome slot of the prompt)

    def rating(self, color: chess.Color) -> int | None:
        return self.white if color == chess.WHITE else self.black

    @property
    def mean_rating(self) -> float | None:
        if self.white is None or self.black is None:
            return None
        return (self.white + self.black) / 2.0

    def board(self, plies: int | None = None) -> chess.Board:
        """The board after the first `plies` moves (all moves by default), with its move stack."""
        board = chess.Board()
        for m in self.moves[: len(self.moves) if plies is None else plies]:
            board.push(m)
        return board


def band_of(rating: float | None, center: int, width: int) -> bool:
    """Whether a rating lies in the band [center - width/2, center + width/2).

    >>> band_of(1550, 1600, 200), band_of(1700, 1600, 200), band_of(None, 1600, 200)
    (True, False, False)
    """
    return rating is not None and center - width / 2 <= rating < center + width / 2


def band_label(center: int, width: int) -> str:
    """Text of a band, e.g. '1500-1699'.

    >>> band_label(1600, 200)
    '1500-1699'
    """
    lo = int(math.floor(center - width / 2))
    return f"{lo}-{lo + width - 1}"


def default_source(cfg: Config, checkpoint: Path) -> Path | None:
    """Where held-out games come from by default: eval.games, else the prepared data the model
    was trained on (data.prepared, else <run_dir>/data), if present."""
    from chessdt.evals.results import eval_dir

    if cfg.eval.games:
        return Path(cfg.eval.games)
    candidates = [Path(cfg.data.prepared)] if cfg.data.prepared else []
    candidates.append(eval_dir(checkpoint).parent / "data")
    return next((p for p in candidates if (p / "meta.json").is_file()), None)


def held_out_games(cfg: Config, checkpoint: Path, limit: int,
                   source: str | Path | None = None) -> list[HeldOutGame] | None:
    """The first `limit` held-out games for evaluating `checkpoint` (trained with `cfg`): from
    `source` if given, else :func:`default_source`; None when there is no source at all."""
    path = Path(source) if source else default_source(cfg, checkpoint)
    if path is None:
        return None
    games = load_games(path, limit)
    if not games and limit > 0:
        raise UserError(f"no usable games in {path}")
    return games


def load_games(source: str | Path, limit: int) -> list[HeldOutGame]:
    """The first `limit` games of a prepared data directory's val split, or of a PGN file."""
    path = Path(source)
    if (path / "meta.json").is_file():
        return _from_prepared(path, limit)
    if path.is_file():
        return _from_pgn(path, limit)
    raise UserError(f"held-out games {path}: not a prepared data directory (with meta.json) or a PGN file")


def _from_prepared(path: Path, limit: int) -> list[HeldOutGame]:
    from chessdt.data.shards import PreparedData

    data = PreparedData.open(path)
    vocab, split = data.vocab, data.splits["val"]
    P = data.prefix_len

    def middle(r: int | None) -> int | None:  # a bucket's lower edge -> the middle of the bucket
        return None if r is None else r + vocab.rating_bucket // 2

    out = []
    for i in range(min(limit, split.n_games)):
        tokens = split.game(i)
        cond = read_prefix(vocab, data.meta["prefix"], tokens[:P])
        moves = tuple(vocab.decode_move(int(t)) for t in tokens[P:] if vocab.is_move(int(t)))
        result = cond.result
        if result is None and split.results is not None:  # stored beside the tokens since the value head
            result = WHITE_RESULTS.get(int(split.results[i]))
        out.append(HeldOutGame(moves=moves, white=middle(cond.white), black=middle(cond.black), result=result))
    return out


def _from_pgn(path: Path, limit: int) -> list[HeldOutGame]:
    from chessdt.data.archives import open_text
    from chessdt.data.pgn import parse_rating

    out: list[HeldOutGame] = []
    with open_text(path) as f:
        while len(out) < limit:
            try:
                game = chess.pgn.read_game(f)
            except (IndexError, ValueError, KeyError, AttributeError) as e:  # python-chess's own parser gave up
                raise UserError(f"{path}: python-chess cannot parse the game after the {len(out):,} read so far "
                                f"({type(e).__name__}: {e}); check the file, or pass a prepared data set") from None
            if game is None:
                break
            h = game.headers
            if "FEN" in h or h.get("Variant", "Standard").lower() not in ("standard", "chess", "") or game.errors:
                continue
            moves = tuple(game.mainline_moves())
            if not moves:
                continue
            result = h.get("Result")
            out.append(HeldOutGame(moves=moves, white=parse_rating(h.get("WhiteElo")),
                                   black=parse_rating(h.get("BlackElo")),
                                   result=result if result in RESULTS else None))
    return out


# -- teacher-forced scoring ----------------------------------------------------------------------------------
def scored_moves(policy: ModelPolicy, game: HeldOutGame) -> int:
    """How many of a game's moves one forward pass can score (the model's context is the limit)."""
    P = policy.prompt_len
    return min(len(game.moves), policy.context - P + 1)


def teacher_forced_logits(policy: ModelPolicy, games: Sequence[HeldOutGame], prompts: Sequence[list[int]],
                          batch_size: int = 16) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, raw move logits (n_i, 1968)) for each game: row j predicts move j from the moves before
    it, under prompts[i]; n_i = scored_moves(policy, game). Games are batched, padded at the end."""
    for i, logits, _ in teacher_forced(policy, games, prompts, batch_size):
        yield i, logits


def guided_logits(policy: ModelPolicy, games: Sequence[HeldOutGame], job_games: Sequence[int],
                  prompts: Sequence[list[int]], batch_size: int = 16,
                  guidance: float = 0.0) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`teacher_forced_logits` of jobs, job j scoring ``games[job_games[j]]`` under prompts[j],
    with classifier-free guidance w as the model plays: ``cond + w * (cond - uncond)``, where uncond
    is the same game with every condition unknown (one pass per game, in step with the jobs, so
    `job_games` must be in ascending order)."""
    scored = teacher_forced_logits(policy, [games[gi] for gi in job_games], prompts, batch_size)
    if not guidance:
        yield from scored
        return
    if any(b < a for a, b in zip(job_games, job_games[1:])):
        raise ValueError("guided_logits needs the jobs in game order")
    ids = sorted(set(job_games))
    uncond_prompts = [unconditional(policy.vocab, policy.prompt(games[gi].white, games[gi].black, games[gi].result))
                      for gi in ids]
    uncond = teacher_forced_logits(policy, [games[gi] for gi in ids], uncond_prompts, batch_size)
    current: tuple[int, torch.Tensor] | None = None  # (index into ids, logits) of the game being scored
    for j, logits in scored:
        while current is None or ids[current[0]] < job_games[j]:
            current = next(uncond)
        yield j, policy.combine(logits, current[1][: len(logits)], guidance)


@torch.no_grad()
def teacher_forced(policy: ModelPolicy, games: Sequence[HeldOutGame], prompts: Sequence[list[int]],
                   batch_size: int = 16, with_value: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """:func:`teacher_forced_logits` with, when `with_value`, the value head's W/D/L logits (n_i, 3)
    beside them: row j for the position before move j, from the side to move there."""
    if len(games) != len(prompts):
        raise ValueError("one prompt per game")
    vocab = policy.vocab
    for start in range(0, len(games), batch_size):
        idx = list(range(start, min(start + batch_size, len(games))))
        scored = [min(len(games[i].moves), policy.context - len(prompts[i]) + 1) for i in idx]
        tokens, boards, plies = game_inputs([prompts[i] for i in idx],
                                            [games[i].board(max(n - 1, 0)) for i, n in zip(idx, scored)],
                                            policy.context, vocab)
        value = None
        if with_value:
            out, value = policy.model(policy._tensor(tokens), policy._tensor(boards), policy._tensor(plies),
                                      with_value=True)  # (B, T, V), (B, T, 3)
        else:
            out = policy.model(policy._tensor(tokens), policy._tensor(boards), policy._tensor(plies))  # (B, T, V)
        for r, (i, n) in enumerate(zip(idx, scored)):
            P = len(prompts[i])
            yield (i, GPT.move_logits(out[r, P - 1 : P - 1 + n]).float().cpu(),
                   None if value is None else value[r, P - 1 : P - 1 + n].float().cpu())

