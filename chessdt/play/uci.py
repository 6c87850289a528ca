"""UCI engine front end: the model as an engine for cutechess-cli, Arena, lichess-bot and friends.

:class:`UciEngine` handles one protocol line at a time and writes its answers to a stream
(flushed after every line, one writer at a time); :func:`serve` runs it over stdin/stdout until
``quit`` or end of input. Anything malformed is answered with an ``info string`` saying why, never
a crash.

One forward pass is the whole search. ``go`` first picks a fallback move in well under a
millisecond (:class:`~chessdt.play.players.GreedyPlayer`: the most material at one ply), then
hands the model to a worker thread and arms a deadline from ``movetime`` or the clock
(``wtime/btime/winc/binc/movestogo``) less ``Move Overhead`` and less a margin for the scheduler
(the worst lateness of the recent deadlines, :meth:`UciEngine.deadline_margin`: on a busy machine
the deadline thread waits for a core, and for the GIL held by the worker, before it can write);
``stop`` or the deadline answer at once: with the model's move when it is ready, else with the
fallback (said in an ``info string``). Every ``go`` ends in exactly one ``bestmove``: a
legal move, or ``0000`` when the position has none or no valid position was set. ``go infinite``
and ``go ponder`` hold their ``bestmove`` until ``stop`` or ``ponderhit``. The expensive part of
start-up (the first forward pass) starts on a thread at once and is done before the first
``readyok``; :func:`serve` returns only when no thread runs the model.

A checkpoint with a value head (``model.value_head``) also reports a score for the position
searched, from the side to move: ``info depth 1 score cp X wdl W D L`` (W/D/L in permille, as the
prompted model predicts the game's result; cp from the expected score W + D/2 on Lichess's
win-chance curve, :func:`chessdt.rules.score_cp`). Such an engine lists ``UCI_ShowWDL`` (default on;
off sends the cp score alone). Without a value head no score is sent, as before.

Positions from ``position fen`` are the model's starting board: it sees that position, then the
moves that follow it, but none of the game before it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import chess
import torch

from chessdt.play.players import GreedyPlayer, ModelPlayer
from chessdt.play.policy import Prompted
from chessdt.play.uci_options import DEFAULT_RATING, OPTIONS, VALUE_OPTIONS, set_option
from chessdt.play.uci_time import (DEFAULT_MOVE_OVERHEAD, LATENESS_WINDOW, Go, budget_ms, deadline_margin,
                                   parse_go)
from chessdt.rules import wdl_score, score_cp

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


@dataclass
class Answer:
    """What a search found: the move, the model's predicted reply, the info lines to send first."""

    move: chess.Move
    ponder: chess.Move | None = None
    info: list[str] = dataclasses.field(default_factory=list)


class Search:
    """One `go`: its position and deadline, what the worker found so far, whether it was answered."""

    def __init__(self, board: chess.Board, go: Go, budget_ms: float | None) -> None:
        self.board = board
        self.go = go
        self.budget_ms = budget_ms
        self.hold = go.hold
        self.started = time.perf_counter()
        self.answer: Answer | None = None  # the model's move, once it has one (ponder filled later)
        self.finished = threading.Event()  # the worker is done with this search (the answer is final)
        self.sent = threading.Event()  # its bestmove line went out
        self.timer: threading.Timer | None = None
        self.target: float | None = None  # perf_counter time the deadline timer was set for
        self.fallback: chess.Move | None = None  # the quick move, when the model is late
        self.played: chess.Move | None = None  # the move its bestmove line gave
        self.worker: threading.Thread | None = None  # the thread running the model for it


class UciEngine:
    """The UCI protocol around one ModelPlayer of a Prompted model; feed it lines with :meth:`handle`."""

    def __init__(self, model: Prompted, out: TextIO, seed: int = 0) -> None:
        self.model = model
        self.policy = model.policy
        self.seed = seed  # seeds the move sampling once (a new game continues the same random stream)
        self.out = out
        self.board: chess.Board | None = chess.Board()  # None after a rejected `position`
        self.player = ModelPlayer(model, seed=seed)
        self.ponderer = ModelPlayer(self._opponent(model))  # predicts the reply; argmax, so unseeded
        self.rng = random.Random(seed)  # the emergency move when the model fails
        self.fallback = GreedyPlayer(seed)  # the move when the model is late
        self.lateness: collections.deque[float] = collections.deque(maxlen=LATENESS_WINDOW)  # ms, timed answers
        self.rating = model.rating  # the Rating option; the prompted one unless UCI_LimitStrength
        self.uci_elo = model.rating if model.rating is not None else DEFAULT_RATING
        self.limit_strength = False
        self.ponder = False  # the Ponder option: GUIs set it when they will ask `go ponder` on our reply
        self.threads = 1
        self.show_wdl = True  # UCI_ShowWDL (a value head's score carries its W/D/L)
        self.move_overhead = DEFAULT_MOVE_OVERHEAD
        self.search: Search | None = None
        self._threads: list[threading.Thread] = []  # workers (and the warm-up) that may still run torch
        self._warm = False
        self._model_lock = threading.Lock()  # one forward pass at a time (the players are not thread-safe)
        self._answer_lock = threading.RLock()  # one bestmove per search, lines never interleaved

    @staticmethod
    def _opponent(model: Prompted) -> Prompted:
        """The model prompted as its opponent (ratings swapped), to predict the reply to ponder on."""
        opp = model.rating if model.opponent_rating is None else model.opponent_rating
        return dataclasses.replace(model, rating=opp, opponent_rating=model.rating,
                                   sampling=dataclasses.replace(model.sampling, temperature=0.0))

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

    def start_warm_up(self) -> None:
        """Warm up on a thread of its own now, so loading overlaps the GUI's handshake."""
        self._spawn(self.warm_up, "chessdt-warm-up")

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        """Wait for the threads still running the model: a process must not exit under torch's feet."""
        for thread in self._threads:
            thread.join()
        self._threads = []

    def warm_up(self) -> None:
        """Set the torch threads and run the first forward passes (their one-off costs) if not yet done."""
        with self._model_lock:
            self._warm_up_locked()

    def _warm_up_locked(self) -> None:
        torch.set_num_threads(self.threads)
        if not self._warm:
            self.player.distribution(chess.Board(), temperature=1.0)
            self.ponderer.distribution(chess.Board(), temperature=1.0)
            self._warm = True

    # -- commands ----------------------------------------------------------------------------
    def _cmd_uci(self, args: list[str]) -> None:
        self.send(f"id name chessdt {self.policy.model_id}")
        self.send("id author chessdt")
        for name, (_, _, spec) in self.options().items():
            self.send(f"option name {name} {spec}")
        self.send("uciok")

    def options(self) -> dict[str, tuple[str, Callable[[str], int | float], str]]:
        """The UCI options of this engine: :data:`OPTIONS`, less the value head's without one."""
        return {k: v for k, v in OPTIONS.items() if self.policy.has_value or k not in VALUE_OPTIONS}

    def _cmd_isready(self, args: list[str]) -> None:
        if not self._warm and self.search is None:
            self.warm_up()  # or wait for the warm-up thread to finish it
        self.send("readyok")

    def _cmd_debug(self, args: list[str]) -> None:
        pass

    def _cmd_register(self, args: list[str]) -> None:
        pass

    def _cmd_ucinewgame(self, args: list[str]) -> None:
        # The player notices the new game itself; keeping it keeps its random stream going, so a
        # fixed Seed does not replay the same game every game of a match.
        self.stop_search()
        self.board = chess.Board()

    def _cmd_setoption(self, args: list[str]) -> None:
        if not args or args[0] != "name":
            self.explain("setoption needs: setoption name <name> value <value>")
            return
        rest = args[1:]
        split = rest.index("value") if "value" in rest else len(rest)
        name, value = " ".join(rest[:split]), " ".join(rest[split + 1 :])
        options = self.options()
        match = next((k for k in options if k.lower() == name.lower()), None)
        if match is None:
            self.explain(f"unknown option {name!r} ignored (options: {', '.join(options)})")
            return
        field, parse, _ = options[match]
        try:
            parsed = parse(value)
        except ValueError as e:
            reason = str(e) if str(e).startswith("must") else "not a number"
            self.explain(f"option {match} value {value!r} ignored: {reason}")
            return
        self.stop_search()  # the protocol forbids setoption while searching; be safe anyway
        with self._model_lock:
            self._apply(field, parsed)

    def _apply(self, field: str, value: int | float) -> None:
        """Set one parsed option; rebuild the players when the prompt or the seed changed."""
        if field == "threads":
            self.threads = int(value)
            torch.set_num_threads(self.threads)
            return
        if field == "move_overhead":
            self.move_overhead = int(value)
            return
        if field == "ponder":
            self.ponder = bool(value)  # then bestmove comes with the predicted reply (one more step)
            return
        if field == "hash":
            return  # no search tree to size
        if field == "show_wdl":
            self.show_wdl = bool(value)
            return
        if field == "rating":
            self.rating = int(value)
        elif field == "uci_elo":
            self.uci_elo = int(value)
        elif field == "limit_strength":
            self.limit_strength = bool(value)
        elif field == "seed":
            self.seed = int(value)
        else:
            self.model = set_option(self.model, field, value)
        rating = self.uci_elo if self.limit_strength else self.rating
        self.model = dataclasses.replace(self.model, rating=rating)
        old, self.player = self.player, ModelPlayer(self.model, seed=self.seed)
        self.player.stats = old.stats  # illegal-move counts run over the whole session
        if field != "seed":
            self.player.generator = old.generator
        self.rng = random.Random(self.seed) if field == "seed" else self.rng
        self.fallback = GreedyPlayer(self.seed) if field == "seed" else self.fallback
        self.ponderer = ModelPlayer(self._opponent(self.model))

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
        search = Search(board, go, None if go.hold else budget_ms(go, board.turn, self.move_overhead))
        self.search = search
        if not any(board.legal_moves):
            search.answer = Answer(chess.Move.null(), info=["info string no legal moves: the game is over"])
            search.finished.set()
            if not search.hold:
                self.answer(search)
            return
        search.fallback = self.fallback.play(board)  # before the model runs: the deadline only writes
        search.worker = self._spawn(lambda: self._think(search), "chessdt-search")
        self._arm(search)

    def deadline_margin(self, budget_ms: float) -> float:
        """Milliseconds before the budget's end at which the deadline fires (uci_time.deadline_margin)."""
        return deadline_margin(self.lateness, budget_ms)

    def _arm(self, search: Search) -> None:
        """Answer the search when its budget (less the margin) runs out, whatever the worker has by then."""
        if search.budget_ms is None:
            return
        fire = (search.budget_ms - self.deadline_margin(search.budget_ms)) / 1000
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
        s.budget_ms = budget_ms(s.go, s.board.turn, self.move_overhead)
        if s.finished.is_set():
            self.answer(s)
        else:
            self._arm(s)

    def stop_search(self) -> None:
        """Answer the running search now (a stop, or a command that ends it)."""
        s = self.search
        if s is not None and not s.sent.is_set():
            self.answer(s, "stop")

    # -- the move ----------------------------------------------------------------------------
    def answer(self, search: Search, why: str | None = None) -> None:
        """Send the search's bestmove, once: the model's move if it has one, else a random legal move."""
        with self._answer_lock:
            if search.sent.is_set():
                return
            if search.timer is not None:
                search.timer.cancel()
            ans = search.answer
            if ans is None:
                reason = {"time": "the time budget ran out", "stop": "stop came"}.get(why or "", "the end")
                if search.fallback is not None:
                    ans = Answer(search.fallback, info=[f"info string {reason} before the model answered; "
                                                        "played the quick fallback move (most material at one ply)"])
                else:
                    ans = self._random_answer(search.board, f"{reason} before the model answered")
            for line in ans.info:
                self.send(line)
            ponder = f" ponder {ans.ponder.uci()}" if ans.ponder is not None and search.finished.is_set() else ""
            self.send(f"bestmove {ans.move.uci() if ans.move else '0000'}{ponder}")
            search.played = ans.move
            search.sent.set()
            if why == "time" and search.target is not None:
                self.lateness.append(1000 * (time.perf_counter() - search.target))

    def _random_answer(self, board: chess.Board, why: str) -> Answer:
        """A legal move drawn at random: the answer of a search the model could not finish."""
        with self._answer_lock:
            move = self.rng.choice(list(board.legal_moves))
        return Answer(move, info=[f"info string {why}; played a random legal move"])

    def _think(self, search: Search) -> None:
        """The worker: the model's move (then its predicted reply) for the search, if still wanted."""
        try:
            with self._model_lock:
                if search.sent.is_set():
                    return  # answered without us (stop or time) while an older search held the model
                self._warm_up_locked()
                search.answer = self._choose(search)
                if self.ponder and not search.sent.is_set():
                    search.answer.ponder = self._predict_reply(search.board, search.answer.move)
        except Exception as e:  # a failed forward pass still owes the GUI a move
            log.debug("search failed", exc_info=True)
            if search.answer is None:
                search.answer = self._random_answer(search.board, f"the model failed ({e})")
        search.finished.set()
        if not search.hold:
            self.answer(search)
        else:
            with self._answer_lock:  # a held search shows its info now, as engines do while they search
                if not search.sent.is_set() and search.answer is not None:
                    for line in search.answer.info:
                        self.send(line)
                    search.answer.info = []
        if search.sent.is_set() and search.played:
            # Off the clock: feed the model the move played, so that the next go costs one step.
            after = search.board.copy()
            after.push(search.played)
            with self._model_lock:
                try:
                    self.player.follow(after)
                except Exception:
                    log.debug("follow failed", exc_info=True)

    def _choose(self, search: Search) -> Answer:
        """The model's move and its info lines; the most likely legal move where sampling fails."""
        board = search.board
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
        if search.go.searchmoves and move not in search.go.searchmoves:
            move = max(search.go.searchmoves, key=p)
        ms = int(1000 * (time.perf_counter() - search.started))
        top = sorted(board.legal_moves, key=lambda m: -p(m))[:3]
        info.append(f"info string model top at rating {self.model.rating}: "
                    + ", ".join(f"{m.uci()} {p(m):.3f}" for m in top))
        if self.player.stats.illegal > before:
            info.append(f"info string sampled move was illegal; played the most likely legal move "
                        f"({self.player.stats.illegal} of {self.player.stats.moves} so far)")
        wdl = self.player.wdl(board)  # the position searched, from the side to move (None: no value head)
        score = "" if wdl is None else score_words(wdl, self.show_wdl) + " "
        # Last, so a GUI that keeps the latest info string shows the chosen move's probability.
        info.append(f"info depth 1 seldepth 1 {score}time {ms} nodes 1 pv {move.uci()} string p={p(move):.4f}")
        return Answer(move, info=info)

    def _predict_reply(self, board: chess.Board, move: chess.Move) -> chess.Move | None:
        """The model's most likely legal reply to `move` (None when the game ends with it)."""
        after = board.copy()
        after.push(move)
        if not any(after.legal_moves):
            return None
        probs = self.ponderer.distribution(after, temperature=1.0)
        return max(after.legal_moves, key=lambda m: _prob(probs, self.policy.vocab.encode_move(m)))


def _prob(probs: torch.Tensor, token: int) -> float:
    """A move's probability, with a non-finite one (diverged weights) ranked below every other."""
    x = float(probs[token])
    return x if math.isfinite(x) else -1.0


def serve(model: Prompted, inp: TextIO, out: TextIO, seed: int = 0) -> UciEngine:
    """Answer UCI lines from `inp` on `out` until quit or end of input; returns the engine.

    At end of input a running search still sends its bestmove (``echo go | chessdt uci`` works).
    """
    engine = UciEngine(model, out, seed)
    torch.set_num_threads(engine.threads)
    # The deadline timer must get the GIL promptly while the worker runs Python between torch ops.
    sys.setswitchinterval(0.001)
    engine.start_warm_up()
    try:
        for line in inp:
            if not engine.handle(line):
                return engine
        engine.wait()
    finally:
        engine.close()
    return engine
