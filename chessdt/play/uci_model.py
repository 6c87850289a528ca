"""The model's side of the UCI engine: its players, in a child process (or a thread), behind a pipe.

:mod:`chessdt.play.uci` speaks the protocol and keeps the clock; everything that runs torch lives
here, in :class:`ModelSide`. :class:`ModelWorker` runs one ModelSide in a child process (what
``chessdt uci`` does: the clock and the protocol never wait for the interpreter lock of a
forward pass, and the model's computation is never interrupted by them) or on a thread of this
process (tests, and callers that hold a model built in memory). Both talk over the same
:func:`multiprocessing.Pipe`: requests (:class:`Think`, :class:`Follow`, :class:`Configure`) in
order, replies (:class:`Ready`, :class:`Moved`, :class:`Pondered`) in order. A child that dies is
noticed at once (the pipe closes) and reported through ``on_exit``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

import chess
import torch

from chessdt.play.players import ModelPlayer
from chessdt.play.policy import Prompted, Sampling
from chessdt.rules import score_cp, wdl_score

log = logging.getLogger(__name__)


def wdl_permille(wdl: tuple[float, float, float]) -> tuple[int, int, int]:
    """Win/draw/loss probabilities as UCI's permille, summing to 1000 (the draw takes the rounding).

    >>> wdl_permille((0.5004, 0.3, 0.1996))
    (500, 300, 200)
    """
    w = min(1000, max(0, round(1000 * wdl[0])))
    loss = min(1000 - w, max(0, round(1000 * wdl[2])))
    return w, 1000 - w - loss, loss


def score_words(wdl: tuple[float, float, float], show_wdl: bool) -> str:
    """The `score` part of an info line: 'score cp X wdl W D L' (or without wdl).

    >>> score_words((0.6, 0.3, 0.1), True)
    'score cp 298 wdl 600 300 100'
    """
    w, d, loss = wdl_permille(wdl)
    cp = score_cp(wdl_score((w / 1000, d / 1000, loss / 1000)))
    return f"score cp {cp}" + (f" wdl {w} {d} {loss}" if show_wdl else "")


# -- the messages ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Think:
    """Choose a move for `board` (then predict the reply when `ponder`)."""

    search: int  # the search's number (replies carry it; a late reply to an answered search is dropped)
    board: chess.Board
    searchmoves: tuple[chess.Move, ...] = ()
    ponder: bool = False
    show_wdl: bool = True


@dataclass(frozen=True)
class Follow:
    """Feed the model the game up to `board` (the move just played), off the clock."""

    board: chess.Board


@dataclass(frozen=True)
class Configure:
    """New prompt, sampling, seed or torch threads (the engine's options)."""

    rating: int | None
    opponent_rating: int | None
    sampling: Sampling
    seed: int
    reseed: bool  # restart the sampling's random stream from `seed` (the Seed option was set)
    threads: int


@dataclass(frozen=True)
class Ping:
    """Answer Pong(number) once every request before this one is done (the engine's isready)."""

    number: int


@dataclass(frozen=True)
class Ready:
    """The model is loaded and warm (its first forward passes, their one-off costs, are paid)."""


@dataclass(frozen=True)
class Pong:
    """Every request before Ping(number) is done."""

    number: int


@dataclass(frozen=True)
class Moved:
    """The model's move for search `search`, the info lines to send before its bestmove."""

    search: int
    move: chess.Move
    info: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Pondered:
    """The model's most likely reply to its move in search `search` (None: the game ends)."""

    search: int
    reply: chess.Move | None


Request = Union[Think, Follow, Configure, Ping]
Reply = Union[Ready, Moved, Pondered, Pong]


# -- the model's side ------------------------------------------------------------------------
def opponent(model: Prompted) -> Prompted:
    """The model prompted as its opponent (ratings swapped, argmax), to predict the reply to ponder on."""
    opp = model.rating if model.opponent_rating is None else model.opponent_rating
    return dataclasses.replace(model, rating=opp, opponent_rating=model.rating,
                               sampling=dataclasses.replace(model.sampling, temperature=0.0))


def _prob(probs: torch.Tensor, token: int) -> float:
    """A move's probability, with a non-finite one (diverged weights) ranked below every other."""
    x = float(probs[token])
    return x if math.isfinite(x) else -1.0


class ModelSide:
    """The model's players and what they do for the engine: one move, the predicted reply, follow."""

    def __init__(self, model: Prompted, seed: int, threads: int = 1) -> None:
        self.model = model
        self.policy = model.policy
        self.threads = threads
        self.player = ModelPlayer(model, seed=seed)
        self.ponderer = ModelPlayer(opponent(model))  # predicts the reply; argmax, so unseeded

    def warm_up(self) -> None:
        """Set the torch threads and run the first forward passes (their one-off costs)."""
        torch.set_num_threads(self.threads)
        self.player.distribution(chess.Board(), temperature=1.0)
        self.ponderer.distribution(chess.Board(), temperature=1.0)

    def configure(self, c: Configure) -> None:
        """Apply the engine's options; the players are rebuilt, the random stream kept unless reseeded."""
        self.threads = c.threads
        torch.set_num_threads(c.threads)
        self.model = dataclasses.replace(self.model, rating=c.rating, opponent_rating=c.opponent_rating,
                                         sampling=c.sampling)
        if self.player.prompted != self.model or c.reseed:
            old, self.player = self.player, ModelPlayer(self.model, seed=c.seed)
            self.player.stats = old.stats  # illegal-move counts run over the whole session
            if not c.reseed:
                self.player.generator = old.generator
            self.ponderer = ModelPlayer(opponent(self.model))

    def think(self, t: Think) -> Moved:
        """The model's move and its info lines; the most likely legal move where sampling fails."""
        started = time.perf_counter()
        board = t.board
        vocab = self.policy.vocab
        before = self.player.stats.illegal
        probs = self.player.distribution(board, temperature=1.0)

        def p(m: chess.Move) -> float:
            return _prob(probs, vocab.encode_move(m))

        info: list[str] = []
        try:
            move = self.player.play(board)
        except RuntimeError as e:  # e.g. non-finite probabilities from a diverged checkpoint
            move = max(board.legal_moves, key=p)
            info.append(f"info string sampling failed ({' '.join(str(e).split())[:80]}); "
                        f"played the most likely legal move")
        if t.searchmoves and move not in t.searchmoves:
            move = max(t.searchmoves, key=p)
        top = sorted(board.legal_moves, key=lambda m: -p(m))[:3]
        info.append(f"info string model top at rating {self.model.rating}: "
                    + ", ".join(f"{m.uci()} {p(m):.3f}" for m in top))
        if self.player.stats.illegal > before:
            info.append(f"info string sampled move was illegal; played the most likely legal move "
                        f"({self.player.stats.illegal} of {self.player.stats.moves} so far)")
        wdl = self.player.wdl(board)  # the position searched, from the side to move (None: no value head)
        score = "" if wdl is None else score_words(wdl, t.show_wdl) + " "
        ms = int(1000 * (time.perf_counter() - started))
        # Last, so a GUI that keeps the latest info string shows the chosen move's probability.
        info.append(f"info depth 1 seldepth 1 {score}time {ms} nodes 1 pv {move.uci()} string p={p(move):.4f}")
        return Moved(t.search, move, info)

    def predict_reply(self, board: chess.Board, move: chess.Move) -> chess.Move | None:
        """The model's most likely legal reply to `move` (None when the game ends with it)."""
        after = board.copy()
        after.push(move)
        if not any(after.legal_moves):
            return None
        probs = self.ponderer.distribution(after, temperature=1.0)
        return max(after.legal_moves, key=lambda m: _prob(probs, self.policy.vocab.encode_move(m)))

    def follow(self, board: chess.Board) -> None:
        self.player.follow(board)


def serve_model(conn: multiprocessing.connection.Connection, side: ModelSide, seed: int) -> None:
    """The worker's loop: warm up, then answer requests from `conn` in order until it closes (or None comes)."""
    side.warm_up()
    conn.send(Ready())
    rng = random.Random(seed)  # the move of a model that fails
    pending: collections.deque[Request | None] = collections.deque()
    while True:
        try:
            if not pending:
                pending.append(conn.recv())
            while conn.poll():
                pending.append(conn.recv())
        except (EOFError, OSError):
            return
        request = pending.popleft()
        if request is None:
            return
        if isinstance(request, Think) and any(isinstance(r, (Think, Follow)) for r in pending):
            # Already answered (the engine sends a Follow or the next Think only after a bestmove): the
            # fallback went out while the model was behind; thinking now would only make the next move late.
            continue
        if isinstance(request, Think):
            try:
                moved = side.think(request)
            except Exception as e:  # a failed forward pass still owes the GUI a move
                log.debug("search failed", exc_info=True)
                move = rng.choice(list(request.board.legal_moves))
                moved = Moved(request.search, move, [f"info string the model failed ({' '.join(str(e).split())[:80]}); "
                                                     "played a random legal move"])
            conn.send(moved)
            if request.ponder:
                try:
                    reply = side.predict_reply(request.board, moved.move)
                except Exception:
                    log.debug("ponder failed", exc_info=True)
                    reply = None
                conn.send(Pondered(request.search, reply))
        elif isinstance(request, Follow):
            try:
                side.follow(request.board)
            except Exception:
                log.debug("follow failed", exc_info=True)
        elif isinstance(request, Configure):
            side.configure(request)
        elif isinstance(request, Ping):
            conn.send(Pong(request.number))


def _serve_in_child(conn: multiprocessing.connection.Connection, model: Prompted, seed: int, threads: int) -> None:
    """The child process's main: the model's side, served until the parent closes the pipe."""
    # stdout is the GUI's protocol stream, the parent's alone: anything torch or Python prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's to handle
    serve_model(conn, ModelSide(model, seed, threads), seed)


class ModelWorker:
    """One ModelSide in a child process (`process=True`) or a thread, and the thread that reads its replies.

    ``on_reply`` gets every reply in order, on the reader thread; ``on_exit`` gets the child's exit
    code (None for a thread) once, when the worker ends without being closed.
    """

    def __init__(self, model: Prompted, seed: int, threads: int, *, process: bool,
                 on_reply: Callable[[Reply], None], on_exit: Callable[[int | None], None]) -> None:
        self.process = process
        self.on_reply = on_reply
        self.on_exit = on_exit
        self.ready = threading.Event()
        self.ended = threading.Event()
        self._closing = False
        self._send_lock = threading.Lock()
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.thread: threading.Thread | None = None
        self.side: ModelSide | None = None  # the model's side when it runs on a thread here (tests look at it)
        self._pings = 0
        self._pongs: dict[int, threading.Event] = {}
        if process:
            # spawn, not fork: a forked child inherits torch's thread pools in whatever state they are
            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_serve_in_child, args=(child, model, seed, threads), name="chessdt-model",
                                    daemon=True)
            self.proc.start()
            child.close()  # ours closed: the child's end of the pipe lives in the child only, so its death is EOF
        else:
            self.conn, child = multiprocessing.Pipe()
            self.side = ModelSide(model, seed, threads)
            self.thread = threading.Thread(target=self._run_thread, args=(child, self.side, seed),
                                           name="chessdt-model", daemon=True)
            self.thread.start()
        self.reader = threading.Thread(target=self._read, name="chessdt-model-reader", daemon=True)
        self.reader.start()

    @staticmethod
    def _run_thread(conn: multiprocessing.connection.Connection, side: ModelSide, seed: int) -> None:
        try:
            serve_model(conn, side, seed)
        except Exception:
            log.debug("model thread failed", exc_info=True)
        finally:
            conn.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return not self.ended.is_set()

    def send(self, request: Request) -> bool:
        """Queue a request; False when the worker has ended."""
        if self.ended.is_set():
            return False
        try:
            with self._send_lock:
                self.conn.send(request)
            return True
        except (OSError, ValueError):  # the pipe is closed: the reader reports the death
            return False

    def _read(self) -> None:
        while True:
            try:
                reply = self.conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(reply, Ready):
                self.ready.set()
            elif isinstance(reply, Pong):
                event = self._pongs.pop(reply.number, None)
                if event is not None:
                    event.set()
            self.on_reply(reply)
        code: int | None = None
        if self.proc is not None:
            self.proc.join(5)
            code = self.proc.exitcode
        self.ended.set()
        if not self._closing:
            self.on_exit(code)

    def sync(self, timeout: float) -> bool:
        """Wait until the model has done every request sent so far; False if it ended or took too long."""
        with self._send_lock:
            self._pings += 1
            number = self._pings
        done = self._pongs[number] = threading.Event()
        if not self.send(Ping(number)):
            return False
        deadline = time.monotonic() + timeout
        while not done.wait(0.05):
            if self.ended.is_set() or time.monotonic() > deadline:
                self._pongs.pop(number, None)
                return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop after the requests already queued, and wait for it (a process must
        not exit while a thread of it runs torch)."""
        self._closing = True
        try:
            with self._send_lock:
                self.conn.send(None)
        except (OSError, ValueError):
            pass
        if self.thread is not None:
            self.thread.join(timeout)
        if self.proc is not None:
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
        self.reader.join(timeout)
        self.conn.close()
