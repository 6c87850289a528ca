"""Stockfish as a resource: find the binary, open it with a strength setting, survive crashes and hangs.

Everything that talks to a UCI engine goes through here: `find_stockfish` resolves the binary
(explicit path, then `stockfish` on PATH, then Debian's `/usr/games/stockfish`), `open_engine` is a
plain context manager around `chess.engine.SimpleEngine`, and `Engine` adds what long batch jobs need:
a per-call timeout, and a restart-and-retry when the process dies or stops answering.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import chess
import chess.engine

from chessdt.errors import UserError
from chessdt.rules import Strength

log = logging.getLogger(__name__)

# Debian/Ubuntu's `apt-get install stockfish` puts the binary here, outside most users' PATH.
DEBIAN_STOCKFISH = Path("/usr/games/stockfish")
INSTALL_HINT = ("install it (`apt-get install stockfish` on Debian/Ubuntu, `brew install stockfish` on "
                "macOS) or pass its path with --engine PATH")

EngineCommand = str | Path | Sequence[str]


class EngineFailure(RuntimeError):
    """The engine kept crashing or hanging after all restarts allowed for one call."""


def find_stockfish(path: str | Path | None = None) -> Path:
    """The Stockfish binary: `path` if given, else `stockfish` on PATH, else /usr/games/stockfish.

    Raises UserError (with how to install) when none is found or `path` is not executable.
    """
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file() and os.access(p, os.X_OK):
            # absolute: './sf' would become 'sf', which starting a process looks up on PATH
            return p.resolve()
        # only a bare name is looked up on PATH; a path with a folder names exactly one file
        found = shutil.which(str(path)) if os.sep not in str(path) else None
        if found:
            return Path(found)
        raise UserError(f"engine {str(path)!r} not found or not executable: {INSTALL_HINT}")
    found = shutil.which("stockfish")
    if found:
        return Path(found)
    if DEBIAN_STOCKFISH.is_file() and os.access(DEBIAN_STOCKFISH, os.X_OK):
        return DEBIAN_STOCKFISH
    raise UserError(f"Stockfish not found (looked for `stockfish` on PATH and {DEBIAN_STOCKFISH}): "
                    f"{INSTALL_HINT}")


def _command(path: EngineCommand) -> str | list[str]:
    if isinstance(path, (str, Path)):
        return str(path)
    return [str(part) for part in path]


def _engine_options(strength: Strength | None, threads: int, hash_mb: int,
                    extra: Mapping[str, Any] | None) -> dict[str, Any]:
    options: dict[str, Any] = {"Threads": threads, "Hash": hash_mb}
    if strength is not None:
        options.update(strength.options())
    options.update(extra or {})
    return options


def _configure(engine: chess.engine.SimpleEngine, options: Mapping[str, Any]) -> None:
    # Only send options the engine declares, so a minimal engine (or a test fake) still opens.
    known = engine.options
    engine.configure({k: v for k, v in options.items() if k in known})


def _popen(path: EngineCommand, timeout_s: float, tries: int = 3) -> chess.engine.SimpleEngine:
    """Start a UCI engine and complete its handshake; EngineFailure saying why when it cannot be
    started, exits or is killed during the handshake `tries` times running (a crash there is retried
    like a crash mid-game), or does not answer `uci` within `timeout_s`."""
    for attempt in range(1, tries + 1):
        try:
            return chess.engine.SimpleEngine.popen_uci(_command(path), timeout=timeout_s)
        except (asyncio.TimeoutError, TimeoutError, concurrent.futures.TimeoutError):
            raise EngineFailure(f"engine {path} did not answer the UCI handshake within {timeout_s:g} s "
                                "(is it a UCI engine?)") from None
        except chess.engine.EngineTerminatedError as e:
            if attempt >= tries:
                raise EngineFailure(f"engine {path} exited during the UCI handshake ({e}; {tries} tries)") from None
            log.warning("engine %s exited during the UCI handshake (%s); starting it again", path, e)
        except (chess.engine.EngineError, OSError, RuntimeError, ValueError) as e:
            raise EngineFailure(f"engine {path} could not be started ({type(e).__name__}: {e})") from None
    raise EngineFailure(f"engine {path}: no start tried (tries={tries})")


STARTUP_TIMEOUT_S = 10.0  # a process start and handshake (an interpreter, a network file) may take this long
# on a loaded machine, whatever the per-move timeout


def check_engine(path: EngineCommand, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Start the engine once and stop it: a UserError now, naming the problem, rather than games
    aborted one by one later."""
    try:
        _kill(_popen(path, timeout_s))
    except EngineFailure as e:
        raise UserError(str(e)) from None


@contextlib.contextmanager
def open_engine(path: EngineCommand, *, elo: int | None = None, skill: int | None = None, threads: int = 1,
                hash_mb: int = 16, options: Mapping[str, Any] | None = None,
                timeout_s: float = 10.0) -> Iterator[chess.engine.SimpleEngine]:
    """Open a UCI engine configured for a strength; closed when the block ends."""
    strength = Strength(elo=elo, skill=skill)
    engine = _popen(path, timeout_s)
    try:
        _configure(engine, _engine_options(strength, threads, hash_mb, options))
        yield engine
    finally:
        _kill(engine)


def _kill(engine: chess.engine.SimpleEngine) -> None:
    """Stop an engine without waiting on it: a hung process gets no chance to block us.

    After a timed-out command, python-chess can fail to record the killed process's exit (an
    InvalidStateError inside its connection_lost), which leaves its background thread waiting
    forever and keeps Python from exiting; if the exit is still unrecorded a second after the
    kill, record it ourselves so that thread ends.
    """
    def unstick() -> None:
        returncode = engine.protocol.returncode
        if not returncode.done():
            returncode.set_result(-9)

    with contextlib.suppress(Exception):
        loop = engine.protocol.loop
        loop.call_soon_threadsafe(engine.transport.kill)
        loop.call_soon_threadsafe(lambda: loop.call_later(1.0, unstick))
    with contextlib.suppress(Exception):
        engine.close()


class Engine:
    """A UCI engine that restarts itself: every call has a timeout, a crash or hang restarts the
    process and retries the call (up to `retries` times), then raises EngineFailure.

    Use as a context manager: `with Engine(find_stockfish(), strength=Strength(elo=1600)) as e: ...`.
    """

    def __init__(self, path: EngineCommand, *, strength: Strength | None = None, threads: int = 1,
                 hash_mb: int = 16, options: Mapping[str, Any] | None = None, timeout_s: float = 30.0,
                 retries: int = 2) -> None:
        self.path = path
        self.strength = strength
        self.threads = threads
        self.hash_mb = hash_mb
        self.extra_options = dict(options or {})
        self.timeout_s = timeout_s  # per call, on top of any time limit of the search itself
        self.retries = retries
        self.restarts = 0  # how many times the process was replaced
        self._engine: chess.engine.SimpleEngine | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start (or restart) the engine process with the configured options."""
        self.close()
        engine = _popen(self.path, max(self.timeout_s, STARTUP_TIMEOUT_S), tries=self.retries + 1)
        try:
            _configure(engine, _engine_options(self.strength, self.threads, self.hash_mb, self.extra_options))
        except BaseException:
            _kill(engine)
            raise
        self._engine = engine

    def close(self) -> None:
        if self._engine is not None:
            _kill(self._engine)
            self._engine = None

    def restart(self) -> None:
        self.restarts += 1
        log.warning("restarting engine %s (restart %d)", self.path, self.restarts)
        self.start()

    @property
    def raw(self) -> chess.engine.SimpleEngine:
        """The underlying python-chess engine (started on first use)."""
        if self._engine is None:
            self.start()
        assert self._engine is not None
        return self._engine

    @property
    def name(self) -> str:
        """The engine's `id name`, e.g. 'Stockfish 15.1'."""
        return self.raw.id.get("name", str(self.path))

    def set_strength(self, strength: Strength | None) -> None:
        """Change the playing strength; kept across restarts."""
        self.strength = strength
        self._call(lambda e: e.protocol.configure(
            {k: v for k, v in _engine_options(strength, self.threads, self.hash_mb, self.extra_options).items()
             if k in e.protocol.options}), None)

    # -- calls ------------------------------------------------------------------------------
    def play(self, board: chess.Board, limit: chess.engine.Limit, *, game: object = None,
             info: chess.engine.Info = chess.engine.INFO_NONE) -> chess.engine.PlayResult:
        """The engine's move in `board` (restarting and retrying on crash or hang)."""
        return self._call(lambda e: e.protocol.play(board, limit, game=game, info=info), limit)

    def analyse(self, board: chess.Board, limit: chess.engine.Limit, *, game: object = None,
                info: chess.engine.Info = chess.engine.INFO_SCORE) -> chess.engine.InfoDict:
        """The engine's evaluation of `board` (restarting and retrying on crash or hang)."""
        return self._call(lambda e: e.protocol.analyse(board, limit, game=game, info=info), limit)

    def analyse_lines(self, board: chess.Board, limit: chess.engine.Limit, lines: int) -> list[chess.engine.InfoDict]:
        """A multi-PV evaluation: the engine's `lines` best moves, one InfoDict each (pv, score)."""
        return list(self._call(lambda e: e.protocol.analyse(board, limit, multipv=lines,
                                                            info=chess.engine.INFO_SCORE | chess.engine.INFO_PV),
                               limit))

    def root_scores(self, board: chess.Board, nodes: int, lines: int) -> dict[chess.Move, chess.engine.PovScore]:
        """The score of each of the `lines` best root moves after a fresh multi-PV search of `nodes`
        nodes (ucinewgame first: Stockfish's hash and history cleared, so the scores are a function
        of the position and its move history). The engine's last word per line, as `analyse_lines`
        would give it, read from the raw output: python-chess's analyse parses and validates every
        PV of every depth, which costs three times the search at these node budgets."""
        limit = chess.engine.Limit(nodes=nodes)
        return dict(self._call(lambda e: e.protocol.communicate(
            lambda proto: _RootScores(proto, board, nodes, lines)), limit))

    def _call(self, make_coro: Any, limit: chess.engine.Limit | None) -> Any:
        timeout = self.timeout_s + (limit.time if limit is not None and limit.time else 0.0)
        last: BaseException | None = None
        for attempt in range(self.retries + 1):
            try:
                if attempt:
                    self.restart()
                engine = self.raw
                future = asyncio.run_coroutine_threadsafe(
                    asyncio.wait_for(make_coro(engine), timeout), engine.protocol.loop)
                return future.result(timeout + 5.0)
            except (chess.engine.EngineError, asyncio.TimeoutError, concurrent.futures.TimeoutError,
                    TimeoutError, RuntimeError, ConnectionError) as e:  # EngineFailure (a restart) is a RuntimeError
                last = e
                log.warning("engine call failed (%s: %s)", type(e).__name__, e)
                self.close()
        raise EngineFailure(f"engine {self.path} failed {self.retries + 1} times; last error: {last!r}")


class _RootScores(chess.engine.BaseCommand[dict[chess.Move, chess.engine.PovScore]]):
    """One fresh multi-PV search, keeping only each line's last score and first move."""

    def __init__(self, engine: chess.engine.Protocol, board: chess.Board, nodes: int, lines: int) -> None:
        super().__init__(engine)
        if not isinstance(engine, chess.engine.UciProtocol):
            raise EngineFailure("multi-PV scoring needs a UCI engine")
        self.uci = engine
        self.board, self.nodes, self.lines = board, nodes, lines
        self.last: dict[int, tuple[str, chess.engine.Score]] = {}  # multipv index -> (first move, score)
        self.searching = False

    def start(self) -> None:
        self.uci._setoption("MultiPV", self.lines)
        self.uci.game = self  # a new game: python-chess sends ucinewgame before its own next search too
        self.uci._ucinewgame()
        self.uci._isready()

    def line_received(self, line: str) -> None:
        if line.startswith("info ") and self.searching:
            self._info(line.split())
        elif line.startswith("bestmove") and self.searching:
            scores = {}
            for uci_move, score in self.last.values():
                try:
                    scores[chess.Move.from_uci(uci_move)] = chess.engine.PovScore(score, self.board.turn)
                except ValueError:
                    self.result.set_exception(EngineFailure(f"engine sent a bad move {uci_move!r}"))
                    self.set_finished()
                    return
            self.result.set_result(scores)
            self.set_finished()
        elif line.strip() == "readyok" and not self.searching:
            self.searching = True
            self.uci._position(self.board)
            self.uci._go(chess.engine.Limit(nodes=self.nodes))

    def _info(self, words: list[str]) -> None:
        try:
            k = int(words[words.index("multipv") + 1]) if "multipv" in words else 1
            i = words.index("score")
            kind, value = words[i + 1], int(words[i + 2])
            move = words[words.index("pv") + 1]
        except (ValueError, IndexError):
            return  # an info line without a scored line (currmove, hashfull, string, ...)
        score: chess.engine.Score = chess.engine.Cp(value) if kind == "cp" else chess.engine.Mate(value)
        self.last[k] = (move, score)
