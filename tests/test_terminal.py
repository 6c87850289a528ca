"""The terminal game: game ends, and whole games (in memory and in a pty)."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import chess
import chess.pgn
import pexpect
import pytest

from chessdt.play.terminal import TerminalGame, ending
from chessdt.play.players import ModelPlayer
from chessdt.play.policy import ModelPolicy, Prompted, Sampling

START = chess.STARTING_FEN
MATE_IN_ONE = "7k/8/5K2/8/8/8/8/6Q1 w - - 0 1"  # Qg7#


# -- game ends -----------------------------------------------------------------------------------------
def _played(*sans: str, fen: str = START) -> chess.Board:
    board = chess.Board(fen)
    for san in sans:
        board.push_san(san)
    return board


@pytest.mark.parametrize("board, expected", [
    (_played("f3", "e5", "g4", "Qh4"), ("0-1", "checkmate")),
    (chess.Board("k7/8/1Q6/8/8/8/8/7K b - - 0 1"), ("1/2-1/2", "stalemate")),
    (_played("Nf3", "Nf6", "Ng1", "Ng8", "Nf3", "Nf6", "Ng1", "Ng8"), ("1/2-1/2", "threefold repetition")),
    (chess.Board("k7/8/8/8/8/8/7R/K7 b - - 100 80"), ("1/2-1/2", "fifty-move rule")),
    (chess.Board("k7/8/8/8/8/8/8/KN6 b - - 0 1"), ("1/2-1/2", "insufficient material")),
    (_played("e4", "e5"), None),
])
def test_ending(board: chess.Board, expected: tuple[str, str] | None) -> None:
    assert ending(board) == expected


# -- whole games in memory ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy(tiny_checkpoint: Path) -> ModelPolicy:
    return ModelPolicy.from_checkpoint(tiny_checkpoint)


def _game(policy: ModelPolicy, lines: list[str], tmp_path: Path, *, human: chess.Color = chess.WHITE,
          fen: str = START, rating: int = 1500) -> tuple[TerminalGame, str]:
    model = ModelPlayer(Prompted(policy, rating, None, Sampling(temperature=1.0, top_p=0.9)), seed=1)
    out = io.StringIO()
    game = TerminalGame(model, human, inp=io.StringIO("".join(f"{x}\n" for x in lines)), out=out,
                        pgn_path=tmp_path / "game.pgn", board=chess.Board(fen), seed=1)
    game.summary = game.run()  # type: ignore[attr-defined]
    return game, out.getvalue()


def _read_pgn(path: Path) -> chess.pgn.Game:
    with open(path, encoding="utf-8") as f:
        game = chess.pgn.read_game(f)
    assert game is not None and not game.errors
    return game


@pytest.mark.parametrize("fen, move, result, reason", [
    (MATE_IN_ONE, "qg7", "1-0", "checkmate"),
    ("k7/8/1Q6/8/8/8/8/7K w - - 0 1", "Kg1", "1/2-1/2", "stalemate"),
    ("k7/8/8/8/8/8/1r6/K7 w - - 0 1", "Kxb2", "1/2-1/2", "insufficient material"),
    ("k7/8/8/8/8/8/8/K6R w - - 98 80", "Rh2", "1/2-1/2", "fifty-move rule"),
])
def test_game_ends_by_rule(policy: ModelPolicy, tmp_path: Path, fen: str, move: str, result: str,
                           reason: str) -> None:
    game, out = _game(policy, [move], tmp_path, fen=fen)
    assert f"Game over: {result} ({reason})" in out
    saved = _read_pgn(tmp_path / "game.pgn")
    assert saved.headers["Result"] == result and saved.headers["Termination"] == reason
    assert saved.headers["FEN"] == fen
    assert [m.uci() for m in saved.mainline_moves()] == [chess.Board(fen).parse_san(move.capitalize()).uci()]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_game_with_commands(policy: ModelPolicy, in_tmp: Path) -> None:
    lines = ["help", "e9", "Ke2", "hint", "e4", "rating 99", "rating x", "rating 2000", "d4", "undo", "flip",
             "Nf3", "save mid", "draw", "quit", "e4"]
    game, out = _game(policy, lines, in_tmp)
    assert "undo " in out and "not a move or a command: 'e9'" in out
    assert "illegal move: no white king can reach e2" in out
    hint = next(line for line in out.splitlines() if "model at 1500 would play:" in line)
    percents = [float(w.rstrip("%")) for w in hint.split(":", 1)[1].split() if w.endswith("%")]
    assert len(percents) == 5 and percents == sorted(percents, reverse=True) and sum(percents) <= 100
    assert "rating must be between 400 and 3199" in out and "rating needs a whole number" in out
    assert "the model now plays at 2000" in out and "took back 2 half-moves" in out
    assert "    h  g  f  e  d  c  b  a" in out  # flipped
    assert "the model declines the draw" in out  # equal material
    assert game.summary.result == "*" and game.summary.reason == "quit"  # type: ignore[attr-defined]
    # 'save mid' wrote mid.pgn (in the cwd), and the save on quit went there too
    assert game.summary.pgn_path == Path("mid.pgn") and not (in_tmp / "game.pgn").exists()  # type: ignore[attr-defined]
    saved = _read_pgn(in_tmp / "mid.pgn")
    moves = [m.uci() for m in saved.mainline_moves()]
    assert moves[0] == "e2e4" and moves[2] == "g1f3" and len(moves) == 4
    h = saved.headers
    assert (h["White"], h["Black"], h["BlackElo"], h["ModelRating"]) == ("Human", f"chessdt {policy.model_id}",
                                                                          "1500", "1500")
    assert (h["Temperature"], h["TopP"], h["Guidance"], h["Seed"], h["Result"]) == ("1.0", "0.9", "0.0", "1", "*")
    assert h["ModelIllegalMoves"] == f"{game.model.stats.illegal}/{game.model.stats.moves}"
    # the rating change survived the takeback: noted after the model's first reply
    nodes = [saved, *saved.mainline()]
    assert [n.comment for n in nodes] == ["", "", "model rating 2000 from here", "", ""]
    assert game.model.prompted.rating == 2000


def test_human_black_resigns_and_illegal_count(policy: ModelPolicy, tmp_path: Path) -> None:
    game, out = _game(policy, ["e5", "d5", "resign"], tmp_path, human=chess.BLACK)
    stats = game.model.stats
    assert stats.moves >= 2 and out.count("model plays") == stats.moves
    assert f"model illegal moves: {stats.illegal} of {stats.moves}" in out
    assert out.count("its sampled move was illegal") == stats.illegal
    saved = _read_pgn(tmp_path / "game.pgn")
    assert saved.headers["Result"] == "1-0" and saved.headers["White"] == f"chessdt {policy.model_id}"
    assert saved.headers["WhiteElo"] == "1500" and saved.end().comment == "Black resigns"


def test_end_of_input_saves(policy: ModelPolicy, tmp_path: Path) -> None:
    game, out = _game(policy, ["e4"], tmp_path)
    assert "Game left unfinished (end of input)" in out and f"PGN saved to {tmp_path / 'game.pgn'}" in out
    assert len(list(_read_pgn(tmp_path / "game.pgn").mainline_moves())) == 2


def test_unwritable_pgn_is_reported(policy: ModelPolicy, tmp_path: Path) -> None:
    model = ModelPlayer(Prompted(policy, 1500))
    out = io.StringIO()
    game = TerminalGame(model, chess.WHITE, inp=io.StringIO("save /nonexistent/dir/x.pgn\n"), out=out,
                        pgn_path=tmp_path / "missing" / "g.pgn")
    summary = game.run()
    assert summary.pgn_path is None and out.getvalue().count("could not save") == 2


# -- a real terminal -------------------------------------------------------------------------------------
def _spawn(args: list[str], cwd: Path, env: dict[str, str]) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "chessdt", *args], cwd=str(cwd), env={**os.environ, **env},
                         encoding="utf-8", timeout=90, dimensions=(50, 100))


@pytest.mark.slow
def test_terminal_game_in_a_pty(tiny_checkpoint: Path, tmp_path: Path) -> None:
    child = _spawn(["play", str(tiny_checkpoint), "--seed", "5", "--pgn", "game.pgn", "--rating", "1700"],
                   tmp_path, {"NO_COLOR": "1", "TERM": "xterm"})
    child.expect_exact("white to move> ")
    assert "\x1b[48;5;" not in child.before  # NO_COLOR
    for bad, why in (("e9", "not a move or a command"), ("Ke2", "no white king can reach e2"),
                     ("e2e5", "the pawn on e2 cannot go to e5"), ("rating 5", "rating must be between")):
        child.sendline(bad)
        child.expect_exact(why)
        child.expect_exact("white to move> ")
    child.sendline("hint")
    child.expect(r"model at 1700 would play: (\S+ \d+\.\d%\s+){5}")
    child.expect_exact("white to move> ")
    child.sendline("E4")
    child.expect(r"model plays (\S+) \(p=")
    child.expect_exact("white to move> ")
    child.sendline("undo")
    child.expect_exact("took back 2 half-moves")
    child.expect_exact("white to move> ")
    child.sendline("nf3+")
    child.expect_exact("model plays")
    child.expect_exact("white to move> ")
    child.sendline("save mid.pgn")
    child.expect_exact("saved to mid.pgn")
    child.expect_exact("white to move> ")
    child.sendline("resign")
    child.expect_exact("Game over: 0-1 (resignation)")
    child.expect(r"model illegal moves: \d+ of 2")
    child.expect_exact("PGN saved to mid.pgn")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in child.before
    game = _read_pgn(tmp_path / "mid.pgn")
    assert game.headers["Result"] == "0-1" and game.headers["ModelRating"] == "1700"
    assert game.headers["Termination"] == "resignation" and game.headers["Seed"] == "5"
    moves = list(game.mainline_moves())
    assert len(moves) == 2 and moves[0] == chess.Move.from_uci("g1f3")
    assert not (tmp_path / "game.pgn").exists()  # the save command redirected later saves


@pytest.mark.slow
def test_ctrl_c_saves_and_colour(tiny_checkpoint: Path, tmp_path: Path) -> None:
    env = {"TERM": "xterm-256color"}
    child = _spawn(["play", str(tiny_checkpoint), "--color", "black", "--seed", "2", "--pgn", "g.pgn"], tmp_path,
                   {**env, "NO_COLOR": ""})
    child.expect_exact("black to move> ")
    assert "\x1b[48;5;" in child.before and "h  g  f  e  d  c  b  a" in child.before  # colour, flipped
    child.sendline("e5")
    child.expect_exact("black to move> ")
    child.sendintr()
    child.expect_exact("Game left unfinished (interrupted)")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before
    game = _read_pgn(tmp_path / "g.pgn")
    assert game.headers["Result"] == "*" and len(list(game.mainline_moves())) == 3
    assert game.headers["White"].startswith("chessdt ")
