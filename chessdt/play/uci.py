"""UCI engine front end: the model as an engine for cutechess-cli, Arena, lichess-bot and friends.

:class:`UciEngine` handles one protocol line at a time and writes its answers to a stream
(flushed after every line); :func:`serve` runs it over stdin/stdout until ``quit`` or end of
input. The model answers ``go`` at once: time controls and depth are accepted and ignored, and a
``go infinite`` or ``go ponder`` holds its ``bestmove`` until ``stop`` or ``ponderhit``, as the
protocol asks. Anything malformed is answered with an ``info string`` saying why, never a crash.

Positions from ``position fen`` are the model's starting board: it sees that position, then the
moves that follow it, but none of the game before it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, TextIO

import chess

from chessdt.play.players import ModelPlayer
from chessdt.play.policy import Prompted, Sampling
from chessdt.tokenizer import RATING_MAX, RATING_MIN, check_rating

log = logging.getLogger(__name__)

SEED_MAX = 2**31 - 1
GO_VALUE_KEYS = ("wtime", "btime", "winc", "binc", "movestogo", "depth", "nodes", "mate", "movetime")
GO_FLAG_KEYS = ("infinite", "ponder")


DEFAULT_RATING = 1500  # the Rating option's default, as `chessdt play` and `chessdt uci` use


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(v: str) -> int:
        x = int(v)
        if not lo <= x <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return x
    return parse


def _rating(v: str) -> int:
    return check_rating(int(v))


def _float_in(lo: float, hi: float, lo_open: bool = False) -> Callable[[str], float]:
    def parse(v: str) -> float:
        x = float(v)
        if not math.isfinite(x) or x < lo or x > hi or (lo_open and x == lo):
            raise ValueError(f"must be a number in {'(' if lo_open else '['}{lo}, {hi}]")
        return x
    return parse


# UCI name -> (what it sets: a Prompted field, a Sampling field or the seed; parser; the `option`
# line's type and range). UCI has no float type: floats are strings, as in Lc0.
OPTIONS: dict[str, tuple[str, Callable[[str], int | float], str]] = {
    "Rating": ("rating", _rating, f"type spin default {DEFAULT_RATING} min {RATING_MIN} max {RATING_MAX - 1}"),
    "OpponentRating": ("opponent_rating", _int_in(0, RATING_MAX - 1),  # 0 = the same as Rating
                       f"type spin default 0 min 0 max {RATING_MAX - 1}"),
    "Temperature": ("temperature", _float_in(0.0, 100.0), f"type string default {Sampling().temperature}"),
    "TopP": ("top_p", _float_in(0.0, 1.0, lo_open=True), f"type string default {Sampling().top_p}"),
    "Guidance": ("guidance", _float_in(-100.0, 100.0), f"type string default {Sampling().guidance}"),
    "Seed": ("seed", _int_in(0, SEED_MAX), f"type spin default 0 min 0 max {SEED_MAX}"),
}


def set_option(model: Prompted, field: str, value: int | float) -> Prompted:
    """The prompted model with one UCI option changed (not the seed, which is the player's)."""
    if field == "rating":
        return dataclasses.replace(model, rating=int(value))
    if field == "opponent_rating":
        return dataclasses.replace(model, opponent_rating=int(value) or None)
    s = model.sampling
    if field == "temperature":
        s = dataclasses.replace(s, temperature=float(value))
    elif field == "top_p":
        s = dataclasses.replace(s, top_p=float(value))
    elif field == "guidance":
        s = dataclasses.replace(s, guidance=float(value))
    else:
        raise ValueError(f"no option sets {field!r}")
    return dataclasses.replace(model, sampling=s)


class UciEngine:
    """The UCI protocol around one ModelPlayer of a Prompted model; feed it lines with :meth:`handle`."""

    def __init__(self, model: Prompted, out: TextIO, seed: int = 0) -> None:
        self.model = model
        self.policy = model.policy
        self.seed = seed  # seeds the move sampling once (a new game continues the same random stream)
        self.out = out
        self.board = chess.Board()
        self.player = ModelPlayer(model, seed=seed)
        self._held: str | None = None  # a bestmove line waiting for stop/ponderhit

    # -- plumbing ----------------------------------------------------------------------------
    def send(self, line: str) -> None:
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

    # -- commands ----------------------------------------------------------------------------
    def _cmd_uci(self, args: list[str]) -> None:
        self.send(f"id name chessdt {self.policy.model_id}")
        self.send("id author chessdt")
        for name, (_, _, spec) in OPTIONS.items():
            self.send(f"option name {name} {spec}")
        self.send("uciok")

    def _cmd_isready(self, args: list[str]) -> None:
        self.send("readyok")

    def _cmd_debug(self, args: list[str]) -> None:
        pass

    def _cmd_register(self, args: list[str]) -> None:
        pass

    def _cmd_ucinewgame(self, args: list[str]) -> None:
        # The player notices the new game itself; keeping it keeps its random stream going, so a
        # fixed Seed does not replay the same game every game of a match.
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
        if field == "seed":
            self.seed = int(parsed)
        else:
            self.model = set_option(self.model, field, parsed)
        old, self.player = self.player, ModelPlayer(self.model, seed=self.seed)
        self.player.stats = old.stats  # illegal-move counts run over the whole session
        if field != "seed":
            self.player.generator = old.generator

    def _cmd_position(self, args: list[str]) -> None:
        if not args or args[0] not in ("startpos", "fen"):
            self.explain("position needs startpos or fen <FEN>, then optionally moves ...; position unchanged")
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
                self.explain(f"bad FEN {fen!r} ({e}); position unchanged")
                return
            status = board.status()
            if status != chess.STATUS_VALID:
                self.explain(f"impossible position {fen!r} ({status!r}); position unchanged")
                return
        for text in args[split + 1 :]:
            try:
                move = board.parse_uci(text)
            except ValueError:
                move = chess.Move.null()
            if not move:
                self.explain(f"move {text!r} is not legal in {board.fen()}; position unchanged")
                return
            board.push(move)
        self.board = board

    def _cmd_go(self, args: list[str]) -> None:
        hold = False
        searchmoves: list[chess.Move] = []
        i = 0
        while i < len(args):
            key = args[i]
            if key in GO_FLAG_KEYS:
                hold = True
            elif key in GO_VALUE_KEYS:
                value = args[i + 1] if i + 1 < len(args) else None
                if value is None or not value.lstrip("-").isdigit():
                    self.explain(f"go: {key} needs a whole number; ignored")
                if value is not None and value not in GO_VALUE_KEYS + GO_FLAG_KEYS + ("searchmoves",):
                    i += 1
            elif key == "searchmoves":
                while i + 1 < len(args) and args[i + 1] not in GO_VALUE_KEYS + GO_FLAG_KEYS:
                    i += 1
                    try:
                        searchmoves.append(self.board.parse_uci(args[i]))
                    except ValueError:
                        self.explain(f"go: searchmoves {args[i]!r} is not legal here; ignored")
            else:
                self.explain(f"go: {key!r} ignored")
            i += 1
        line = self._bestmove(searchmoves)
        if hold:
            self._held = line
        else:
            self.send(line)

    def _cmd_stop(self, args: list[str]) -> None:
        if self._held is not None:
            line, self._held = self._held, None
            self.send(line)

    _cmd_ponderhit = _cmd_stop

    # -- the move ----------------------------------------------------------------------------
    def _bestmove(self, searchmoves: list[chess.Move]) -> str:
        """Choose a move for the current position, send its info lines; the bestmove line."""
        board = self.board
        if not any(board.legal_moves):
            self.explain("no legal moves: the game is over")
            return "bestmove 0000"
        start = time.perf_counter()
        before = self.player.stats.illegal
        probs = self.player.distribution(board, temperature=1.0)
        move = self.player.play(board)
        vocab = self.policy.vocab
        if searchmoves and move not in searchmoves:
            move = max(searchmoves, key=lambda m: float(probs[vocab.encode_move(m)]))
        ms = int(1000 * (time.perf_counter() - start))
        top = sorted(board.legal_moves, key=lambda m: -float(probs[vocab.encode_move(m)]))[:3]
        self.explain(f"model top at rating {self.model.rating}: "
                     + ", ".join(f"{m.uci()} {float(probs[vocab.encode_move(m)]):.3f}" for m in top))
        if self.player.stats.illegal > before:
            self.explain(f"sampled move was illegal; played the most likely legal move "
                         f"({self.player.stats.illegal} of {self.player.stats.moves} so far)")
        # Last, so a GUI that keeps the latest info string shows the chosen move's probability.
        p = float(probs[vocab.encode_move(move)])
        self.send(f"info depth 1 seldepth 1 time {ms} nodes 1 pv {move.uci()} string p={p:.4f}")
        return f"bestmove {move.uci()}"


def serve(model: Prompted, inp: TextIO, out: TextIO, seed: int = 0) -> UciEngine:
    """Answer UCI lines from `inp` on `out` until quit or end of input; returns the engine."""
    engine = UciEngine(model, out, seed)
    for line in inp:
        if not engine.handle(line):
            break
    return engine
