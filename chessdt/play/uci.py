"""UCI engine front end: the model as an engine for cutechess-cli, Arena, lichess-bot and friends.

:class:`UciEngine` handles one protocol line at a time and writes its answers to a stream
(flushed after every line, one writer at a time); :func:`serve` runs it over stdin/stdout until
``quit`` or end of input. Anything malformed is answered with an ``info string`` saying why, never
a crash.

One forward pass is the whole search. The model runs in a child process
(:class:`~chessdt.play.uci_model.ModelWorker`; a thread for engines built in memory), so the
protocol and the clock here never wait for the interpreter lock of a forward pass, and the
forward pass is never interrupted by them. ``go`` first picks a fallback move in well under a
millisecond (:class:`~chessdt.play.players.GreedyPlayer`: the most material at one ply), hands
the position to the model and arms a deadline from ``movetime`` or the clock
(``wtime/btime/winc/binc/movestogo``) less ``Move Overhead`` (at most half of the move's time:
:func:`~chessdt.play.uci_time.kept_back_ms`, with a warning when the setting asks for more) and
less a margin for the scheduler (the worst lateness of the recent deadlines,
:meth:`UciEngine.deadline_margin`); ``stop`` or the deadline answer at once: with the model's move
when it has come, else with the fallback. Every fallback is announced (``info string fallback N of
M moves: ...``) and counted (:attr:`UciEngine.fallbacks`, logged at exit). Every ``go`` ends in
exactly one ``bestmove``: a legal move, or ``0000`` when the position has none or no valid position
was set. ``go infinite`` and ``go ponder`` hold their ``bestmove`` until ``stop`` or ``ponderhit``.
The model loads and runs its first forward pass while the GUI's handshake goes on, and is ready
before the first ``readyok``. A model process that dies is reported in one line, its search
answered with the fallback, and it is started again (up to :data:`MAX_RESTARTS` times).

A checkpoint with a value head (``model.value_head``) also reports a score for the position
searched, from the side to move: ``info depth 1 score cp X wdl W D L`` (W/D/L in permille, as the
prompted model predicts the game's result; cp from the expected score W + D/2 on Lichess's
win-chance curve, :func:`chessdt.rules.score_cp`); ``UCI_ShowWDL`` off sends the cp score alone.
Without a value head no score is sent.

Positions from ``position fen`` are the model's starting board: it sees that position, then the
moves that follow it, but none of the game before it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import chess

from chessdt.play.players import GreedyPlayer
from chessdt.play.policy import ModelPolicy, Prompted
from chessdt.play.uci_model import Configure, Follow, ModelSide, ModelWorker, Moved, Pondered, Reply, Think
from chessdt.play.uci_options import DEFAULT_RATING, OPTIONS, Value, set_option
from chessdt.play.uci_time import (DEFAULT_MOVE_OVERHEAD, LATENESS_WINDOW, OVERHEAD_SHARE, Go, budget_ms,
                                   deadline_margin, kept_back_ms, limit_ms, parse_go)

log = logging.getLogger(__name__)

MAX_RESTARTS = 3  # a model process that dies is started again this many times, then the fallback plays on
READY_TIMEOUT_S = 300.0  # isready waits at most this long for the model (a big checkpoint on a slow disk)


def checkpoint_step(path: str | Path) -> int | None:
    """The training step of the checkpoint `path` resolves to (its meta.json), None if unreadable."""
    from chessdt.checkpoint import resolve_checkpoint

    try:
        step = json.loads((resolve_checkpoint(path) / "meta.json").read_text(encoding="utf-8"))["step"]
        return step if isinstance(step, int) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def engine_name(policy: ModelPolicy, step: int | None = None) -> str:
    """`id name`: the run and checkpoint, its step, whether it has a value head, and its weights.

    Two checkpoints of one run (`quickstart@best` moves with training) never share a name.
    """
    parts = ([f"step {step}"] if step is not None else []) + [
        "value head" if policy.has_value else "no value head", f"weights {policy.weights_id[:8]}"]
    return f"chessdt {policy.model_id} ({', '.join(parts)})"


@dataclass
class Answer:
    """What a search found: the move, the model's predicted reply, the info lines to send first."""

    move: chess.Move
    ponder: chess.Move | None = None
    info: list[str] = dataclasses.field(default_factory=list)
    model: bool = True  # the model's own move (False: the fallback, or a random move)


class Search:
    """One `go`: its position and deadline, what the model sent so far, whether it was answered."""

    def __init__(self, number: int, board: chess.Board, go: Go, budget_ms: float | None, ponder: bool) -> None:
        self.number = number
        self.board = board
        self.go = go
        self.budget_ms = budget_ms
        self.hold = go.hold
        self.ponder = ponder  # the model also predicts the reply (Ponder on)
        self.started = time.perf_counter()
        self.answer: Answer | None = None  # the model's move, once it has one (ponder filled later)
        self.finished = threading.Event()  # nothing more is coming from the model for this search
        self.sent = threading.Event()  # its bestmove line went out
        self.timer: threading.Timer | None = None
        self.target: float | None = None  # perf_counter time the deadline timer was set for
        self.fallback: chess.Move | None = None  # the quick move, when the model is late
        self.played: chess.Move | None = None  # the move its bestmove line gave


class UciEngine:
    """The UCI protocol around a Prompted model; feed it lines with :meth:`handle`.

    ``process=True`` runs the model in a child process (``chessdt uci``); False, on a thread of this
    process (tests; the model's side is then :attr:`side`).
    """

    def __init__(self, model: Prompted, out: TextIO, seed: int = 0, *, process: bool = False,
                 name: str | None = None) -> None:
        self.model = model
        self.policy = model.policy
        self.name = name or engine_name(model.policy)
        self.seed = seed  # seeds the move sampling once (a new game continues the same random stream)
        self.out = out
        self.process = process
        self.board: chess.Board | None = chess.Board()  # None after a rejected `position`
        self.rng = random.Random(seed)  # the emergency move when there is no fallback
        self.fallback = GreedyPlayer(seed)  # the move when the model is late
        self.lateness: collections.deque[float] = collections.deque(maxlen=LATENESS_WINDOW)  # ms, timed answers
        self.rating = model.rating  # the Rating option; the prompted one unless UCI_LimitStrength
        self.uci_elo = model.rating if model.rating is not None else DEFAULT_RATING
        self.limit_strength = False
        self.ponder = False  # the Ponder option: GUIs set it when they will ask `go ponder` on our reply
        self.threads = 1
        self.show_wdl = True  # UCI_ShowWDL (a value head's score carries its W/D/L)
        self.move_overhead = DEFAULT_MOVE_OVERHEAD
        self.overhead_warned = False  # the capped Move Overhead was announced (once per setting)
        self.search: Search | None = None
        self.searches = 0
        self.moves = 0  # bestmoves with a move
        self.fallbacks = 0  # of them, moves that were not the model's own (late, stopped, model gone)
        self.restarts = 0
        self.worker: ModelWorker | None = None
        self._answer_lock = threading.RLock()  # one bestmove per search, lines never interleaved

    @property
    def side(self) -> ModelSide | None:
        """The model's side (players) of an in-process engine, for tests; None in a child process."""
        return self.worker.side if self.worker is not None else None

    # -- plumbing ----------------------------------------------------------------------------
    def send(self, line: str) -> None:
        with self._answer_lock:
            self.out.write(line + "\n")
            self.out.flush()

    def explain(self, text: str) -> None:
        self.send(f"info string {text}")

    def handle(self, line: str) -> bool:
        """Act on one line from the GUI; False once the GUI said quit."""
        words = line.split()
        if not words:
            return True
        cmd, args = words[0], words[1:]
        try:
            if cmd == "quit":
                return False
            handler = getattr(self, f"_cmd_{cmd}", None)
            if handler is None:
                self.explain(f"unknown command {cmd!r} ignored")
            else:
                handler(args)
        except Exception as e:  # the protocol promises no crash: explain, log, carry on
            log.debug("error handling %r", line, exc_info=True)
            self.explain(f"error in {line.strip()!r}: {e}")
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the running search (unless held for stop/ponderhit) has sent its bestmove."""
        s = self.search
        if s is None or s.hold:
            return True
        return s.sent.wait(timeout)

    def start(self) -> None:
        """Start the model (loading, then its first forward passes) while the GUI's handshake goes on."""
        if self.worker is None:
            self.worker = ModelWorker(self.model, self.seed, self.threads, process=self.process,
                                      on_reply=self._on_reply, on_exit=self._on_exit)

    def ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """Wait until the model has done everything asked of it so far (False: it is gone or too slow)."""
        self.start()
        worker = self.worker
        return worker is not None and worker.sync(timeout)

    def close(self) -> None:
        """Stop the model and wait for it: a process must not exit under torch's feet."""
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.close()
        if self.moves:
            log.info("%d of %d moves were the fallback, not the model's own", self.fallbacks, self.moves)

    def _configure(self) -> None:
        """Send the options the model needs to the model."""
        self.start()
        assert self.worker is not None
        self.worker.send(Configure(rating=self.model.rating, opponent_rating=self.model.opponent_rating,
                                   sampling=self.model.sampling, seed=self.seed, reseed=False, threads=self.threads))

    # -- commands ----------------------------------------------------------------------------
    def _cmd_uci(self, args: list[str]) -> None:
        self.send(f"id name {self.name}")
        self.send("id author chessdt")
        for name, (_, _, spec) in OPTIONS.items():
            self.send(f"option name {name} {spec}")
        self.send("uciok")

    def _cmd_isready(self, args: list[str]) -> None:
        if not self.ready():
            self.explain("the model is not ready (its process is gone); moves will be the quick fallback")
        self.send("readyok")

    def _cmd_debug(self, args: list[str]) -> None:
        pass

    def _cmd_register(self, args: list[str]) -> None:
        pass

    def _cmd_ucinewgame(self, args: list[str]) -> None:
        # The model notices the new game itself; keeping its player keeps its random stream going, so
        # a fixed Seed does not replay the same game every game of a match.
        self.stop_search()
        self.board = chess.Board()

    def _cmd_setoption(self, args: list[str]) -> None:
        if not args or args[0] != "name":
            self.explain("setoption needs: setoption name <name> value <value>")
            return
        rest = args[1:]
        split = rest.index("value") if "value" in rest else len(rest)
        name, value = " ".join(rest[:split]), " ".join(rest[split + 1 :])
        match = next((k for k in OPTIONS if k.lower() == name.lower()), None)
        if match is None:
            self.explain(f"unknown option {name!r} ignored (options: {', '.join(OPTIONS)})")
            return
        field, parse, _ = OPTIONS[match]
        try:
            parsed = parse(value)
        except ValueError as e:
            reason = str(e) if str(e).startswith("must") else "not a number"
            self.explain(f"option {match} value {value!r} ignored: {reason}")
            return
        self.stop_search()  # the protocol forbids setoption while searching; be safe anyway
        self._apply(field, parsed)

    def _apply(self, field: str, value: Value) -> None:
        """Set one parsed option; tell the model when its prompt, sampling, seed or threads changed."""
        if field in ("hash", "syzygy_path"):
            return  # no search tree to size, no tablebase to probe (uci_options.NO_OPS)
        if field == "move_overhead":
            self.move_overhead = int(value)
            self.overhead_warned = False
            return
        if field == "ponder":
            self.ponder = bool(value)  # then bestmove comes with the predicted reply (one more step)
            return
        if field == "show_wdl":
            self.show_wdl = bool(value)  # sent with each search; nothing to show without a value head
            return
        reseed = field == "seed"
        if field == "threads":
            self.threads = int(value)
        elif field == "rating":
            self.rating = int(value)
        elif field == "uci_elo":
            self.uci_elo = int(value)
        elif field == "limit_strength":
            self.limit_strength = bool(value)
        elif field == "seed":
            self.seed = int(value)
            self.rng = random.Random(self.seed)
            self.fallback = GreedyPlayer(self.seed)
        else:
            self.model = set_option(self.model, field, float(value))
        rating = self.uci_elo if self.limit_strength else self.rating
        self.model = dataclasses.replace(self.model, rating=rating)
        self.start()
        assert self.worker is not None
        self.worker.send(Configure(rating=self.model.rating, opponent_rating=self.model.opponent_rating,
                                   sampling=self.model.sampling, seed=self.seed, reseed=reseed, threads=self.threads))

    def _cmd_position(self, args: list[str]) -> None:
        self.stop_search()
        self.board = None  # until this command is found valid: never answer for an older position
        if not args or args[0] not in ("startpos", "fen"):
            self.explain("position needs startpos or fen <FEN>, then optionally moves ...; no position set")
            return
        split = args.index("moves") if "moves" in args else len(args)
        if args[0] == "startpos":
            if split != 1:
                self.explain(f"unexpected {' '.join(args[1:split])!r} after startpos ignored")
            board = chess.Board()
        else:
            fen = " ".join(args[1:split])
            try:
                board = chess.Board(fen)
            except ValueError as e:
                self.explain(f"bad FEN {fen!r} ({e}); no position set")
                return
            status = board.status()
            if status != chess.STATUS_VALID:
                self.explain(f"impossible position {fen!r} ({status!r}); no position set")
                return
        for text in args[split + 1 :]:
            try:
                move = board.parse_uci(text)
            except ValueError:
                move = chess.Move.null()
            if not move:
                self.explain(f"move {text!r} is not legal in {board.fen()}; no position set")
                return
            board.push(move)
        self.board = board

    def budget(self, go: Go, turn: chess.Color) -> float | None:
        """This move's budget (uci_time.budget_ms), warning once per setting when Move Overhead is capped."""
        limit = limit_ms(go, turn)
        if limit is None:
            return None
        if self.move_overhead > OVERHEAD_SHARE * limit and not self.overhead_warned:
            self.overhead_warned = True
            self.explain(f"Move Overhead {self.move_overhead} ms would leave the model no time of this move's "
                         f"{limit:.0f} ms; keeping back {kept_back_ms(limit, self.move_overhead):.0f} ms (at most "
                         f"{OVERHEAD_SHARE:.0%} of a move's time) while the moves are this short")
        return budget_ms(go, turn, self.move_overhead)

    def _cmd_go(self, args: list[str]) -> None:
        self.stop_search()  # a go while searching: the GUI broke the protocol; answer the old one first
        go, complaints = parse_go(args, self.board)
        for text in complaints:
            self.explain(text)
        if self.board is None:
            self.explain("no valid position was set (the last position command was rejected)")
            self.send("bestmove 0000")
            return
        board = self.board.copy()
        self.searches += 1
        search = Search(self.searches, board, go, None if go.hold else self.budget(go, board.turn), self.ponder)
        self.search = search
        if not any(board.legal_moves):
            search.answer = Answer(chess.Move.null(), info=["info string no legal moves: the game is over"])
            search.finished.set()
            if not search.hold:
                self.answer(search)
            return
        search.fallback = self.fallback.play(board)  # before the model runs: the deadline only writes
        self.start()
        worker = self.worker
        if worker is None or not worker.send(Think(search.number, board, go.searchmoves, self.ponder, self.show_wdl)):
            self._give_up(search, "the model process is not running")
            return
        self._arm(search)

    def deadline_margin(self, budget_ms: float, kept_back_ms: float = 0.0) -> float:
        """Milliseconds before the budget's end at which the deadline fires (uci_time.deadline_margin)."""
        return deadline_margin(self.lateness, budget_ms, kept_back_ms)

    def _arm(self, search: Search) -> None:
        """Answer the search when its budget (less the margin) runs out, whatever the model sent by then."""
        if search.budget_ms is None:
            return
        limit = limit_ms(search.go, search.board.turn)
        kept = 0.0 if limit is None else limit - search.budget_ms  # what Move Overhead kept back
        fire = (search.budget_ms - self.deadline_margin(search.budget_ms, kept)) / 1000
        search.target = search.started + fire
        left = fire - (time.perf_counter() - search.started)
        search.timer = threading.Timer(max(0.0, left), self.answer, args=(search, "time"))
        search.timer.daemon = True
        search.timer.start()

    def _cmd_stop(self, args: list[str]) -> None:
        self.stop_search()

    def _cmd_ponderhit(self, args: list[str]) -> None:
        s = self.search
        if s is None or s.sent.is_set():
            return
        # The ponder search becomes a normal one, on the clock of the `go ponder` command.
        s.hold = False
        s.started = time.perf_counter()
        s.budget_ms = self.budget(s.go, s.board.turn)
        if s.finished.is_set():
            self.answer(s)
        else:
            self._arm(s)

    def stop_search(self) -> None:
        """Answer the running search now (a stop, or a command that ends it)."""
        s = self.search
        if s is not None and not s.sent.is_set():
            self.answer(s, "stop")

    # -- what the model sends ----------------------------------------------------------------
    def _on_reply(self, reply: Reply) -> None:
        """A reply from the model (on the worker's reader thread): a move or a predicted reply."""
        if not isinstance(reply, (Moved, Pondered)):
            return
        with self._answer_lock:
            s = self.search
            if s is None or s.number != reply.search or s.sent.is_set() or s.finished.is_set():
                return  # an answered search (the fallback went out): the model's late move is dropped
            if isinstance(reply, Moved):
                s.answer = Answer(reply.move, info=list(reply.info))
                if s.ponder:
                    return  # the predicted reply follows
            elif s.answer is not None:
                s.answer.ponder = reply.reply
            s.finished.set()
            if not s.hold:
                self.answer(s)
            elif s.answer is not None:  # a held search shows its info now, as engines do while they search
                for line in s.answer.info:
                    self.send(line)
                s.answer.info = []

    def _on_exit(self, code: int | None) -> None:
        """The model's process died (on the reader thread): answer its search, start it again."""
        with self._answer_lock:
            again = self.restarts < MAX_RESTARTS
            what = (f"the model process died (exit code {code})" if code is not None else "the model stopped")
            what += "; starting it again" if again else f"; it died {MAX_RESTARTS + 1} times, not started again"
            self.worker = None
            if again:  # first, so that the move played is fed to the new one
                self.restarts += 1
                self._configure()
            s = self.search
            if s is not None and not s.sent.is_set():
                self._give_up(s, what)  # the one line says it
            else:
                self.explain(what)

    def _give_up(self, s: Search, why: str) -> None:
        """The model will not answer this search: answer it with the fallback (held: once released)."""
        with self._answer_lock:
            if s.sent.is_set() or s.finished.is_set():
                return
            s.answer = None
            s.finished.set()
            if s.hold:
                s.answer = self._fallback_answer(s, why)
            else:
                self.answer(s, why=why)

    # -- the move ----------------------------------------------------------------------------
    def _fallback_answer(self, search: Search, reason: str) -> Answer:
        """The quick fallback (or, without one, a random legal move), announced with the running count."""
        self.fallbacks += 1
        count = f"fallback {self.fallbacks} of {self.moves + 1} moves"
        if search.fallback is not None:
            return Answer(search.fallback, model=False,
                          info=[f"info string {count}: {reason}; "
                                "played the quick fallback move (most material at one ply)"])
        move = self.rng.choice(list(search.board.legal_moves))
        return Answer(move, model=False, info=[f"info string {count}: {reason}; played a random legal move"])

    def answer(self, search: Search, why: str | None = None) -> None:
        """Send the search's bestmove, once: the model's move if it has one, else the fallback."""
        with self._answer_lock:
            if search.sent.is_set():
                return
            if search.timer is not None:
                search.timer.cancel()
            ans = search.answer
            # A ponder search stopped before ponderhit: the GUI throws its bestmove away (the opponent
            # played something else), so it is neither a move nor a fallback.
            discarded = search.hold and search.go.ponder and why == "stop"
            if ans is None and discarded:
                ans = Answer(search.fallback or self.rng.choice(list(search.board.legal_moves)), model=False)
            elif ans is None:
                reason = {"time": "the time budget ran out before the model answered",
                          "stop": "stop came before the model answered"}.get(why or "", why or "no answer")
                ans = self._fallback_answer(search, reason)
            for line in ans.info:
                self.send(line)
            ponder = f" ponder {ans.ponder.uci()}" if ans.ponder is not None and search.finished.is_set() else ""
            self.send(f"bestmove {ans.move.uci() if ans.move else '0000'}{ponder}")
            if why == "time" and search.target is not None:
                self.lateness.append(1000 * (time.perf_counter() - search.target))
            search.played = ans.move
            search.sent.set()
            if ans.move and not discarded:
                self.moves += 1
                # Off the clock: feed the model the move played, so that the next go costs one step.
                after = search.board.copy()
                after.push(ans.move)
                if self.worker is not None:
                    self.worker.send(Follow(after))


def serve(model: Prompted, inp: TextIO, out: TextIO, seed: int = 0, *, process: bool = True,
          step: int | None = None) -> UciEngine:
    """Answer UCI lines from `inp` on `out` until quit or end of input; returns the engine.

    The model runs in a child process (`process`), started at once so that it loads during the
    GUI's handshake. At end of input a running search still sends its bestmove (``echo go | chessdt uci``
    works).
    """
    engine = UciEngine(model, out, seed, process=process, name=engine_name(model.policy, step))
    engine.start()
    try:
        for line in inp:
            if not engine.handle(line):
                return engine
        engine.wait()
    finally:
        engine.close()
    return engine
