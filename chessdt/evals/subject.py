"""What an evaluator measures: the model prompted at a rating, or any other Player."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from chessdt.config import EvalConfig
from chessdt.play.arena import PlayerSeat, Seat, model_seat, player_seat
from chessdt.game import Player
from chessdt.play.policy import ModelPolicy, Prompted, Sampling


@dataclass(frozen=True, eq=False)
class Subject:
    """What an evaluator measures: a label, the rating it is prompted at, and the seat that plays it
    (the model prompted at a rating, or any other Player)."""

    label: str  # name in tables and game logs, e.g. 'model@1600'
    rating: int | None  # prompted rating (the x axis of strength plots); None when there is none
    seat: Seat  # who sits at the board: a Prompted model (played batched) or a PlayerSeat

    @classmethod
    def model(cls, policy: ModelPolicy, rating: int | None, sampling: Sampling = Sampling(),
              label: str | None = None) -> Subject:
        return cls(label or f"model@{rating if rating is not None else '?'}", rating,
                   Prompted(policy, rating, None, sampling))

    @classmethod
    def player(cls, label: str, make: Callable[[int], Player], rating: int | None = None,
               pooled: bool = False) -> Subject:
        return cls(label, rating, PlayerSeat(make=make, pooled=pooled))

    @property
    def prompted(self) -> Prompted | None:
        """The model this subject plays; None for any other Player."""
        return model_seat(self.seat)

    @property
    def policy(self) -> ModelPolicy | None:
        return None if self.prompted is None else self.prompted.policy

    @property
    def sampling(self) -> Sampling:
        return Sampling() if self.prompted is None else self.prompted.sampling

    def open_player(self, seed: int) -> Player:
        """A fresh Player of a non-model subject, to use as a context manager (`with`)."""
        seat = player_seat(self.seat)
        if seat is None:
            raise ValueError(f"subject {self.label} is a model: it plays through sessions, not a Player")
        return seat.make(seed)


def sampling_of(cfg: EvalConfig) -> Sampling:
    """The play-time sampling settings of an eval config."""
    return Sampling(temperature=cfg.temperature, top_p=cfg.top_p, guidance=cfg.guidance,
                    mask_illegal=cfg.mask_illegal)


def use_threads(cfg: EvalConfig) -> None:
    """Set torch's CPU threads for evaluation: small batched steps run fastest on one thread."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)


def model_subjects(policy: ModelPolicy, cfg: EvalConfig) -> list[Subject]:
    """One subject per prompted rating of the config."""
    return [Subject.model(policy, r, sampling_of(cfg)) for r in cfg.ratings]
