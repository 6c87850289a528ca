"""What an evaluator measures: the model prompted at a rating, or any other Player."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from chessdt.config import EvalConfig
from chessdt.play.arena import PlayerSeat, Seat
from chessdt.play.players import Player
from chessdt.play.policy import ModelPolicy, Prompted, Sampling


@dataclass(frozen=True, eq=False)
class Subject:
    """What an evaluator measures: the model prompted at a rating, or any Player."""

    label: str  # name in tables and game logs, e.g. 'model@1600'
    rating: int | None  # prompted rating (the x axis of strength plots); None when there is none
    prompted: Prompted | None = None  # set for a model: played batched through its KV cache
    make_player: Callable[[int], Player] | None = None  # set for any other Player: seed -> instance
    pooled: bool = False  # Player instances are costly (hold an engine): share a few across games

    @classmethod
    def model(cls, policy: ModelPolicy, rating: int | None, sampling: Sampling = Sampling(),
              label: str | None = None) -> Subject:
        return cls(label=label or f"model@{rating if rating is not None else '?'}", rating=rating,
                   prompted=Prompted(policy, rating, None, sampling))

    @property
    def policy(self) -> ModelPolicy | None:
        return None if self.prompted is None else self.prompted.policy

    @property
    def sampling(self) -> Sampling:
        return Sampling() if self.prompted is None else self.prompted.sampling

    @classmethod
    def player(cls, label: str, make: Callable[[int], Player], rating: int | None = None,
               pooled: bool = False) -> Subject:
        return cls(label=label, rating=rating, make_player=make, pooled=pooled)

    @contextlib.contextmanager
    def open_player(self, seed: int) -> Iterator[Player]:
        """A fresh Player of a non-model subject, started and closed like a resource."""
        if self.make_player is None:
            raise ValueError(f"subject {self.label} is a model: it plays through sessions, not a Player")
        player = self.make_player(seed)
        enter = getattr(player, "__enter__", None)
        if enter is not None:
            enter()
        try:
            yield player
        finally:
            leave = getattr(player, "__exit__", None)
            if leave is not None:
                leave(None, None, None)

    def seat(self) -> Seat:
        """The arena seat that plays this subject."""
        if self.prompted is not None:
            return self.prompted
        if self.make_player is None:
            raise ValueError(f"subject {self.label}: give a policy or a make_player")
        return PlayerSeat(make=self.make_player, pooled=self.pooled)


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
