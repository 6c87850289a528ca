"""The model as a move chooser: a policy, prompted at a rating, sampling moves in batched sessions.

* :class:`ModelPolicy`: a trained GPT with its vocabulary and config; prompts in, move logits out,
  sampled moves out of logits (:meth:`ModelPolicy.choose`).
* :class:`Prompted`: the one value for "the model prompted at a rating, with sampling settings"
  that UCI, the terminal game, the arena, the evaluators, RL and experiments hold.
* :class:`Session`: a batch of games advanced in lockstep through the model's KV cache (one
  forward step per ply for all games together).

Legality is always measured on the raw model: a sampled illegal move is counted, then replaced
by the most likely legal move (or, with ``mask_illegal``, illegal moves are masked before
sampling and that is reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import chess
import numpy as np
import torch

from chessdt.checks import check_guidance, check_temperature, check_top_p
from chessdt.config import Config
from chessdt.errors import UserError
from chessdt.model import GPT
from chessdt.tokenizer import Vocab, board_array, condition_prefix, game_inputs, position_inputs, unconditional


@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How a model picks its move from its distribution: the one home of what a sampling setting
    means. Checked once, here; :meth:`probabilities` is the distribution every user draws from or
    measures (play, the arena, openings and variety, the quantilizer), :meth:`log_probabilities` its
    differentiable form for the RL loss."""

    temperature: float = 1.0  # 0 = always the most likely move
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of moves with this much mass
    guidance: float = 0.0  # w in logits_cond + w * (logits_cond - logits_uncond); 0 = off
    mask_illegal: bool = False  # sample among legal moves only (reported; legality evals use raw)

    def __post_init__(self) -> None:
        for name, check in (("temperature", check_temperature), ("top_p", check_top_p),
                            ("guidance", check_guidance)):
            value = getattr(self, name)
            try:
                check(value)
            except ValueError as e:
                raise UserError(f"{name}={value}: {e}") from None

    def probabilities(self, logits: torch.Tensor, legal: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V) the distribution a move token is drawn from, given move logits (B, V) and, when
        `mask_illegal` is set, the legal masks (B, V): illegal moves masked, then temperature (0: the
        most likely move with certainty), then top-p truncation renormalised."""
        if self.mask_illegal:
            if legal is None:
                raise ValueError("mask_illegal needs the legal masks")
            logits = logits.masked_fill(~legal, float("-inf"))
        if self.temperature <= 0:
            return torch.zeros_like(logits, dtype=torch.float32).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < self.top_p  # always keeps the top move
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs

    def draw(self, logits: torch.Tensor, legal: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """Token ids (B,) drawn from :meth:`probabilities` (at temperature 0: the argmax, no draw)."""
        if self.temperature <= 0:
            masked = logits if not self.mask_illegal or legal is None else logits.masked_fill(~legal, float("-inf"))
            return masked.argmax(-1)
        probs = self.probabilities(logits, legal)
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)

    def played(self, logits: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
        """(B, V) the probability with which :meth:`ModelPolicy.choose` plays each move: the draw of
        :meth:`probabilities`, an illegal draw replaced by the most likely legal move."""
        probs = self.probabilities(logits, legal)
        best_legal = logits.masked_fill(~legal, float("-inf")).argmax(-1)  # (B,)
        illegal = (probs * ~legal).sum(-1)
        return (probs * legal).scatter_add(-1, best_legal[:, None], illegal[:, None])

    def log_probabilities(self, logits: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
        """(B, V) differentiable log-probabilities of legal-only sampling at this temperature (the RL
        loss: on-policy for rollouts drawn with mask_illegal); illegal moves get a large finite
        negative, not -inf, so 0 * log 0 terms and their gradients stay zero."""
        if self.temperature <= 0 or self.top_p < 1.0:
            raise ValueError("log-probabilities need a temperature > 0 and no top-p truncation")
        return torch.log_softmax((logits.float() / self.temperature).masked_fill(~legal, -1e9), dim=-1)


@dataclass
class MoveStats:
    """Running counts of what the model tried to play."""

    moves: int = 0
    illegal: int = 0  # sampled moves that were illegal (replaced by the best legal move)
    masked: int = 0  # moves chosen with illegal moves masked out

    @property
    def illegal_rate(self) -> float:
        return self.illegal / self.moves if self.moves else 0.0


class ModelPolicy:
    """A trained GPT with its vocabulary and config: prompts in, move distributions out."""

    def __init__(self, model: GPT, vocab: Vocab, cfg: Config, device: str | torch.device = "cpu",
                 model_id: str = "model", weights_id: str | None = None) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.cfg = cfg
        self.device = torch.device(device)
        self.model_id = model_id  # a name for people (e.g. 'tiny@best'): a name can move to other weights
        self._weights_id = weights_id  # the checkpoint's weights_hash; None: hashed from the live weights
        self.label_parts = cfg.data.label_parts
        self.context = cfg.model.context
        self.has_value = cfg.model.value_head  # the model also predicts win/draw/loss (a UCI score)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "ModelPolicy":
        from chessdt.checkpoint import model_of, read_checkpoint

        ckpt = read_checkpoint(path)
        model, cfg, vocab = model_of(ckpt, device=device)
        return cls(model, vocab, cfg, device, model_id=f"{cfg.name}@{ckpt.path.name}", weights_id=ckpt.weights_id)

    @property
    def weights_id(self) -> str:
        """The identity of the weights that play (checkpoint.weights_hash): game logs are keyed on it.

        A policy built in memory (RL, tests) is hashed from its weights as they are now."""
        if self._weights_id is not None:
            return self._weights_id
        from chessdt.checkpoint import weights_hash

        return weights_hash(self.model.state_dict())

    # -- prompts -----------------------------------------------------------------------------
    def prompt(self, white: int | None, black: int | None, result: str | None = None) -> list[int]:
        """<bos> + the condition tokens this model was trained with.

        Ratings go to the elo/engine slots (None = unknown); `result` to an outcome slot.
        """
        return condition_prefix(self.vocab, self.label_parts, lambda part: (white, black), result)

    @property
    def prompt_len(self) -> int:
        """Tokens before the first move: <bos> and the condition slots."""
        return len(self.prompt(None, None))

    def player_prompt(self, color: chess.Color, rating: int | None, opponent_rating: int | None) -> list[int]:
        """Prompt for a player of `color` rated `rating` against `opponent_rating` (None: equal).

        An outcome slot is filled with a win for that colour: the decision-transformer 'return'.
        """
        opp = rating if opponent_rating is None else opponent_rating
        white, black = (rating, opp) if color == chess.WHITE else (opp, rating)
        return self.prompt(white, black, "1-0" if color == chess.WHITE else "0-1")

    # -- logits --------------------------------------------------------------------------------
    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=self.device)

    @torch.no_grad()
    def logits_full(self, board: chess.Board, prompt: list[int]) -> torch.Tensor:
        """Move logits (1968,) for the position after board's moves, recomputing the whole game.

        The reference (and the naive baseline of the batched-play benchmark)."""
        tokens, boards, plies = position_inputs(prompt, board, self.context, self.vocab)
        logits = self.model(self._tensor(tokens)[None], self._tensor(boards)[None], self._tensor(plies)[None])
        return GPT.move_logits(logits[0, -1]).float()

    def combine(self, cond: torch.Tensor, uncond: torch.Tensor | None, guidance: float) -> torch.Tensor:
        if uncond is None or guidance == 0.0:
            return cond
        return cond + guidance * (cond - uncond)

    def choose(self, logits: torch.Tensor, boards: list[chess.Board], sampling: Sampling,
               generator: torch.Generator, stats: MoveStats | None = None) -> list[chess.Move]:
        """Sample one move per row of move logits (B, 1968); illegal samples are counted and
        replaced by the most likely legal move."""
        moves = []
        legal_masks = torch.stack([self.vocab.legal_mask(b) for b in boards]).to(logits.device)
        picks = sampling.draw(logits, legal_masks, generator)
        for i, b in enumerate(boards):
            t = int(picks[i])
            if stats is not None:
                stats.moves += 1
                stats.masked += int(sampling.mask_illegal)
            if not legal_masks[i, t]:
                if stats is not None:
                    stats.illegal += 1
                t = int(logits[i].masked_fill(~legal_masks[i], float("-inf")).argmax())
            moves.append(self.vocab.decode_move(t))
        return moves


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """Token ids (B,) drawn from raw logits (B, V) with temperature and nucleus (top-p) truncation:
    :meth:`Sampling.draw` without a legal mask."""
    return Sampling(temperature=temperature, top_p=top_p).draw(logits, None, generator)


class Session:
    """A batch of games from the standard start, advanced one ply at a time through a KV cache.

    Rows share one cache, so every row must receive a token at every step: a finished game gets
    `None` (fed as padding, its output ignored). With guidance each game has a second row holding
    the unconditional prompt. A game that outgrows the model's context is re-encoded keeping its
    prompt and its most recent moves, as in training.
    """

    def __init__(self, policy: ModelPolicy, prompts: list[list[int]], guidance: float = 0.0) -> None:
        if len({len(p) for p in prompts}) != 1:
            raise ValueError("all prompts of a session must have the same length")
        self.policy = policy
        self.guidance = guidance
        self.prompts = [list(p) for p in prompts]
        rows = self.prompts + ([unconditional(policy.vocab, p) for p in self.prompts] if guidance else [])
        self.rows = rows
        self.boards = [chess.Board() for _ in prompts]
        self.n_games = len(prompts)
        self._value: torch.Tensor | None = None  # (rows, 3) value logits of the last position, with a value head
        self._encode_from_scratch()

    @torch.no_grad()
    def _encode_from_scratch(self, window: int | None = None) -> None:
        """(Re)build the cache from each row's prompt and game, keeping the latest moves that fit
        in `window` positions (default: the whole context)."""
        p = self.policy
        tokens, boards, plies = game_inputs(self.rows, [self.boards[i % self.n_games] for i in range(len(self.rows))],
                                            window or p.context, p.vocab, cut_front=True)
        self.cache = p.model.new_cache(len(self.rows), p.context)
        if p.has_value:
            out, value = p.model(p._tensor(tokens), p._tensor(boards), p._tensor(plies), self.cache, with_value=True)
            self._value = value[:, -1].float()
        else:
            out = p.model(p._tensor(tokens), p._tensor(boards), p._tensor(plies), cache=self.cache)
        self._last = GPT.move_logits(out[:, -1]).float()

    @property
    def wdl(self) -> torch.Tensor | None:
        """(n_games, 3) win/draw/loss probabilities for the side to move in each game, under its own
        prompt (the value head; None for a model without one)."""
        if self._value is None:
            return None
        return torch.softmax(self._value[: self.n_games], dim=-1)

    @property
    def logits(self) -> torch.Tensor:
        """(n_games, 1968) move logits for the side to move in each game (guidance applied)."""
        cond = self._last[: self.n_games]
        uncond = self._last[self.n_games :] if self.guidance else None
        return self.policy.combine(cond, uncond, self.guidance)

    @torch.no_grad()
    def push(self, moves: list[chess.Move | None]) -> None:
        """Play one move in every game (None for a game that is over) and advance the cache."""
        p = self.policy
        if self.cache.length >= p.context:
            for b, m in zip(self.boards, moves):
                if m is not None:
                    b.push(m)
            # Re-encode into half the context, then go on incrementally: one re-encoding per
            # context/2 plies instead of one per ply once a game is longer than the context.
            self._encode_from_scratch(window=max(len(self.rows[0]) + 1, p.context // 2))
            return
        tokens = np.full(self.n_games, p.vocab.pad, np.int64)
        boards = np.zeros((self.n_games, 64), np.uint8)
        plies = np.zeros(self.n_games, np.int64)
        for i, (b, m) in enumerate(zip(self.boards, moves)):
            if m is not None:
                tokens[i] = p.vocab.encode_move(m)
                b.push(m)
            boards[i] = board_array(b)
            plies[i] = len(b.move_stack)
        reps = len(self.rows) // self.n_games
        args = (p._tensor(np.tile(tokens, reps)), self.cache, p._tensor(np.tile(boards, (reps, 1))),
                p._tensor(np.tile(plies, reps)))
        if p.has_value:
            out, value = p.model.step_value(*args)
            self._value = value.float()
        else:
            out = p.model.step(*args)
        self._last = GPT.move_logits(out).float()

    def select(self, games: list[int]) -> None:
        """Keep only the given games, in that order (drop finished ones so later steps cost less)."""
        if not games:
            raise ValueError("a session needs at least one game")
        rows = list(games) + ([self.n_games + g for g in games] if self.guidance else [])
        idx = torch.tensor(rows, dtype=torch.long, device=self._last.device)
        self.cache = self.cache.select(idx)
        self._last = self._last[idx]
        if self._value is not None:
            self._value = self._value[idx]
        self.rows = [self.rows[r] for r in rows]
        self.prompts = [self.prompts[g] for g in games]
        self.boards = [self.boards[g] for g in games]
        self.n_games = len(games)


@dataclass(frozen=True)
class Prompted:
    """The model prompted at a rating, with sampling settings: what every front end and evaluator holds.

    UCI, the terminal game, the arena, the evaluators, RL and experiments all play the model
    through this one value; its prompts come from :meth:`prompt`, so every caller writes the
    condition slots the same way. Two values are equal when they hold the same policy object with
    the same ratings and sampling.
    """

    policy: ModelPolicy
    rating: int | None  # prompted rating of the model's own side (None = the unknown-rating token)
    opponent_rating: int | None = None  # prompted rating of the other side (None = the same as rating)
    sampling: Sampling = field(default_factory=Sampling)

    def prompt(self, color: chess.Color) -> list[int]:
        """The prompt of the model playing `color` (an outcome slot says that colour wins)."""
        return self.policy.player_prompt(color, self.rating, self.opponent_rating)

    @property
    def name(self) -> str:
        """e.g. 'tiny@step_0000060(rating=1500, T=1.0, top_p=1.0)'."""
        s = self.sampling
        return (f"{self.policy.model_id}(rating={self.rating}, T={s.temperature}, top_p={s.top_p}"
                + (f", w={s.guidance}" if s.guidance else "") + ")")
