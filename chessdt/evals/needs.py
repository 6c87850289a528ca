"""What each evaluator needs before it runs: held-out games (how many), a value head, Stockfish.

One table, read by the `eval` commands (chessdt/cli.py) and by `chessdt run` (chessdt/pipeline.py),
so the two read the same number of held-out games for an evaluator and refuse for the same reasons.
The numbers themselves are fields of the [eval] section (:class:`~chessdt.config.EvalConfig`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from chessdt.config import EvalConfig
from chessdt.errors import UserError

EvalName = Literal["legality", "strength", "openings", "value", "fidelity", "match", "prompt"]


@dataclass(frozen=True)
class Needs:
    """What one evaluator needs."""

    summary: str  # what it measures, in one line (the CLI's help)
    games: Callable[[EvalConfig], int]  # held-out games it reads: the first N of the source (0 = none)
    requires_games: bool  # refuses to run without held-out games (the others skip the parts that use them)
    value_head: bool = False  # only for a model with a value head
    engine: bool = False  # may start Stockfish (the CLI takes --engine; `run` looks for it before training)

    def check(self, name: str, checkpoint: str, games: int, has_value: bool) -> None:
        """Raise UserError when what evaluator `name` needs for `checkpoint` is missing."""
        if self.value_head and not has_value:
            raise UserError(f"{checkpoint}: this model has no value head (train with model.value_head = true)")
        if self.requires_games and not games:
            raise UserError(f"eval {name} needs held-out games: pass --games (prepared data dir or PGN file)")


EVALUATORS: dict[EvalName, Needs] = {
    "legality": Needs("legality of raw predictions on held-out games, illegal attempts in self-play",
                      lambda ev: ev.legality_games, requires_games=True),
    # move matching reads matching_games; centipawn loss samples cpl_positions positions from twice as many games
    "strength": Needs("Stockfish-ladder Elo per prompted rating, human move matching, centipawn loss",
                      lambda ev: max(ev.matching_games, 2 * ev.cpl_positions), requires_games=False, engine=True),
    "openings": Needs("opening variety per prompted rating next to human games of that band",
                      lambda ev: ev.openings_human_games, requires_games=False, engine=True),
    "value": Needs("calibration of the value head on held-out games: Brier score vs base rates, reliability",
                   lambda ev: ev.value_games, requires_games=True, value_head=True),
    "fidelity": Needs("softmax-ladder data: the prompted model against each rung's exact policy (KL, entropy ratio)",
                      lambda ev: ev.fidelity_games, requires_games=True, engine=True),
    "prompt": Needs("the prompt where history cannot help: the first plies of held-out games under each prompted "
                    "rating against each band's own moves (NLL, first-move shares, distances)",
                    lambda ev: ev.prompt_games, requires_games=True),
    # games, plan, opening plies, batch size, max plies and seed: eval.match_* and the shared [eval] fields
    "match": Needs("direct matches between settings of one model (paired openings, Elo differences to about "
                   "+-20 in 400 games, optional SPRT)", lambda ev: 0, requires_games=False, engine=True),
}
