"""Finished games on disk: one :class:`GameRecord` per line of an append-only JSONL log.

A log starts with a line ``{"meta": ...}`` naming the settings of its run; a rerun with the same
settings resumes it (the games already there are skipped), one with other settings is refused, and
a line torn by a crash is dropped. Under the key ``weights`` the meta names the weights that played
(:func:`chessdt.checkpoint.weights_hash` per model seat); a rerun with other weights and the same
settings sets the old log aside (renamed, never deleted) and starts a new one, saying so.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import chess.pgn

from chessdt.errors import UserError
from chessdt.rules import RESULTS, white_score

log = logging.getLogger(__name__)
WEIGHTS = "weights"  # meta key: {seat label: weights_hash} of the models that played the log's games


@dataclass(frozen=True)
class GameRecord:
    """A finished game as stored in the JSONL log."""

    id: str
    white: str
    black: str
    result: str  # 1-0, 0-1, 1/2-1/2, or * when an engine failed for good
    termination: str  # checkmate, stalemate, ..., move_limit, engine_failure
    plies: int  # half-moves in the game, opening included
    model_moves: dict[str, int]  # 'white'/'black': moves the model chose for that side
    illegal: dict[str, int]  # 'white'/'black': of those, sampled moves that were illegal (raw model)
    masked: bool  # the model sampled with illegal moves masked out (play-time option, reported)
    engine_restarts: int  # engine processes replaced during this game (crash or hang)
    seconds: float  # wall time of the game (shared with the other games of its batch)
    pgn: str
    tags: dict[str, Any] = field(default_factory=dict)
    # -- referee adjudication (chessdt.stockfish.referee), when a referee watched the game --
    referee: list[int] = field(default_factory=list)  # its score after ply 1, 2, ... from White's side
    adjudication: str = ""  # the result its rule adjudicated ("" = none)
    adjudication_ply: int = 0  # the ply of that verdict
    played_out: bool = True  # False: the game stopped at the verdict (result = adjudication)
    first_illegal_ply: int | None = None  # half-moves played before the model first sampled an illegal move
    # (replaced, and the game went on); None: no illegal sample, or not recorded. Under strict rules (an
    # illegal move loses) the game ends there: the same game, since the replacement draws no randomness

    @property
    def decided(self) -> bool:
        """The game has a result (not aborted by an engine failure)."""
        return self.result in RESULTS

    @property
    def white_score(self) -> float:
        return white_score(self.result)

    @property
    def adjudicated_result(self) -> str:
        """The result with the referee's verdict standing wherever its rule made one."""
        return self.adjudication or self.result

    @property
    def false_adjudication(self) -> bool:
        """Played out after a verdict, and the side the referee named did not win."""
        return bool(self.adjudication) and self.played_out and self.result != self.adjudication

    def score_of(self, label: str) -> float:
        """Points scored by the seat `label` (which must have played this game and finished it)."""
        return self.white_score if label == self.white else 1.0 - self.white_score

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GameRecord:
        return cls(**d)

    def game(self) -> chess.pgn.Game:
        """The game as python-chess parses it from the stored PGN."""
        game = chess.pgn.read_game(io.StringIO(self.pgn))
        assert game is not None
        return game

    def line(self) -> tuple[str, ...]:
        """The game's moves in UCI notation, from the start."""
        return tuple(m.uci() for m in self.game().mainline_moves())


# -- the JSONL log -------------------------------------------------------------------------------------------
class GameLog:
    """Append-only JSONL: a first line `{"meta": ...}` then one GameRecord per line.

    Opening an existing log with different meta is an error (a resume must not mix two runs); a
    line torn by a crash is dropped.
    """

    def __init__(self, path: Path, meta: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.meta = json.loads(json.dumps(dict(meta)))  # normalised as it will read back
        self.records: dict[str, GameRecord] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            self._load()
        else:
            with open(self.path, "w") as f:
                f.write(json.dumps({"meta": self.meta}) + "\n")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):  # torn last line: cut it off before appending
            raw = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(raw))
        lines = raw.decode().splitlines()
        if not lines:
            with open(self.path, "w") as f:
                f.write(json.dumps({"meta": self.meta}) + "\n")
            return
        try:
            head = json.loads(lines[0])["meta"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{self.path}: not a chessdt game log (first line has no meta)") from None
        if head != self.meta:
            diff = sorted(k for k in set(head) | set(self.meta) if head.get(k) != self.meta.get(k))
            if diff == [WEIGHTS]:
                self._set_aside(head.get(WEIGHTS))
                return
            raise UserError(f"{self.path} holds games of other settings (differs in {', '.join(diff)}); "
                            "delete it or write to another directory")
        for line in lines[1:]:
            try:
                rec = GameRecord.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError):
                log.warning("%s: skipping an unreadable line", self.path)
                continue
            self.records[rec.id] = rec

    def _set_aside(self, theirs: Any) -> None:
        """The log holds games of other weights (or of weights never recorded): rename it, start afresh."""
        n = 1
        while (aside := self.path.with_name(f"{self.path.stem}.other-weights-{n}{self.path.suffix}")).exists():
            n += 1
        os.replace(self.path, aside)
        with open(self.path, "w") as f:
            f.write(json.dumps({"meta": self.meta}) + "\n")
        log.warning("%s: its games were played by other weights (%s, now %s); set aside as %s, playing afresh",
                    self.path, _short(theirs), _short(self.meta.get(WEIGHTS)), aside.name)

    def add(self, record: GameRecord) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record.to_json()) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record.id] = record


def _short(weights: Any) -> str:
    """Weights ids of a log's meta in a few words: 'a1b2c3d4e5f60718', or 'not recorded'."""
    if not weights:
        return "not recorded"
    if isinstance(weights, dict):
        return ", ".join(sorted({str(v) for v in weights.values()}))
    return str(weights)


def read_game_log(path: Path) -> tuple[dict[str, Any], list[GameRecord]]:
    """(meta, records) of a game log, for reports and re-analysis."""
    lines = Path(path).read_text().splitlines()
    meta = json.loads(lines[0])["meta"] if lines else {}
    records: dict[str, GameRecord] = {}  # a game retried after an abort: its last record counts
    for line in lines[1:]:
        try:
            rec = GameRecord.from_json(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        records.pop(rec.id, None)
        records[rec.id] = rec
    return meta, list(records.values())
