"""What evaluators measure: a Subject is a prompted model (played batched) or any Player (made per seed)."""

from __future__ import annotations

import chess
import pytest

from chessdt.config import EvalConfig
from chessdt.evals.subject import Subject, model_subjects, sampling_of
from chessdt.play.arena import PlayerSeat
from chessdt.play.players import RandomPlayer
from chessdt.play.policy import Prompted, Sampling
from tiny_policy import tiny_policy


def test_model_subjects_hold_one_prompted_value_per_rating() -> None:
    policy = tiny_policy()
    cfg = EvalConfig(ratings=(1200, 2000), temperature=0.5, top_p=0.9, guidance=1.0, mask_illegal=True)
    sampling = Sampling(temperature=0.5, top_p=0.9, guidance=1.0, mask_illegal=True)
    assert sampling_of(cfg) == sampling
    subjects = model_subjects(policy, cfg)
    assert [s.label for s in subjects] == ["model@1200", "model@2000"]
    assert [s.prompted for s in subjects] == [Prompted(policy, 1200, None, sampling), Prompted(policy, 2000, None, sampling)]
    assert subjects[0].seat is subjects[0].prompted and subjects[0].policy is policy
    assert Subject.model(policy, None).label == "model@?"
    with pytest.raises(ValueError, match="plays through sessions"):
        with subjects[0].open_player(0):
            pass


class _Closing(RandomPlayer):
    entered = exited = 0

    def __enter__(self) -> "_Closing":
        _Closing.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        _Closing.exited += 1


def test_player_subjects_are_made_per_seed_and_closed() -> None:
    subject = Subject.player("random", lambda seed: _Closing(seed), rating=800, pooled=True)
    assert subject.prompted is None and subject.policy is None and subject.sampling == Sampling()
    seat = subject.seat
    assert isinstance(seat, PlayerSeat) and seat.pooled
    board = chess.Board()
    with subject.open_player(7) as a:
        first = a.play(board)
    assert first == RandomPlayer(7).play(board)
    assert (_Closing.entered, _Closing.exited) == (1, 1)
