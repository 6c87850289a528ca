"""Everything that moves is a Player: `play(board) -> chess.Move`.

* :class:`ModelPlayer`: the GPT prompted with a rating for its own side and its opponent's,
  sampling with temperature / top-p and an optional classifier-free guidance weight.
* :class:`StockfishPlayer`: Stockfish at a UCI_Elo or Skill Level (restarts itself on a crash).
* :class:`RandomPlayer`: a uniformly random legal move.

The model side is built in layers so evaluators and RL can batch it: :class:`ModelPolicy` turns
ratings into prompts and logits into moves; :class:`Session` advances a batch of games in
lockstep through the model's KV cache (one forward step per ply for all games together).
Legality is always measured on the raw model: a sampled illegal move is counted, then replaced
by the most likely legal move (or, with ``mask_illegal``, illegal moves are masked before
sampling and that is reported).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import chess
import chess.engine
import numpy as np
import torch

from chessdt.config import Config
from chessdt.data import position_inputs
from chessdt.model import GPT
from chessdt.shards import board_array
from chessdt.tokenizer import NUM_MOVES, Vocab


@runtime_checkable
class Player(Protocol):
    """Anything that chooses a move for the side to move."""

    name: str

    def play(self, board: chess.Board) -> chess.Move: ...


# -- simple players ----------------------------------------------------------------------------------
class RandomPlayer:
    """A uniformly random legal move (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self.name = "random"
        self.rng = random.Random(seed)

    def play(self, board: chess.Board) -> chess.Move:
        return self.rng.choice(list(board.legal_moves))


class StockfishPlayer:
    """Stockfish at a strength setting; use as a context manager (the engine is a resource).

    With `eps` > 0 it plays a uniformly random legal move with probability eps (seeded), else
    the engine's move: a strength that can be set continuously, from the random mover (eps = 1)
    to the engine itself (eps = 0). With `command` any UCI engine plays instead of Stockfish.
    """

    def __init__(self, engine_path: str | Path | None = None, *, elo: int | None = None,
                 skill: int | None = None, nodes: int | None = None, movetime: float | None = 0.05,
                 timeout_s: float = 30.0, eps: float = 0.0, seed: int = 0,
                 command: Sequence[str] | None = None) -> None:
        from chessdt.engine import Engine, Strength, find_stockfish

        self.strength = Strength(elo=elo, skill=skill)
        path = list(command) if command else find_stockfish(engine_path)
        self.engine = Engine(path, strength=None if command else self.strength, timeout_s=timeout_s)
        self.limit = chess.engine.Limit(nodes=nodes, time=movetime if nodes is None else None)
        self.eps = eps
        self.rng = random.Random(seed)
        who = " ".join(command) if command else f"stockfish({self.strength.describe()})"
        self.name = who + (f" eps={eps:g}" if eps else "")

    def __enter__(self) -> "StockfishPlayer":
        self.engine.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()

    def play(self, board: chess.Board) -> chess.Move:
        if self.eps and self.rng.random() < self.eps:
            return self.rng.choice(list(board.legal_moves))
        result = self.engine.play(board, self.limit)
        if result.move is None:
            raise RuntimeError(f"{self.name} returned no move in {board.fen()}")
        return result.move

    @property
    def restarts(self) -> int:
        return self.engine.restarts


# -- the model ---------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Sampling:
    """How a model picks its move from its distribution."""

    temperature: float = 1.0  # 0 = always the most likely move
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of moves with this much mass
    guidance: float = 0.0  # w in logits_cond + w * (logits_cond - logits_uncond); 0 = off
    mask_illegal: bool = False  # sample among legal moves only (reported; legality evals use raw)


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
                 model_id: str = "model") -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.cfg = cfg
        self.device = torch.device(device)
        self.model_id = model_id
        self.label_parts = cfg.data.label_parts
        self.context = cfg.model.context

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "ModelPolicy":
        from chessdt.checkpoint import load_model, resolve_checkpoint

        model, cfg, vocab = load_model(path, device=device)
        resolved = resolve_checkpoint(path)
        return cls(model, vocab, cfg, device, model_id=f"{cfg.name}@{resolved.name}")

    # -- prompts -----------------------------------------------------------------------------
    def prompt(self, white: int | None, black: int | None, result: str | None = None) -> list[int]:
        """<bos> + the condition tokens this model was trained with.

        Ratings go to the elo/engine slots (None = unknown); `result` to an outcome slot.
        """
        out = [self.vocab.bos]
        for part in self.label_parts:
            if part in ("elo", "engine"):
                out += [self.vocab.rating_token(white), self.vocab.rating_token(black)]
            elif part == "outcome":
                out.append(self.vocab.result_token(result))
        return out

    def unconditional(self, prompt: list[int]) -> list[int]:
        """The same prompt with every condition token replaced by its unknown token."""
        out = []
        for t in prompt:
            if self.vocab.is_rating(t):
                out.append(self.vocab.unknown_rating)
            elif self.vocab.token_str(t).startswith("<result:"):
                out.append(self.vocab.result_token(None))
            else:
                out.append(t)
        return out

    def player_prompt(self, color: chess.Color, rating: int | None, opponent_rating: int | None) -> list[int]:
        """Prompt for a player of `color` rated `rating` against `opponent_rating` (default: equal).

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
        legal_masks = torch.zeros(len(boards), NUM_MOVES, dtype=torch.bool)
        for i, b in enumerate(boards):
            legal_masks[i, [self.vocab.encode_move(m) for m in b.legal_moves]] = True
        legal_masks = legal_masks.to(logits.device)
        if sampling.mask_illegal:
            logits = logits.masked_fill(~legal_masks, float("-inf"))
        picks = sample(logits, sampling.temperature, sampling.top_p, generator)
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
    """Token ids (B,) drawn from logits (B, V) with temperature and nucleus (top-p) truncation."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the top move
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


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
        rows = self.prompts + ([policy.unconditional(p) for p in self.prompts] if guidance else [])
        self.rows = rows
        self.boards = [chess.Board() for _ in prompts]
        self.n_games = len(prompts)
        self._encode_from_scratch()

    @torch.no_grad()
    def _encode_from_scratch(self, window: int | None = None) -> None:
        """(Re)build the cache from each row's prompt and game, keeping the latest moves that fit
        in `window` positions (default: the whole context)."""
        p = self.policy
        inputs = [position_inputs(row, self.boards[i % self.n_games], window or p.context, p.vocab)
                  for i, row in enumerate(self.rows)]
        n = min(len(t) for t, _, _ in inputs)
        tokens = np.stack([t[-n:] for t, _, _ in inputs])
        boards = np.stack([b[-n:] for _, b, _ in inputs])
        plies = np.stack([pl[-n:] for _, _, pl in inputs])
        self.cache = p.model.new_cache(len(self.rows), p.context)
        out = p.model(p._tensor(tokens), p._tensor(boards), p._tensor(plies), cache=self.cache)
        self._last = GPT.move_logits(out[:, -1]).float()

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
        out = p.model.step(p._tensor(np.tile(tokens, reps)), self.cache, p._tensor(np.tile(boards, (reps, 1))),
                           p._tensor(np.tile(plies, reps)))
        self._last = GPT.move_logits(out).float()

    def select(self, games: list[int]) -> None:
        """Keep only the given games, in that order (drop finished ones so later steps cost less)."""
        if not games:
            raise ValueError("a session needs at least one game")
        rows = list(games) + ([self.n_games + g for g in games] if self.guidance else [])
        idx = torch.tensor(rows, dtype=torch.long, device=self._last.device)
        self.cache = self.cache.select(idx)
        self._last = self._last[idx]
        self.rows = [self.rows[r] for r in rows]
        self.prompts = [self.prompts[g] for g in games]
        self.boards = [self.boards[g] for g in games]
        self.n_games = len(games)


class ModelPlayer:
    """The model as a Player, prompted with its own rating and its opponent's.

    Keeps a one-game Session between calls, so a whole game costs one cached step per ply; if
    the board it is given does not continue the game it knows (new game, takeback, a position set
    up elsewhere), it re-encodes the board's move history from scratch.
    """

    def __init__(self, policy: ModelPolicy, rating: int | None, opponent_rating: int | None = None,
                 sampling: Sampling = Sampling(), seed: int = 0) -> None:
        self.policy = policy
        self.rating = rating
        self.opponent_rating = opponent_rating
        self.sampling = sampling
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = MoveStats()
        self._session: Session | None = None
        self._color: chess.Color | None = None

    @property
    def name(self) -> str:
        s = self.sampling
        return (f"{self.policy.model_id}(rating={self.rating}, T={s.temperature}, top_p={s.top_p}"
                + (f", w={s.guidance}" if s.guidance else "") + ")")

    def set_rating(self, rating: int | None, opponent_rating: int | None = None) -> None:
        """Change the prompt; the next move re-encodes the game under the new prompt."""
        self.rating, self.opponent_rating = rating, opponent_rating
        self._session = None

    def _sync(self, board: chess.Board) -> Session:
        """A session whose game equals board's move history (incremental when it continues)."""
        color = board.turn
        s = self._session
        if s is not None and self._color == color and s.boards[0].root() == board.root():
            known = s.boards[0].move_stack
            stack = board.move_stack
            if len(stack) >= len(known) and stack[: len(known)] == known:
                for m in stack[len(known):]:
                    s.push([m])
                return s
        prompt = self.policy.player_prompt(color, self.rating, self.opponent_rating)
        s = Session(self.policy, [prompt], self.sampling.guidance)
        if board.move_stack or board.root() != chess.Board():  # a history, or a set-up (FEN) start
            s.boards[0] = board.copy()
            s._encode_from_scratch()
        self._session, self._color = s, color
        return s

    def distribution(self, board: chess.Board, temperature: float | None = None) -> torch.Tensor:
        """Probabilities (1968,) over move tokens for the side to move, at this player's prompt.

        At the sampling temperature by default; ``temperature=1.0`` gives the model's own
        probabilities (guidance applied), which is what hints and UCI info lines report.
        """
        t = self.sampling.temperature if temperature is None else temperature
        logits = self._sync(board).logits[0]
        return torch.softmax(logits / max(t, 1e-6), dim=-1)

    def play(self, board: chess.Board) -> chess.Move:
        session = self._sync(board)
        return self.policy.choose(session.logits, [board], self.sampling, self.generator, self.stats)[0]


class QuantilizerPlayer:
    """An explicit quantilizer: draw k moves from the base model's legal-move distribution, keep
    the top fraction q of the draws by a Stockfish evaluation at a fixed node budget, play one of
    those uniformly at random. q = 1 is the base model; q -> 1/k approaches best-of-k.

    `engine` is a started chessdt.engine.Engine (full strength; the caller owns its lifetime).
    """

    def __init__(self, base: ModelPlayer, engine: object, k: int = 8, q: float = 0.25, nodes: int = 2000,
                 seed: int = 0) -> None:
        if k < 1 or not 0 < q <= 1:
            raise ValueError(f"quantilizer needs k >= 1 and 0 < q <= 1 (got k={k}, q={q})")
        self.base, self.engine, self.k, self.q, self.nodes = base, engine, k, q, nodes
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def name(self) -> str:
        return f"quantilizer(k={self.k}, q={self.q}, nodes={self.nodes}, base={self.base.name})"

    def __enter__(self) -> "QuantilizerPlayer":
        start = getattr(self.engine, "start", None)
        if start is not None:
            start()
        return self

    def __exit__(self, *exc: object) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def evaluate(self, board: chess.Board, move: chess.Move) -> int:
        """Centipawns for the mover after `move` (mates as +-100000)."""
        after = board.copy(stack=False)
        after.push(move)
        info = self.engine.analyse(after, chess.engine.Limit(nodes=self.nodes))  # type: ignore[attr-defined]
        return int(info["score"].pov(board.turn).score(mate_score=100_000))

    def play(self, board: chess.Board) -> chess.Move:
        probs = self.base.distribution(board).cpu()
        legal = torch.zeros_like(probs, dtype=torch.bool)
        legal[[self.base.policy.vocab.encode_move(m) for m in board.legal_moves]] = True
        probs = torch.where(legal, probs, torch.zeros_like(probs))
        if float(probs.sum()) <= 0:
            probs = legal.float()
        draws = torch.multinomial(probs, self.k, replacement=True, generator=self.generator).tolist()
        moves = [self.base.policy.vocab.decode_move(t) for t in draws]
        scores = {m: self.evaluate(board, m) for m in set(moves)}
        ranked = sorted(moves, key=lambda m: scores[m], reverse=True)
        keep = ranked[: max(1, math.ceil(self.q * self.k))]
        return self.rng.choice(keep)
