"""Games between Players: `play_game` for one game, `run_games` for many, the model's batched.

`run_games` takes a list of :class:`GameSpec` (who plays White and Black, a forced opening line)
and a seat per player label: a :class:`~chessdt.play.policy.Prompted` (the model at a rating) or a
:class:`PlayerSeat` (anything with `play(board)`, e.g. Stockfish or the random mover). Games with a
model seat are played in lockstep, up to `batch_size` at a time, through one
:class:`~chessdt.play.policy.Session` per policy and guidance weight: one forward step per ply for all
of them (two checkpoints, or guided and unguided prompts, can meet in one batch), while
the opponents' moves come from their Players (engine calls spread over `workers` threads, one
engine process each). Finished games leave the batch, so late plies cost only the games still
running.

Every finished game is appended to a JSONL file as one :class:`~chessdt.play.gamelog.GameRecord` (PGN included) the
moment it ends; a rerun with the same file and the same weights in every model seat skips the games
already there, so an interrupted evaluation resumes (games of other weights are set aside). An engine that crashes or hangs is restarted by :class:`chessdt.stockfish.engine.Engine`
(the restarts are counted in the record); one that keeps failing ends its game as ``*`` with
termination ``engine_failure``, and evaluators leave such games out.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chess
import chess.engine
import chess.pgn
import torch
from tqdm import tqdm

from chessdt.stockfish.engine import EngineFailure
from chessdt.stockfish.referee import Judge, Referee
from chessdt.play.gamelog import WEIGHTS, GameLog, GameRecord
from chessdt.rules import ABORTED, game_over
from chessdt.game import Player, Resourceless, play_out
from chessdt.play.policy import ModelPolicy, MoveStats, Prompted, Session

log = logging.getLogger(__name__)


# -- seats ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PlayerSeat:
    """Any Player, made by `make(seed)`.

    pooled=True: up to `workers` instances serve all games (engine processes are costly);
    pooled=False: a fresh instance per game, seeded from the game, so its moves do not depend on
    which other games ran (the random mover).
    """

    make: Callable[[int], Player]
    pooled: bool = False


Seat = Prompted | PlayerSeat  # the model (played batched) or any Player


def model_seat(seat: Seat) -> Prompted | None:
    """The model a seat plays, batched through its KV cache; None for a seat of any other Player.
    With :func:`player_seat`, the one place that tells the two kinds of seat apart."""
    return seat if isinstance(seat, Prompted) else None


def player_seat(seat: Seat) -> PlayerSeat | None:
    """The Player maker of a seat; None for a model seat."""
    return seat if isinstance(seat, PlayerSeat) else None


def split_seats(seats: Mapping[str, Seat]) -> tuple[dict[str, Prompted], dict[str, PlayerSeat]]:
    """({label: model}, {label: player seat}): the arena sorts its seats once."""
    models = {label: m for label, seat in seats.items() if (m := model_seat(seat)) is not None}
    players = {label: p for label, seat in seats.items() if (p := player_seat(seat)) is not None}
    return models, players


# -- specs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GameSpec:
    """One game to play: seat labels, a forced opening line, extra tags carried into the record."""

    id: str  # unique within a run: the resume key
    white: str  # seat label
    black: str  # seat label
    opening: tuple[str, ...] = ()  # UCI moves played before anyone chooses
    seed: int = 0  # mixed with the id: seeds the model's sampling and per-game players
    tags: dict[str, Any] = field(default_factory=dict)  # e.g. prompted rating, opponent, colour


# -- one game, sequentially ----------------------------------------------------------------------------------
def _pgn(board: chess.Board, white: str, black: str, result: str, termination: str,
         headers: Mapping[str, str] | None) -> chess.pgn.Game:
    game = chess.pgn.Game.from_board(board)
    game.headers["Event"] = "chessdt arena"
    game.headers["White"] = white
    game.headers["Black"] = black
    game.headers["Result"] = result
    game.headers["Termination"] = termination
    game.headers["PlyCount"] = str(board.ply())
    for k, v in (headers or {}).items():
        game.headers[k] = str(v)
    return game


def _restarts(player: object) -> int:
    return int(getattr(player, "restarts", 0) or 0)


def play_game(white: Player, black: Player, *, opening: Sequence[chess.Move] = (), max_plies: int = 400,
              headers: Mapping[str, str] | None = None, judge: Judge | None = None) -> chess.pgn.Game:
    """Play one game between two started Players from the standard start (after a forced opening
    line), through :func:`chessdt.game.play_out`: a draw by ``move_limit`` after `max_plies`, ``*`` /
    ``engine_failure`` when a Player's engine kept failing (``referee_failure`` for the referee).
    With a `judge`, the referee scores every position and may end the game as ``adjudication``. The
    Termination header says how it ended.
    """
    board = chess.Board()
    result, termination = play_out(board, white, black, max_plies=max_plies, opening=opening,
                                   adjudicate=None if judge is None else lambda b: _judged_end(judge, b))
    return _pgn(board, white.name, black.name, result, termination, headers)


def _judged_end(judge: Judge | None, board: chess.Board) -> tuple[str, str] | None:
    """(result, termination) when the referee ends a running game after the move just played
    ('adjudication', or 'referee_failure' when its engine failed for good), else None."""
    if judge is None or game_over(board) is not None:
        return None
    try:
        verdict = judge.after_move(board)
    except (EngineFailure, chess.engine.EngineError) as e:
        log.warning("referee failed: %s", e)
        return ABORTED, "referee_failure"
    return (verdict, "adjudication") if verdict else None


# -- many games ---------------------------------------------------------------------------------------------------
def _mix(seed: int, game_id: str, salt: str) -> int:
    return zlib.crc32(f"{seed}:{game_id}:{salt}".encode())


def _start(player: Player) -> Player:
    """Start a Player's resources (an engine process); plain players have nothing to start."""
    player.__enter__()
    return player


def _stop(player: Player) -> None:
    player.__exit__(None, None, None)


class _Pools:
    """Player instances for PlayerSeats: `workers` shared instances each (pooled) or one per game."""

    def __init__(self, seats: Mapping[str, PlayerSeat], workers: int) -> None:
        self.seats = seats
        self.workers = max(1, workers)
        self.free: dict[str, queue.Queue[Player]] = {}
        self.made: list[Player] = []

    def acquire(self, label: str, seed: int) -> Player:
        seat = self.seats[label]
        if not seat.pooled:
            return _start(seat.make(seed))
        self.prepare([label])
        return self.free[label].get()

    def prepare(self, labels: Sequence[str]) -> None:
        """Create (and start, in this thread) the instances of pooled seats: an engine started from
        a worker thread would leave asyncio's child watcher confused when it exits."""
        for label in labels:
            seat = self.seats.get(label)
            if seat is None or not seat.pooled or label in self.free:
                continue
            self.free[label] = queue.Queue()
            for k in range(self.workers):
                p = _start(seat.make(k))
                self.made.append(p)
                self.free[label].put(p)

    def release(self, label: str, player: Player) -> None:
        """Return a pooled instance; stop a per-game one (its game is over)."""
        if self.seats[label].pooled:
            self.free[label].put(player)
        else:
            _stop(player)

    def close(self) -> None:
        for p in self.made:
            _stop(p)
        self.made.clear()
        self.free.clear()


@dataclass
class _Game:
    """A game in progress inside a batch."""

    spec: GameSpec
    opening: tuple[chess.Move, ...]
    board: chess.Board = field(default_factory=chess.Board)
    rows: dict[bool, tuple[tuple[int, float], int]] = field(default_factory=dict)  # colour -> (group, session row)
    gens: dict[bool, torch.Generator] = field(default_factory=dict)
    stats: dict[bool, MoveStats] = field(default_factory=dict)
    players: dict[bool, Player] = field(default_factory=dict)  # per-game (unpooled) players
    result: str = ""
    termination: str = ""
    restarts: int = 0
    start: float = field(default_factory=time.monotonic)
    judge: Judge | None = None  # the referee's view of this game, when one watches
    first_illegal_ply: int | None = None  # ply of the model's first sampled illegal move: a strict game ends there

    @property
    def done(self) -> bool:
        return bool(self.result)


def _label(spec: GameSpec, color: chess.Color) -> str:
    return spec.white if color == chess.WHITE else spec.black


def _record(g: _Game, models: Mapping[str, Prompted]) -> GameRecord:
    spec = g.spec
    masked = any(models[x].sampling.mask_illegal for x in (spec.white, spec.black) if x in models)
    stats = {"white": g.stats.get(chess.WHITE, MoveStats()), "black": g.stats.get(chess.BLACK, MoveStats())}
    headers = {"GameId": spec.id}
    pgn = _pgn(g.board, spec.white, spec.black, g.result, g.termination, headers)
    return GameRecord(id=spec.id, white=spec.white, black=spec.black, result=g.result, termination=g.termination,
                      plies=g.board.ply(), model_moves={k: s.moves for k, s in stats.items()},
                      illegal={k: s.illegal for k, s in stats.items()}, masked=masked,
                      engine_restarts=g.restarts, seconds=round(time.monotonic() - g.start, 3),
                      pgn=str(pgn), tags=dict(spec.tags), first_illegal_ply=g.first_illegal_ply, **_judged(g.judge))


def _judged(judge: Judge | None) -> dict[str, Any]:
    """A game record's referee fields."""
    if judge is None:
        return {}
    result, ply = judge.verdict or ("", 0)
    return {"referee": list(judge.scores), "adjudication": result, "adjudication_ply": ply,
            "played_out": judge.played_out}


def _check_game_end(g: _Game, max_plies: int) -> None:
    over = game_over(g.board) or _judged_end(g.judge, g.board)
    if over is not None:
        g.result, g.termination = over
    elif g.board.ply() >= max_plies:
        g.result, g.termination = "1/2-1/2", "move_limit"


def _opponent_move(pools: _Pools, g: _Game, label: str) -> tuple[chess.Move | None, int]:
    """(move or None on engine failure, restarts) for a PlayerSeat's turn in game g."""
    player = g.players.get(g.board.turn) or pools.acquire(label, 0)
    before = _restarts(player)
    try:
        move = player.play(g.board.copy())
        if move not in g.board.legal_moves:
            raise ValueError(f"{player.name} played illegal {move} in {g.board.fen()}")
        return move, _restarts(player) - before
    except (EngineFailure, chess.engine.EngineError) as e:
        log.warning("game %s: %s failed: %s", g.spec.id, player.name, e)
        return None, _restarts(player) - before
    finally:
        if g.board.turn not in g.players:
            pools.release(label, player)


class _Rows:
    """The model rows of one batch that share a policy and a guidance weight: one Session."""

    def __init__(self, policy: ModelPolicy, guidance: float) -> None:
        self.policy, self.guidance = policy, guidance
        self.prompts: list[list[int]] = []
        self.row_game: list[int] = []  # session row -> index into the batch's games
        self.session: Session | None = None
        self.logits: torch.Tensor | None = None  # this ply's move logits, one row per session row

    def add(self, prompt: list[int], game: int) -> int:
        self.prompts.append(prompt)
        self.row_game.append(game)
        return len(self.prompts) - 1

    def start(self) -> None:
        self.session = Session(self.policy, self.prompts, self.guidance)


def _group(seat: Prompted) -> tuple[int, float]:
    """Model seats of one policy object and one guidance weight share a Session."""
    return id(seat.policy), seat.sampling.guidance


def _play_batch(games: list[_Game], models: Mapping[str, Prompted], pools: _Pools,
                executor: concurrent.futures.Executor | None, max_plies: int,
                on_done: Callable[[_Game], None]) -> None:
    """Play a batch of games with at least one model seat each, in lockstep.

    The model seats are grouped by (policy, guidance weight), one KV-cache Session per group, so
    two checkpoints, or a guided and an unguided prompt, can meet inside one batch; each ply costs
    one forward step per group for all of its games.
    """
    groups: dict[tuple[int, float], _Rows] = {}
    for gi, g in enumerate(games):
        for color in (chess.WHITE, chess.BLACK):
            label = _label(g.spec, color)
            seed = _mix(g.spec.seed, g.spec.id, "white" if color else "black")
            if (seat := models.get(label)) is not None:
                key = _group(seat)
                rows = groups.setdefault(key, _Rows(seat.policy, seat.sampling.guidance))
                prompt = seat.prompt(color)
                other = g.rows.get(not color)
                if (other is not None and models.get(_label(g.spec, not color)) is seat
                        and rows.prompts[other[1]] == prompt):
                    g.rows[color] = other  # self-play under one prompt: one row serves both sides
                else:
                    g.rows[color] = (key, rows.add(prompt, gi))
                g.gens[color] = torch.Generator().manual_seed(seed)
                g.stats[color] = MoveStats()
            elif not pools.seats[label].pooled:
                g.players[color] = _start(pools.seats[label].make(seed))
    for rows in groups.values():
        rows.start()
    while True:
        if all(g.done for g in games):
            return
        for rows in groups.values():
            assert rows.session is not None
            rows.logits = rows.session.logits  # (rows, 1968)
        moves: dict[int, chess.Move | None] = {}  # game index -> move this ply
        tasks: list[tuple[int, str]] = []
        for gi, g in enumerate(games):
            if g.done:
                continue
            color = g.board.turn
            ply = g.board.ply()
            label = _label(g.spec, color)
            seat = models.get(label)
            if ply < len(g.opening):
                moves[gi] = g.opening[ply]
            elif seat is not None:
                key, r = g.rows[color]
                logits = groups[key].logits
                assert logits is not None
                before = g.stats[color].illegal
                moves[gi] = seat.policy.choose(logits[r : r + 1], [g.board], seat.sampling, g.gens[color],
                                               g.stats[color])[0]
                if g.first_illegal_ply is None and g.stats[color].illegal > before:
                    g.first_illegal_ply = ply  # replaced and played on; strict rules would end the game here
            else:
                tasks.append((gi, label))
        if executor is not None and len(tasks) > 1:
            results = list(executor.map(lambda t: _opponent_move(pools, games[t[0]], t[1]), tasks))
        else:
            results = [_opponent_move(pools, games[gi], label) for gi, label in tasks]
        for (gi, _), (move, restarts) in zip(tasks, results):
            games[gi].restarts += restarts
            moves[gi] = move
            if move is None:
                games[gi].result, games[gi].termination = ABORTED, "engine_failure"
        row_moves: dict[tuple[int, float], list[chess.Move | None]] = {
            key: [None] * len(rows.row_game) for key, rows in groups.items()}
        for gi, g in enumerate(games):
            move = moves.get(gi)
            if move is None:
                if g.done and gi in moves:  # aborted this ply
                    on_done(g)
                continue
            g.board.push(move)
            for key, r in set(g.rows.values()):
                row_moves[key][r] = move
            _check_game_end(g, max_plies)
            if g.done:
                on_done(g)
        for g in games:
            if g.done and g.players:
                for p in g.players.values():
                    _stop(p)
                g.players.clear()
        if all(g.done for g in games):
            return
        for key, rows in list(groups.items()):
            assert rows.session is not None
            live_rows = [r for r, gi in enumerate(rows.row_game) if not games[gi].done]
            if not live_rows:  # every game of this group is over
                del groups[key]
                continue
            rows.session.push(row_moves[key])
            # Drop finished games' rows once enough have ended: every later step then costs less.
            if len(live_rows) <= 0.75 * len(rows.row_game):
                rows.session.select(live_rows)
                remap = {old: new for new, old in enumerate(live_rows)}
                rows.row_game = [rows.row_game[r] for r in live_rows]
                rows.prompts = [rows.prompts[r] for r in live_rows]
                for g in games:
                    if not g.done:
                        g.rows = {c: (k, remap[r]) if k == key else (k, r) for c, (k, r) in g.rows.items()}


def run_games(specs: Sequence[GameSpec], seats: Mapping[str, Seat], out: Path | None = None, *,
              meta: Mapping[str, Any] | None = None, batch_size: int = 64, workers: int = 1,
              max_plies: int = 400, progress: bool = False, referee: Referee | None = None) -> list[GameRecord]:
    """Play every spec not already decided in `out`; return the records of all specs, in spec order.

    Games with a model seat go through :func:`_play_batch` (batched, cached model; any mix of
    policies and guidance weights, one Session per group); games between two PlayerSeats through
    :func:`play_game`. Each finished game is appended to `out` at once. Batches are formed in spec order.
    With a started `referee`, every game is judged (:mod:`chessdt.stockfish.referee`); a game whose
    referee failed is recorded as aborted and played again by the next run.
    """
    models, players = split_seats(seats)
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("game ids must be unique")
    for s in specs:
        for label in (s.white, s.black):
            if label not in seats:
                raise ValueError(f"game {s.id}: no seat {label!r}")
    weights = weights_of(specs, seats)
    game_log = GameLog(out, {**(meta or {}), **({WEIGHTS: weights} if weights else {})}) if out is not None else None
    # a game aborted by an engine failure is played again: a rerun (with a working engine) retries it
    done: dict[str, GameRecord] = ({i: r for i, r in game_log.records.items() if r.decided}
                                   if game_log is not None else {})
    todo = [s for s in specs if s.id not in done]
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), unit="game", disable=not progress,
               desc="games", leave=False)

    def finish(record: GameRecord) -> None:
        done[record.id] = record
        if game_log is not None:
            game_log.add(record)
        bar.update(1)

    pools = _Pools(players, workers)
    pools.prepare(sorted({x for s in todo for x in (s.white, s.black)}))
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        batched: list[GameSpec] = []
        plain: list[GameSpec] = []
        for s in todo:
            (batched if s.white in models or s.black in models else plain).append(s)
        for i in range(0, len(batched), batch_size):
            games = [_Game(spec=s, opening=tuple(chess.Move.from_uci(m) for m in s.opening),
                           judge=Judge(referee, s.seed, s.id) if referee is not None else None)
                     for s in batched[i : i + batch_size]]
            _play_batch(games, models, pools, executor, max_plies, lambda g: finish(_record(g, models)))
        for s in plain:
            finish(_play_plain(s, pools, max_plies, referee))
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
        pools.close()
        bar.close()
    return [done[i] for i in ids]


def weights_of(specs: Sequence[GameSpec], seats: Mapping[str, Seat]) -> dict[str, str]:
    """{seat label: weights_id} of the model seats these games use: the key a game log resumes on."""
    used = {x for s in specs for x in (s.white, s.black)}
    return {label: model.policy.weights_id for label, model in sorted(split_seats(seats)[0].items()) if label in used}


def _play_plain(spec: GameSpec, pools: _Pools, max_plies: int,
                referee: Referee | None = None) -> GameRecord:
    """A game between two PlayerSeats (e.g. ladder calibration: one Stockfish rung against another)."""
    start = time.monotonic()
    white = pools.acquire(spec.white, _mix(spec.seed, spec.id, "white"))
    same = spec.white == spec.black and pools.seats[spec.white].pooled
    black = white if same else pools.acquire(spec.black, _mix(spec.seed, spec.id, "black"))
    players = {chess.WHITE: white, chess.BLACK: black}
    before = _restarts(white) + (0 if same else _restarts(black))
    judge = Judge(referee, spec.seed, spec.id) if referee is not None else None
    try:
        game = play_game(_Named(players[chess.WHITE], spec.white), _Named(players[chess.BLACK], spec.black),
                         opening=[chess.Move.from_uci(m) for m in spec.opening], max_plies=max_plies,
                         headers={"GameId": spec.id}, judge=judge)
    finally:
        pools.release(spec.white, white)
        if not same:
            pools.release(spec.black, black)
    board = game.end().board()
    return GameRecord(id=spec.id, white=spec.white, black=spec.black, result=game.headers["Result"],
                      termination=game.headers["Termination"], plies=board.ply(),
                      model_moves={"white": 0, "black": 0}, illegal={"white": 0, "black": 0}, masked=False,
                      engine_restarts=_restarts(white) + (0 if same else _restarts(black)) - before,
                      seconds=round(time.monotonic() - start, 3), pgn=str(game), tags=dict(spec.tags),
                      **_judged(judge))


class _Named(Resourceless):
    """A Player shown under a seat label (so PGN names match the game table); the pool owns its lifetime."""

    def __init__(self, player: Player, name: str) -> None:
        self.player = player
        self.name = name

    def play(self, board: chess.Board) -> chess.Move:
        return self.player.play(board)

