"""Stockfish-vs-Stockfish games over a ladder of strengths, appended to a resumable .pgn.zst file.

Game `i` of a run is fixed by (seed, i): which two rungs meet, who has White, and the start line.
Every cycle of `len(rungs) * (len(rungs) - 1)` games plays each ordered pair of distinct rungs once,
so every rung meets near and far rungs equally often with both colours. Each finished game carries
its index in a `LadderIndex` tag; a restarted run reads the file, skips the indices already there and
plays the rest, so an interruption neither loses nor duplicates games. Games are written in whole
zstd frames; a frame cut off by a crash is truncated away on restart.

Move choice comes from Stockfish's own UCI_LimitStrength/Skill Level randomness (an unlimited rung is
deterministic, so it only ever meets limited ones). Stockfish 15.1 seeds that generator from the clock
(no UCI option sets it), so a rerun reproduces the pairings, colours and start lines exactly, but not
the moves. Softmax rungs ('RATING:softmax=T[,gate=C][,eps=P]', :mod:`chessdt.stockfish.softmax`)
sample from their exact policy with a generator seeded by (seed, i), over scores that a fixed node
budget and a cleared hash make reproducible: a ladder of softmax rungs replays the same games.
For them the node limit ('/N' or the run's) is per scored legal move, not per position.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import logging
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import chess
import chess.engine
import chess.pgn
import chess.polyglot
import numpy as np
from tqdm import tqdm

from chessdt.stockfish.engine import Engine, EngineCommand, EngineFailure
from chessdt.errors import UserError
from chessdt.files import exclusive_beside
from chessdt.game import Resourceless, play_out
from chessdt.rules import UCI_ELO_MIN, Opponent, Strength, parse_line
from chessdt.stockfish.framed import FramedWriter, read_whole, repair
from chessdt.stockfish.mover import strength_move
from chessdt.stockfish.workers import WorkerError, imap_stateful

log = logging.getLogger(__name__)

INDEX_TAG = "LadderIndex"
_INDEX_RE = re.compile(r'^\[LadderIndex "(\d+)"\]', re.M)
_EVENT_RE = re.compile(r'^\[Event "([^"]*)"\]', re.M)


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: the nominal rating written to WhiteElo/BlackElo and how it is played."""

    rating: int  # nominal rating for the PGN header
    strength: Strength  # the engine setting that plays at this rung
    nodes: int | None = None  # node limit per move for this rung; None = the run's limit

    @classmethod
    def parse(cls, spec: str) -> Rung:
        """'1600' plays at UCI_Elo 1600; '1200:skill=0' is nominal 1200 played at Skill Level 0;
        '2225:full' is nominal 2225 played at full strength; '/N' sets the rung's own node limit;
        ',eps=P' (or ':eps=P', full strength) plays a uniformly random legal move with probability P.
        '1900:softmax=15,gate=100' samples from a softmax over Stockfish's scores of every legal move
        (:mod:`chessdt.stockfish.softmax`); there '/N' is the node budget per scored move.

        >>> Rung.parse("1600").strength.elo, Rung.parse("1200:skill=3").strength.skill
        (1600, 3)
        >>> Rung.parse("1975:full/100").nodes
        100
        >>> r = Rung.parse("1000:eps=0.6/200"); r.eps, r.strength.elo, r.nodes, str(r)
        (0.6, None, 200, '1000:full,eps=0.6/200')
        """
        rating_s, colon, how = spec.partition(":")
        rating_s, slash, nodes_s = rating_s.partition("/")  # '1600/100': UCI_Elo 1600 at 100 nodes
        try:
            rating = int(rating_s)
        except ValueError:
            raise UserError(f"bad rung {spec!r}: expected RATING, RATING:skill=K, RATING:elo=E, RATING:full or "
                            "RATING:softmax=T[,gate=C], optionally with ,eps=P (0..1) and /NODES") from None
        if not colon:
            if rating < UCI_ELO_MIN:
                raise UserError(f"rung {spec!r}: below UCI_Elo {UCI_ELO_MIN}, say how to play it, "
                                f"e.g. '{rating}:skill=0' or '{rating}:eps=0.5'")
            how = f"elo={rating}" + (slash + nodes_s)
        try:
            opponent = Opponent.parse(how)  # the one grammar of an opponent, '/N' included
        except UserError as e:
            raise UserError(f"bad rung {spec!r}: {e}") from None
        if opponent.kind != "stockfish":
            raise UserError(f"bad rung {spec!r}: a rung is Stockfish at a strength")
        return cls(rating, opponent.strength, opponent.nodes)

    @property
    def eps(self) -> float:
        """Probability of playing a uniformly random legal move instead of the engine's."""
        return self.strength.eps

    @property
    def deterministic(self) -> bool:
        """Full-strength Stockfish with no random moves: every game between two such rungs is the same."""
        return self.strength.deterministic

    def describe(self) -> str:
        """How the rung plays, for the PGN player name."""
        return self.strength.describe()

    def __str__(self) -> str:
        if self.nodes is not None:
            return f"{dataclasses.replace(self, nodes=None)}/{self.nodes}"
        if self.strength.elo == self.rating and not self.eps:
            return str(self.rating)
        return f"{self.rating}:{self.strength.spec}"


def parse_rungs(text: str) -> tuple[Rung, ...]:
    """Comma-separated rungs; a comma followed by a digit starts the next rung, so a rung's own
    settings may hold commas ('1000:full,eps=0.6,2000:softmax=20,gate=50' is two rungs).

    >>> [str(r) for r in parse_rungs("1000:full,eps=0.6,2000:softmax=20,gate=50/150")]
    ['1000:full,eps=0.6', '2000:softmax=20,gate=50/150']
    """
    return tuple(Rung.parse(s) for s in re.split(r",(?=\d)", text.strip()) if s)


_EVENT_SETTINGS = re.compile(r"\bnodes=(\d+) rungs=(\S+)")


def ladder_rungs(event: str) -> tuple[Rung, ...] | None:
    """The rungs of the run that wrote a ladder file, from its Event tag, each with its node limit
    made explicit; None when the tag is not a ladder run's.

    >>> [str(r) for r in ladder_rungs("chessdt ladder seed=0 nodes=150 rungs=1000:softmax=85,2000/300 maxplies=250")]
    ['1000:softmax=85/150', '2000/300']
    """
    m = _EVENT_SETTINGS.search(event)
    if not event.startswith("chessdt ladder") or m is None:
        return None
    nodes = int(m.group(1))
    return tuple(r if r.nodes is not None else dataclasses.replace(r, nodes=nodes) for r in parse_rungs(m.group(2)))


# Seven rungs, nominally 125 points apart, each measurably stronger than the one below. Stockfish 15.1
# weakens play by picking among its top 4 moves at depth 1 + level, level = ((elo - 1346.6) / 143.4)
# ** 1.24; a 1000-node search reaches about depth 5, so UCI_Elo settings from ~1850 up all play alike
# (measured: 1850 vs 1975 48%, 2350/2600/2850 49-50% among themselves). Above 1850 the ladder therefore
# climbs by search instead: UCI_Elo 1975 at 2000 nodes (86% vs 1850), then unlimited Stockfish at
# 1000 nodes (85% vs the 1975 rung). Only one rung is unlimited: two would replay identical games.
DEFAULT_RUNGS: tuple[Rung, ...] = (*(Rung(r, Strength(elo=r)) for r in range(1350, 1851, 125)),
                                   Rung(1975, Strength(elo=1975), nodes=2000),
                                   Rung(2100, Strength()))


@dataclass(frozen=True, kw_only=True)
class LadderConfig:
    """Everything that decides what a ladder run plays (the engine path is passed separately)."""

    rungs: tuple[Rung, ...] = DEFAULT_RUNGS  # the ladder, any order
    games: int = 1000  # total games in the file when the run is complete
    seed: int = 0  # fixes pairings, colours and start lines of game i
    nodes: int = 1000  # node limit per move: fast, and the same for every rung
    hash_mb: int = 16  # transposition table per engine
    max_plies: int = 300  # a game still running after this many plies is adjudicated a draw
    adjudicate_cp: int = 800  # win adjudicated when the side to move's engine sees >= this ...
    adjudicate_moves: int = 3  # ... on this many consecutive own moves (0 = never adjudicate)
    book: Path | None = None  # optional Polyglot book for the first `book_plies` plies
    book_plies: int = 8  # plies taken from the book
    start_lines: tuple[str, ...] = field(default=())  # optional start lines (SAN or UCI, space-separated)

    def __post_init__(self) -> None:
        if len(self.rungs) < 2:
            raise UserError("a ladder needs at least two rungs")
        if len({r.rating for r in self.rungs}) != len(self.rungs):
            raise UserError("ladder rungs must have distinct ratings")
        unlimited = [str(r) for r in self.rungs if r.deterministic]
        if len(unlimited) > 1:  # no randomness on either side: every meeting would be the same game
            raise UserError(f"at most one unlimited rung (they play deterministically): {', '.join(unlimited)}")
        if self.games < 0 or self.nodes < 1 or self.max_plies < 1 or self.hash_mb < 1:
            raise UserError(f"games must be >= 0 (got {self.games}), nodes, hash_mb and max_plies >= 1 (got "
                            f"{self.nodes}, {self.hash_mb}, {self.max_plies})")

    def event(self) -> str:
        """The Event tag: identifies the run settings, so a resume cannot mix two different runs."""
        rungs = ",".join(str(r) for r in self.rungs)
        extra = f" book={self.book.name}:{self.book_plies}" if self.book else ""
        extra += f" lines={len(self.start_lines)}" if self.start_lines else ""
        adj = f"{self.adjudicate_cp}cp/{self.adjudicate_moves}" if self.adjudicate_moves else "off"
        return (f"chessdt ladder seed={self.seed} nodes={self.nodes} rungs={rungs} "
                f"maxplies={self.max_plies} adjudicate={adj}{extra}")


@dataclass(frozen=True)
class Pairing:
    index: int
    white: Rung
    black: Rung
    opening: tuple[chess.Move, ...]  # forced start line (may be empty)
    book_seed: int  # seeds the Polyglot choice for this game


def pairing(cfg: LadderConfig, index: int) -> Pairing:
    """Which rungs meet in game `index`, colours and start line; a pure function of (cfg, index).

    >>> cfg = LadderConfig(rungs=(Rung.parse("1400"), Rung.parse("1500"), Rung.parse("1600")))
    >>> sorted((pairing(cfg, i).white.rating, pairing(cfg, i).black.rating) for i in range(6))
    [(1400, 1500), (1400, 1600), (1500, 1400), (1500, 1600), (1600, 1400), (1600, 1500)]
    """
    ordered = [(a, b) for a in cfg.rungs for b in cfg.rungs if a != b]
    cycle, pos = divmod(index, len(ordered))
    order = random.Random(f"ladder/{cfg.seed}/{cycle}").sample(range(len(ordered)), len(ordered))
    white, black = ordered[order[pos]]
    rng = random.Random(f"game/{cfg.seed}/{index}")
    opening: tuple[chess.Move, ...] = ()
    if cfg.start_lines:
        opening = parse_line(cfg.start_lines[rng.randrange(len(cfg.start_lines))])
    return Pairing(index, white, black, opening, rng.getrandbits(32))


def load_start_lines(path: Path) -> tuple[str, ...]:
    """Non-empty, non-comment lines of a start-lines file (each checked to parse)."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise UserError(f"cannot read start lines {path}: {e}") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    for ln in lines:
        parse_line(ln)
    if not lines:
        raise UserError(f"{path}: no start lines")
    return tuple(lines)


def check_book(path: Path) -> None:
    """UserError unless `path` is a Polyglot opening book: 16-byte entries sorted by position key.

    python-chess reads any file whose size is a multiple of 16 as a book (a text file then gives no
    moves, silently) and fails mid-run on the others; this says so once, before any game."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"book {path}: {e.strerror or e}") from None
    if data and len(data) % 16 == 0:
        keys = np.frombuffer(data, dtype=">u8")[::2]  # each entry: key, move, weight, learn (big-endian)
        if bool(np.all(keys[1:] >= keys[:-1])):
            return
    raise UserError(f"{path} is not a Polyglot opening book (a non-empty file of 16-byte entries sorted by "
                    f"position key; this one has {len(data):,} bytes)")


# -- playing one game ---------------------------------------------------------------------------
# How the generator's PGN names the ends the game loop reports (the embedded files' Termination tags).
_TERMINATION = {"adjudication": "adjudication: decisive evaluation", "move_limit": "adjudication: move limit"}


class RungPlayer(Resourceless):
    """A rung at the board: its engine (already set to the rung's strength; the worker owns it),
    the game's coin for eps moves and softmax draws (one coin for both sides, seeded by the game),
    and `streak`, its own consecutive moves whose engine score was at least `win_cp`."""

    def __init__(self, rung: Rung, engine: Engine, nodes: int, coin: random.Random, game: object,
                 win_cp: int | None) -> None:
        self.rung, self.engine, self.nodes, self.coin, self.game = rung, engine, nodes, coin, game
        self.win_cp = win_cp  # None: no adjudication, so no scores asked for
        self.streak = 0
        self.name = rung.describe()

    def play(self, board: chess.Board) -> chess.Move:
        chosen = strength_move(self.engine, board, self.rung.strength, chess.engine.Limit(nodes=self.nodes), self.coin,
                               line_nodes=self.nodes, game=self.game, score=self.win_cp is not None)
        if not chosen.random:  # a random move has no engine score: the streak is left as it is
            self._count(chosen.score)
        return chosen.move

    def _count(self, pov: int | None) -> None:
        self.streak = self.streak + 1 if self.win_cp is not None and pov is not None and pov >= self.win_cp else 0


def play_pairing(cfg: LadderConfig, pair: Pairing, white: Engine, black: Engine, engine_name: str) -> chess.pgn.Game:
    """Play one ladder game between two engines already set to the pairing's strengths, through
    the one game loop (:func:`chessdt.game.play_out`); a side whose engine saw a win on
    `adjudicate_moves` consecutive own moves is adjudicated the winner."""
    board = chess.Board()
    for move in pair.opening:
        board.push(move)
    if cfg.book is not None and not pair.opening:
        rng = random.Random(pair.book_seed)
        with chess.polyglot.open_reader(cfg.book) as book:
            while board.ply() < cfg.book_plies:
                entry = book.get(board) and book.weighted_choice(board, random=rng)
                if not entry:
                    break
                board.push(entry.move)
    coin = random.Random(f"eps/{cfg.seed}/{pair.index}")  # the random moves of eps rungs, softmax draws
    game = object()  # a new object per game: python-chess sends ucinewgame
    win_cp = cfg.adjudicate_cp if cfg.adjudicate_moves else None
    players = {color: RungPlayer(rung, engine, rung.nodes or cfg.nodes, coin, game, win_cp)
               for color, rung, engine in ((chess.WHITE, pair.white, white), (chess.BLACK, pair.black, black))}

    def decisive(board: chess.Board) -> tuple[str, str] | None:
        mover = not board.turn
        if win_cp is not None and players[mover].streak >= cfg.adjudicate_moves and board.outcome() is None:
            return ("1-0" if mover == chess.WHITE else "0-1"), "adjudication"
        return None

    result, how = play_out(board, players[chess.WHITE], players[chess.BLACK], max_plies=cfg.max_plies,
                           adjudicate=decisive)
    if how == "engine_failure":
        raise EngineFailure(f"game {pair.index}: an engine kept failing")
    return _pgn(cfg, pair, board, result, _TERMINATION.get(how, "normal"), engine_name)


def _nodes_text(cfg: LadderConfig, rung: Rung) -> str:
    """The rung's node budget as the header says it: per move, or per scored legal move (softmax)."""
    per = "/line" if rung.strength.softmax is not None else ""
    return f"nodes={rung.nodes or cfg.nodes}{per}"


def _pgn(cfg: LadderConfig, pair: Pairing, board: chess.Board, result: str, termination: str,
         engine_name: str) -> chess.pgn.Game:
    game = chess.pgn.Game.from_board(board)
    h = game.headers
    h["Event"] = cfg.event()
    h["Site"] = "chessdt games generate"
    h["Date"] = datetime.date.today().strftime("%Y.%m.%d")
    h["Round"] = str(pair.index + 1)
    h["White"] = f"{engine_name} {pair.white.describe()} {_nodes_text(cfg, pair.white)}"
    h["Black"] = f"{engine_name} {pair.black.describe()} {_nodes_text(cfg, pair.black)}"
    h["Result"] = result
    h["WhiteElo"] = str(pair.white.rating)
    h["BlackElo"] = str(pair.black.rating)
    h["TimeControl"] = "-"
    h["Termination"] = termination
    h[INDEX_TAG] = str(pair.index)
    h["EngineSettings"] = f"Threads=1 Hash={cfg.hash_mb} nodes={cfg.nodes}"
    h["PlyCount"] = str(board.ply())
    return game


# -- workers ---------------------------------------------------------------------------------------
class _Players:
    """One engine per side, for the lifetime of a worker."""

    def __init__(self, cfg: LadderConfig, engine_path: EngineCommand) -> None:
        self.cfg = cfg
        self.white = Engine(engine_path, hash_mb=cfg.hash_mb)
        self.black = Engine(engine_path, hash_mb=cfg.hash_mb)
        self.name = ""

    def __enter__(self) -> _Players:
        self.white.start()
        self.black.start()
        self.name = self.white.name
        return self

    def __exit__(self, *exc: object) -> None:
        self.white.close()
        self.black.close()


def _play_index(players: _Players, index: int) -> tuple[int, str]:
    """Game `index` as PGN text; a game whose engine fails is replayed from the start."""
    cfg = players.cfg
    pair = pairing(cfg, index)
    for attempt in range(3):
        try:
            players.white.set_strength(pair.white.strength)
            players.black.set_strength(pair.black.strength)
            game = play_pairing(cfg, pair, players.white, players.black, players.name)
            return index, str(game) + "\n\n"
        except EngineFailure as e:
            log.warning("game %d failed (%s), replaying it", index, e)
    raise EngineFailure(f"game {index}: engine failed on every attempt")


# -- output file ------------------------------------------------------------------------------------
def existing_indices(path: Path, cfg: LadderConfig) -> set[int]:
    """Indices already in `path`; cuts a torn final batch; refuses a file from other settings."""
    text = repair(path)
    events = set(_EVENT_RE.findall(text))
    if events and events != {cfg.event()}:
        raise UserError(f"{path} holds games from other settings ({sorted(events)[0]!r}); "
                        f"this run is {cfg.event()!r}: use another --out or the same settings")
    return {int(i) for i in _INDEX_RE.findall(text)}


@dataclass(frozen=True)
class GenerateSummary:
    played: int  # games played by this run
    total: int  # games in the file now
    seconds: float


def generate(cfg: LadderConfig, out: Path, engine_path: EngineCommand, *, workers: int = 0,
             flush_every: int = 200, progress: bool = True) -> GenerateSummary:
    """Play the missing games of a ladder run into `out` (.pgn.zst or .pgn), resuming an earlier run;
    OutputLocked while another run writes `out` (both would play and append the same games)."""
    if cfg.book is not None:
        check_book(cfg.book)
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_beside(out, f"games output {out}"):
        return _generate(cfg, out, engine_path, workers, flush_every, progress)


def _generate(cfg: LadderConfig, out: Path, engine_path: EngineCommand, workers: int, flush_every: int,
              progress: bool) -> GenerateSummary:
    done = existing_indices(out, cfg)
    todo = [i for i in range(cfg.games) if i not in done]
    workers = workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(todo) or 1))
    writer = FramedWriter(out)
    start = time.monotonic()
    played = 0
    bar = tqdm(total=cfg.games, initial=cfg.games - len(todo), unit="game", disable=not progress,
               desc="ladder", smoothing=0.05)
    try:
        if todo:
            setup = functools.partial(_Players, cfg, engine_path)
            for _index, text in _stop_as_user_error(imap_stateful(setup, _play_index, todo, workers)):
                writer.add(text)
                played += 1
                bar.update(1)
                if progress:
                    bar.set_postfix_str(f"{60.0 * played / max(time.monotonic() - start, 1e-9):.0f} games/min")
                if len(writer.buffer) >= flush_every:
                    writer.flush()
    finally:
        writer.flush()  # whole games only: an interrupted run keeps everything finished so far
        bar.close()
    return GenerateSummary(played, len(done) + played, time.monotonic() - start)


def _stop_as_user_error(results: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The worker results; a worker's failure becomes a one-line error that says the run resumes."""
    try:
        yield from results
    except (WorkerError, EngineFailure) as e:  # in a worker process, or in this one (one worker)
        raise UserError(f"{e}; every game finished so far is saved: rerun the same command to resume") from None


def read_games(path: Path) -> Iterator[chess.pgn.Game]:
    """Games of a ladder file (.pgn.zst or .pgn), headers and moves."""
    stream = io.StringIO(read_whole(path)[0])
    while (game := chess.pgn.read_game(stream)) is not None:
        yield game
