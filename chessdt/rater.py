"""A learned rater: a frozen model's value head judging how a game stands, the RLHF reward model's analog.

RLHF does not optimise the true quality of an answer but a reward model's opinion of it. The chess
analog is a network trained on the data to forecast the result from a position (``model.value_head``):
it judges the position at a fixed horizon (the rollout's length), from the side being rated, and the
RL policy is rewarded by that forecast instead of the game's result. The policy can then gain
reward without gaining strength, wherever the rater is wrong; measuring both along the run (the
rater's score and the referee-adjudicated result of the same games) is the over-optimisation curve.

A rater sees only the moves, under its own prompt (both players at `rating`; None = the unknown
rating token), never the result or an engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import chess
import numpy as np
import torch

from chessdt.errors import UserError
from chessdt.play.policy import ModelPolicy
from chessdt.tokenizer import game_inputs


class Rater:
    """Expected scores (0..1) of one side of a game, as a frozen value head forecasts them."""

    def __init__(self, policy: ModelPolicy, rating: int | None = None, batch_size: int = 64) -> None:
        if not policy.has_value:
            raise UserError(f"{policy.model_id} has no value head to rate with: train the rater with "
                            "model.value_head = true (or set rl.rater to a checkpoint that has one)")
        self.policy, self.rating, self.batch_size = policy, rating, batch_size
        policy.model.eval()

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", rating: int | None = None) -> Rater:
        return cls(ModelPolicy.from_checkpoint(path, device), rating)

    @property
    def name(self) -> str:
        return f"{self.policy.model_id}(value head, rating={self.rating})"

    def horizon(self, limit: int) -> int:
        """The most plies a judged game can have: `limit`, within the rater's context."""
        room = self.policy.context - self.policy.prompt_len
        return max(0, min(limit, room)) if limit > 0 else room

    @torch.no_grad()
    def scores(self, games: Sequence[tuple[Sequence[chess.Move], chess.Color]], horizon: int = 0) -> np.ndarray:
        """For each (moves, color): the rater's expected score W + D/2 for `color` in the position
        after the first min(len(moves), horizon) moves (horizon 0: as many as its context holds)."""
        p = self.policy
        h = self.horizon(horizon)
        out = np.empty(len(games))
        for start in range(0, len(games), self.batch_size):
            chunk = games[start:start + self.batch_size]
            boards, prompts = [], []
            for moves, color in chunk:
                board = chess.Board()
                for m in list(moves)[:h]:
                    board.push(m)
                boards.append(board)
                prompts.append(p.player_prompt(color, self.rating, None))
            tokens, planes, plies = (torch.as_tensor(a, device=p.device)
                                     for a in game_inputs(prompts, boards, p.context, p.vocab))
            _, value = p.model(tokens, planes, plies, with_value=True)  # (B, T, 3): W/D/L of the side to move
            last = torch.tensor([len(pr) - 1 + b.ply() for pr, b in zip(prompts, boards)], device=value.device)
            wdl = torch.softmax(value[torch.arange(len(chunk), device=value.device), last].float(), dim=-1)
            to_move = wdl[:, 0] + 0.5 * wdl[:, 1]  # the side to move's expected score
            for i, ((_, color), b) in enumerate(zip(chunk, boards)):
                s = float(to_move[i])
                out[start + i] = s if b.turn == color else 1.0 - s
        return out
