"""The terminal game: a human against the model prompted at a chosen rating.

:class:`TerminalGame` reads lines from one text stream and writes to another, so the same loop
serves a real terminal (``chessdt play``) and a test's ``io.StringIO``. The pieces it is built from
are plain functions: :func:`~chessdt.play.notation.parse_move` (SAN or UCI, forgiving about case and check marks),
:func:`~chessdt.play.notation.draw_board` (Unicode, coordinates, flipped for black, last move
highlighted) and :func:`ending` (mate, stalemate, repetition, fifty moves, insufficient material).

The game is saved as PGN whenever it stops, however it stops (end of game, resign, quit, end of
input, Ctrl-C); its headers say which model, rating and sampling settings played.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import chess
import chess.pgn

from chessdt.play.notation import MoveError, draw_board, move_list, parse_move
from chessdt.play.players import ModelPlayer
from chessdt.play.policy import Sampling
from chessdt.rules import game_over, material
from chessdt.tokenizer import RATING_MAX, RATING_MIN, check_rating

log = logging.getLogger(__name__)

HELP = """\
Moves: SAN or UCI, any case, check marks optional: e4, Nf3, exd5, O-O, e7e8q, e8=Q, g1f3.
  (a lower-case b is the b-pawn when both readings are legal: write B for the bishop)
Commands:
  undo         take back your last move (and the model's reply)
  hint         the model's top 5 moves for you, with probabilities, at its prompted rating
  rating N     prompt the model with rating N from now on ({lo}..{hi})
  flip         turn the board around
  resign       give up the game
  draw         offer a draw (accepted when the model is behind in material or a draw can be claimed)
  save FILE    save the game so far as PGN (later saves go to the same file)
  help         this text
  quit         save the game and leave (so do Ctrl-D and Ctrl-C)
""".format(lo=RATING_MIN, hi=RATING_MAX - 1)

# -- rules -------------------------------------------------------------------------------------------
_REASONS = {  # rules.game_over's terminations in words
    "insufficient_material": "insufficient material",
    "seventyfive_moves": "seventy-five-move rule",
    "fivefold_repetition": "fivefold repetition",
    "fifty_moves": "fifty-move rule",
    "threefold_repetition": "threefold repetition",
}


def ending(board: chess.Board) -> tuple[str, str] | None:
    """(result, reason) when the game is over, counting threefold and fifty-move draws as claimed.

    >>> ending(chess.Board("7k/6Q1/6K1/8/8/8/8/8 b - - 0 1"))
    ('1-0', 'checkmate')
    >>> ending(chess.Board()) is None
    True
    """
    over = game_over(board, claim_draw=True)
    if over is None:
        return None
    result, termination = over
    return result, _REASONS.get(termination, termination)



# -- the game ----------------------------------------------------------------------------------------
@dataclass
class GameSummary:
    """How a terminal game ended."""

    result: str  # PGN result: 1-0, 0-1, 1/2-1/2, or * when left unfinished
    reason: str  # checkmate, resignation, quit, ...
    pgn_path: Path | None  # where the game was saved (None if saving failed)
    model_moves: int = 0  # moves the model chose
    model_illegal: int = 0  # of those, how many were illegal and replaced by its best legal move
    pgn: str = ""  # the saved PGN text


@dataclass
class _Record:
    """What the PGN needs beyond the board: comments after plies (rating changes, resignations)."""

    comments: dict[int, list[str]] = field(default_factory=dict)  # ply -> comments after it

    def note(self, ply: int, text: str) -> None:
        self.comments.setdefault(ply, []).append(text)


class TerminalGame:
    """One game of a human (reading `inp`, writing `out`) against a ModelPlayer."""

    def __init__(self, model: ModelPlayer, human: chess.Color, *, inp: TextIO, out: TextIO,
                 pgn_path: Path, board: chess.Board | None = None, color: bool = False,
                 seed: int | None = None) -> None:
        self.model = model
        self.human = human
        self.inp = inp
        self.out = out
        self.pgn_path = Path(pgn_path)
        self.board = board.copy() if board is not None else chess.Board()
        self.color = color
        self.seed = seed
        self.flipped = human == chess.BLACK
        self.first_rating = model.prompted.rating
        self.record = _Record()
        # A second player for hints: the human's side, prompted at the model's rating, own cache.
        self._hinter = ModelPlayer(dataclasses.replace(
            model.prompted, sampling=Sampling(temperature=1.0, guidance=model.sampling.guidance)))
        self._started = dt.datetime.now()
        self._starts: dict[Path, int] = {}  # per file saved to: its size before this game's first save

    # -- i/o ---------------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def ask(self, prompt: str) -> str | None:
        """One line of input without its newline; None at end of input."""
        if self.inp is sys.stdin and self.out is sys.stdout and sys.stdin.isatty():
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:
                pass
            try:
                return input(prompt)
            except EOFError:
                return None
        self.out.write(prompt)
        self.out.flush()
        line = self.inp.readline()
        return None if line == "" else line.rstrip("\r\n")

    def show(self) -> None:
        self.say()
        self.say(draw_board(self.board, flipped=self.flipped, color=self.color))
        moves = move_list(self.board)
        if moves:
            self.say(textwrap.fill(moves, width=72, initial_indent="", subsequent_indent="  "))
        if self.board.is_check() and not self.board.is_game_over():
            self.say("check!")

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> GameSummary:
        """Play until the game ends or the human leaves; the PGN is saved in every case."""
        result, reason = "*", "quit"
        try:
            side = "white" if self.human == chess.WHITE else "black"
            self.say(f"You play {side} against {self.model.name}.")
            self.say("Type a move (e4, Nf3, e7e5 ...) or help.")
            self.show()
            while True:
                over = ending(self.board)
                if over is not None:
                    result, reason = over
                    break
                if self.board.turn != self.human:
                    self._model_move()
                    self.show()
                    continue
                line = self.ask(f"{side} to move> ")
                if line is None:
                    self.say()
                    reason = "end of input"
                    break
                stop = self._handle(line.strip())
                if stop is not None:
                    result, reason = stop
                    break
        except KeyboardInterrupt:
            reason = "interrupted"
            self._try_say()
        except OSError as e:  # the terminal went away: still save the game
            reason = f"terminal error: {e.strerror or e}"
        except Exception as e:  # never a traceback at the player: save, say what happened, log details
            log.debug("terminal game failed", exc_info=True)
            reason = f"internal error: {e!r} (run with -v for details)"
        return self._finish(result, reason)

    def _try_say(self, text: str = "") -> None:
        try:
            self.say(text)
        except (OSError, ValueError):
            pass  # the terminal is gone

    def _model_move(self) -> None:
        before = self.model.stats.illegal
        p = self.model.distribution(self.board, temperature=1.0)
        move = self.model.play(self.board)
        prob = float(p[self.model.policy.vocab.encode_move(move)])
        san = self.board.san(move)
        self.board.push(move)
        note = ""
        if self.model.stats.illegal > before:
            note = "; its sampled move was illegal, so it plays its most likely legal move"
        self.say(f"model plays {san} (p={prob:.1%}{note})")

    def _handle(self, line: str) -> tuple[str, str] | None:
        """Act on one input line; (result, reason) when it ends the game."""
        if not line:
            return None
        word, _, rest = line.partition(" ")
        cmd, rest = word.lower(), rest.strip()
        if cmd in ("help", "?"):
            self.say(HELP)
        elif cmd in ("quit", "exit"):
            return "*", "quit"
        elif cmd == "undo":
            self._undo()
        elif cmd == "hint":
            self._hint()
        elif cmd == "flip":
            self.flipped = not self.flipped
            self.show()
        elif cmd == "rating":
            self._rating(rest)
        elif cmd == "resign":
            loser = "White" if self.human == chess.WHITE else "Black"
            self.record.note(len(self.board.move_stack), f"{loser} resigns")
            return ("0-1" if self.human == chess.WHITE else "1-0"), "resignation"
        elif cmd == "draw":
            return self._draw_offer()
        elif cmd == "save":
            if not rest:
                self.say("save needs a file name, e.g. save game.pgn")
                return None
            path = Path(rest).expanduser()
            if path.suffix.lower() != ".pgn":
                path = path.with_name(path.name + ".pgn")
            if self._save(path, "*") is not None:
                self.pgn_path = path
                self.say(f"saved to {path}")
        else:
            try:
                move = parse_move(self.board, line)
            except MoveError as e:
                self.say(str(e))
                return None
            self.board.push(move)
            if ending(self.board) is not None or self.board.turn == self.human:
                self.show()
        return None

    def _undo(self) -> None:
        """Take back plies until one of the human's moves is gone and it is the human's turn."""
        n = len(self.board.move_stack)
        human_plies = [i for i in range(n) if self._mover(i) == self.human]
        if not human_plies:
            self.say("nothing to undo")
            return
        keep = human_plies[-1]
        while len(self.board.move_stack) > keep:
            self.board.pop()
        for ply in sorted(p for p in self.record.comments if p > keep):  # rating changes still hold
            for text in self.record.comments.pop(ply):
                self.record.note(keep, text)
        self.say(f"took back {n - keep} half-move{'s' if n - keep != 1 else ''}")
        self.show()

    def _mover(self, ply: int) -> chess.Color:
        """Colour that made the ply-th move (0-based) of this game."""
        return self.board.root().turn if ply % 2 == 0 else not self.board.root().turn

    def _hint(self) -> None:
        h = self._hinter
        m = self.model.prompted
        if (h.prompted.rating, h.prompted.opponent_rating) != (m.rating, m.opponent_rating):
            h.set_rating(m.rating, m.opponent_rating)
        p = h.distribution(self.board, temperature=1.0)
        vocab = h.policy.vocab
        scored = sorted(((float(p[vocab.encode_move(m)]), self.board.san(m)) for m in self.board.legal_moves),
                        reverse=True)
        legal_mass = sum(s for s, _ in scored)
        top = "  ".join(f"{san} {s:.1%}" for s, san in scored[:5])
        self.say(f"model at {self.model.prompted.rating} would play: {top}")
        if legal_mass < 0.99:
            self.say(f"(it puts {1 - legal_mass:.1%} of its probability on illegal moves here)")

    def _rating(self, rest: str) -> None:
        try:
            rating = int(rest)
        except ValueError:
            self.say(f"rating needs a whole number, e.g. rating 1800 ({RATING_MIN}..{RATING_MAX - 1})")
            return
        try:
            check_rating(rating)
        except ValueError as e:
            self.say(f"rating {e} (the model's rating tokens)")
            return
        self.model.set_rating(rating, self.model.prompted.opponent_rating)
        self.record.note(len(self.board.move_stack), f"model rating {rating} from here")
        self.say(f"the model now plays at {rating}")

    def _draw_offer(self) -> tuple[str, str] | None:
        b = self.board
        if b.can_claim_draw():
            why = "fifty-move rule" if b.can_claim_fifty_moves() else "threefold repetition"
            self.say(f"draw ({why})")
            self.record.note(len(b.move_stack), f"draw claimed ({why})")
            return "1/2-1/2", why
        if material(b, not self.human) < material(b, self.human):
            self.say("the model accepts the draw")
            self.record.note(len(b.move_stack), "draw agreed")
            return "1/2-1/2", "draw agreed"
        self.say("the model declines the draw")
        return None

    # -- the end -----------------------------------------------------------------------------
    def pgn(self, result: str, reason: str = "") -> chess.pgn.Game:
        """The game so far as PGN, with the model's prompt and sampling settings in the headers."""
        game = chess.pgn.Game.from_board(self.board)
        m, s = self.model.prompted, self.model.sampling
        model_name = f"chessdt {m.policy.model_id}"
        h = game.headers
        h["Event"] = "chessdt terminal game"
        h["Site"] = "chessdt play"
        h["Date"] = self._started.strftime("%Y.%m.%d")
        h["Round"] = "-"
        h["White"] = model_name if self.human == chess.BLACK else "Human"
        h["Black"] = model_name if self.human == chess.WHITE else "Human"
        h["Result"] = result
        if self.first_rating is not None:
            h["WhiteElo" if self.human == chess.BLACK else "BlackElo"] = str(self.first_rating)
        h["ModelId"] = m.policy.model_id
        h["ModelRating"] = str(self.first_rating)
        h["ModelOpponentRating"] = str(m.opponent_rating if m.opponent_rating is not None else self.first_rating)
        h["Temperature"] = str(s.temperature)
        h["TopP"] = str(s.top_p)
        h["Guidance"] = str(s.guidance)
        if self.seed is not None:
            h["Seed"] = str(self.seed)
        h["ModelIllegalMoves"] = f"{self.model.stats.illegal}/{self.model.stats.moves}"
        if reason:
            h["Termination"] = reason
        nodes = [game, *game.mainline()]
        for ply, texts in self.record.comments.items():
            if ply < len(nodes):
                nodes[ply].comment = "; ".join(texts)
        return game

    def _save(self, path: Path, result: str, reason: str = "") -> str | None:
        """Append the game to the PGN file `path` (as chess GUIs do; a later save of this game replaces
        only its own earlier copy at the file's end); its text, or None with a message on failure."""
        text = str(self.pgn(result, reason)) + "\n"
        try:
            with open(path, "ab") as f:  # never truncates what the file held before this game
                start = self._starts.setdefault(path.resolve(), f.tell())
                f.truncate(start)
                f.write((b"\n" if start else b"") + text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self.say(f"could not save {path}: {e.strerror or e}")
            return None
        return text

    def _finish(self, result: str, reason: str) -> GameSummary:
        stats = self.model.stats
        text = self._save(self.pgn_path, result, reason)
        lines = [f"Game over: {result} ({reason})" if result != "*" else f"Game left unfinished ({reason})"]
        lines.append(f"model illegal moves: {stats.illegal} of {stats.moves}"
                     + (" (each replaced by its most likely legal move)" if stats.illegal else ""))
        if text is not None:
            lines.append(f"PGN saved to {self.pgn_path}")
        for line in lines:
            self._try_say(line)
        return GameSummary(result=result, reason=reason, pgn_path=self.pgn_path if text is not None else None,
                           model_moves=stats.moves, model_illegal=stats.illegal, pgn=text or "")


def default_pgn_path(now: dt.datetime | None = None) -> Path:
    """Where a game is saved when no --pgn is given: chessdt-game-YYYYMMDD-HHMMSS.pgn here."""
    return Path(f"chessdt-game-{(now or dt.datetime.now()):%Y%m%d-%H%M%S}.pgn")
