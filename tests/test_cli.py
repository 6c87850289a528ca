"""The command line through cli.main: evals and report, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chessdt import cli
from fake_uci import script


TINY = Path(__file__).resolve().parents[1] / "experiments" / "tiny.toml"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_evals_and_report(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = script(str(tmp_path))
    out = tmp_path / "run"
    sets = ["eval.ratings=1200,1800", "eval.legality_positions=100", "eval.legality_games=20",
            "eval.legality_selfplay=1", "eval.max_plies=30", "eval.ladder=random,1350", "eval.ladder_games=2",
            "eval.calibration_games=2", "eval.ladder_nodes=5", "eval.matching_games=10", "eval.cpl_positions=3",
            "eval.cpl_nodes=5", "eval.openings_games=4", "eval.openings_vs_games=2", "eval.openings_opponent=random",
            "eval.repeat_samples=10", "eval.workers=1"]
    args = [x for s in sets for x in ("--set", s)]
    eval_dir = out / "eval"
    assert cli.main(["eval", "legality", str(tiny_checkpoint), "--out", str(eval_dir), *args]) == 0
    assert "top-1 legal" in capsys.readouterr().out
    assert cli.main(["eval", "strength", str(tiny_checkpoint), "--out", str(eval_dir), "--engine", fake, "-q",
                     *args]) == 0
    printed = capsys.readouterr().out
    assert "measured Elo" in printed and "Move matching" in printed and "Centipawn loss" in printed
    assert cli.main(["eval", "openings", str(tiny_checkpoint), "--out", str(eval_dir), *args]) == 0
    assert json.loads((eval_dir / "openings.json").read_text())["rows"]
    assert cli.main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    for section in ("## Move legality", "## Strength by prompted rating", "## Opening variety"):
        assert section in text
    assert (out / "report" / "legality.png").read_bytes()[:4] == b"\x89PNG"
    # a bad override is a one-line error, not a traceback
    assert cli.main(["eval", "openings", str(tiny_checkpoint), "--set", "eval.ladder_games=3"]) == 2
    assert "must be even" in capsys.readouterr().err


def test_cli_bad_checkpoint_and_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in ((["play", str(tmp_path / "nope")], "no checkpoint found at"),
                       (["play", str(tmp_path), "--rating", "9000"], "--rating 9000: rating must be between 400 and 3199"),
                       (["uci", str(tmp_path), "--opponent-rating", "100"], "--opponent-rating 100: rating must be"),
                       (["play", str(tmp_path), "--fen", "not a fen"], "--fen 'not a fen'"),
                       (["uci", str(tmp_path), "--top-p", "0"], "--top-p 0.0: must be in (0, 1]"),
                       (["uci", str(tmp_path), "--temperature", "1e-300"], "--temperature 1e-300: must be 0 (most"),
                       (["play", str(tmp_path), "--temperature", "nan"], "--temperature nan: must be 0 (most"),
                       (["train", str(tmp_path / "none.toml")], "config file not found"),
                       (["train", str(TINY), "--set", "train"], "expected section.key=value")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("chessdt: error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert says in err, err


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _play(checkpoint: Path, pgn: Path, stdin: object, monkeypatch: pytest.MonkeyPatch) -> int:
    import sys

    monkeypatch.setattr(sys, "stdin", stdin)
    return cli.main(["play", str(checkpoint), "--pgn", str(pgn), "--seed", "3"])


def test_play_appends_to_an_existing_pgn_and_checks_it_first(tiny_checkpoint: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import io

    import chess.pgn

    collection = tmp_path / "mine.pgn"
    before = '[Event "one"]\n[Result "1-0"]\n\n1. e4 1-0\n\n[Event "two"]\n[Result "0-1"]\n\n1. d4 0-1\n'
    collection.write_text(before)
    # a mid-game save to the same file, then quit: the game is appended once, at its latest state
    assert _play(tiny_checkpoint, collection, io.StringIO(f"e4\nsave {collection}\nquit\n"), monkeypatch) == 0
    text = collection.read_text()
    assert text.startswith(before)
    games = []
    with open(collection) as f:
        while (g := chess.pgn.read_game(f)) is not None:
            games.append(g)
    assert [g.headers["Event"] for g in games[:2]] == ["one", "two"] and len(games) == 3
    assert [m.uci() for m in games[2].mainline_moves()][0] == "e2e4"
    assert games[2].headers["Termination"] == "quit"
    capsys.readouterr()
    # a --pgn that cannot be written is said before the game starts, not after it
    assert _play(tiny_checkpoint, tmp_path / "missing" / "g.pgn", io.StringIO("e4\n"), monkeypatch) == 2
    captured = capsys.readouterr()
    assert "--pgn" in captured.err and "cannot write there" in captured.err and "You play" not in captured.out


def test_sigterm_during_play_saves_the_game(tiny_checkpoint: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import os
    import signal

    import chess.pgn

    class Terminated(io.StringIO):
        """The player's input: one move, then the session is killed by SIGTERM."""

        def readline(self, *a: object) -> str:
            line = super().readline()
            if not line:
                os.kill(os.getpid(), signal.SIGTERM)
                return "quit\n"  # reached only when SIGTERM did not end the game
            return line

    got: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    try:
        code = _play(tiny_checkpoint, tmp_path / "g.pgn", Terminated("e4\n"), monkeypatch)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 128 + signal.SIGTERM and not got
    with open(tmp_path / "g.pgn") as f:
        game = chess.pgn.read_game(f)
    assert game is not None and game.headers["Termination"] == "interrupted"
    assert [m.uci() for m in game.mainline_moves()][0] == "e2e4"


@pytest.mark.parametrize("damage, message", [
    ("truncate", "model.safetensors is corrupt or truncated"),
    ("garbage", "model.safetensors is corrupt or truncated"),
    ("meta_list", "is not a chessdt checkpoint's meta.json"),
    ("meta_model", "is not a chessdt checkpoint's meta.json"),
    ("meta_step", "step missing or not int"),
    ("nan", "the weights hold NaN or infinite values (blocks.0.attn.qkv.weight)"),  # issue 24, case 8
])
def test_a_damaged_checkpoint_is_one_line_everywhere(tiny_checkpoint: Path, tmp_path: Path, damage: str,
                                                      message: str, pgn_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    weights, meta_path = ckpt / "model.safetensors", ckpt / "meta.json"
    meta = json.loads(meta_path.read_text())
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif damage == "garbage":
        weights.write_bytes(b"\xff" * 64)
    elif damage == "meta_list":
        meta_path.write_text("[1, 2, 3]")
    elif damage == "meta_model":
        meta["config"]["model"] = 7
        meta_path.write_text(json.dumps(meta))
    elif damage == "nan":
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(weights))
        tensors["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
        save_file(tensors, str(weights))
    else:
        meta["step"] = "many"
        meta_path.write_text(json.dumps(meta))
    monkeypatch.setattr(sys, "stdin", io.StringIO("uci\nquit\n"))
    for argv in (["play", str(ckpt), "--pgn", str(tmp_path / "g.pgn")], ["uci", str(ckpt)],
                 ["eval", "legality", str(ckpt), "--games", str(pgn_file), "--out", str(tmp_path / "ev")],
                 ["eval", "match", str(ckpt), "r=1200", "r=2000", "--games", "2", "--out", str(tmp_path / "ev")]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("chessdt: error: "), argv


def test_eval_games_that_cannot_be_read_are_one_line(tiny_checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import zstandard

    from conftest import random_pgn

    bad_pgn = tmp_path / "bad.pgn"  # python-chess's read_game raises IndexError on this
    bad_pgn.write_text('[Event "x"]\n\nO-O e4 Nf3 2. [FEN ""]\n % ) {c}\n')
    fake_gz = tmp_path / "fake.pgn.gz"
    fake_gz.write_text('[Event "x"]\n\n1. e4 e5 1-0\n')
    data = zstandard.ZstdCompressor().compress(random_pgn(30, seed=4).encode())
    cut_zst = tmp_path / "cut.pgn.zst"
    cut_zst.write_bytes(data[: len(data) // 2])
    for games, message in ((bad_pgn, "python-chess cannot parse the game after the 0 read so far (IndexError"),
                           (fake_gz, "cannot decompress"),
                           (cut_zst, "compressed stream is truncated after")):
        assert cli.main(["eval", "legality", str(tiny_checkpoint), "--games", str(games),
                         "--out", str(tmp_path / "ev")]) == 2, games
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith(f"chessdt: error: {games}"), err


def test_eval_output_locked_a_file_or_read_only_is_one_line(tiny_checkpoint: Path, tmp_path: Path, pgn_file: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import os

    from chessdt.files import LOCK_NAME, exclusive

    def legality(out: Path) -> int:
        return cli.main(["eval", "legality", str(tiny_checkpoint), "--games", str(pgn_file), "--out", str(out),
                         "--set", "eval.legality_positions=20", "--set", "eval.legality_selfplay=0"])

    out = tmp_path / "ev"
    with exclusive(out / LOCK_NAME, "test"):  # another eval writing there
        assert legality(out) == 2
    err = capsys.readouterr().err
    assert f"eval output {out} is in use by process {os.getpid()}" in err and not (out / "legality.json").exists()
    afile = tmp_path / "results.txt"
    afile.write_text("mine")
    assert legality(afile) == 2
    assert "is a file; give a folder" in capsys.readouterr().err and afile.read_text() == "mine"
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert legality(ro / "ev") == 2
        err = capsys.readouterr().err
        assert err.startswith("chessdt: error: Permission denied") and err.count("\n") == 1
    assert legality(out) == 0 and (out / "legality.json").is_file()


def test_a_checkpoint_never_chooses_a_program_to_run(tiny_checkpoint: Path, tmp_path: Path, pgn_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.rename(script(str(bin_dir)), bin_dir / "stockfish")  # the user's own engine, found on PATH
    marker = tmp_path / "ran"
    planted = tmp_path / "planted"  # what a downloaded checkpoint asks us to run
    planted.write_text(f"#!/bin/sh\ntouch '{marker}'\nexec '{bin_dir / 'stockfish'}' \"$@\"\n")
    planted.chmod(0o755)
    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    meta = json.loads((ckpt / "meta.json").read_text())
    # leading whitespace and odd case too: the arena strips and lower-cases a spec before it runs it
    meta["config"]["eval"].update(engine=str(planted), ladder=[f" uci={planted}@1500", "1350"],
                                  matching_references=[f"\tUCI={planted}@1500"],
                                  openings_opponent=f"uci={planted}@1500")
    (ckpt / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "ev"
    small = ["--set", "eval.ratings=1200", "--set", "eval.max_plies=20", "--set", "eval.workers=1",
             "--set", "eval.ladder_nodes=5"]
    assert cli.main(["eval", "strength", str(ckpt), "--games", str(pgn_file), "--out", str(out), "-q",
                     "--parts", "ladder", "--set", "eval.ladder_games=2", "--set", "eval.calibration_games=0",
                     *small]) == 0
    assert not marker.exists()
    ladder = json.loads((out / "strength.json").read_text())["ladder"]
    # the checkpoint's ladder names a program, so the whole field takes its default
    assert [o["label"] for o in ladder["opponents"]] == ["random", "sf-skill0", "sf-1350", "sf-1600"]
    assert cli.main(["eval", "openings", str(ckpt), "--games", str(pgn_file), "--out", str(out),
                     "--set", "eval.openings_games=2", "--set", "eval.openings_vs_games=2",
                     "--set", "eval.openings_human_games=5", *small]) == 0
    assert not marker.exists()


@pytest.mark.parametrize("argv, says", [
    (["play", "CKPT", "--guidance", "nan"], "--guidance nan: must be a number in [-100, 100]"),
    (["uci", "CKPT", "--top-p", "nan"], "--top-p nan: must be in (0, 1]"),
    (["eval", "match", "CKPT", "rating=1200,guidance=nan", "rating=1600"], "guidance must be a number in [-100"),
    (["eval", "match", "CKPT", "rating=1200,t=1e-300", "rating=1600"], "temperature must be 0 (most likely move)"),
    (["eval", "match", "CKPT", "1200", "1600", "--games", "2", "--batch-size", "0"], "batch size 0: games advanced"),
    (["eval", "legality", "CKPT", "--set", "eval.temperature=1e-300"], "eval.temperature=1e-300: must be 0"),
    (["games", "generate", "--out", "OUT/l.pgn", "--games", "2", "--hash-mb", "0"], "hash_mb and max_plies >= 1"),
    (["play", "CKPT", "--device", "cuda"], "device 'cuda': torch sees no CUDA GPU on this machine; use cpu"),
    (["eval", "match", "CKPT", "1200", "1600", "--device", "quantum"], "device 'quantum': use auto, cpu, cuda"),
    (["train", str(TINY), "--set", "train.device=cuda:0"], "device 'cuda:0': torch sees no CUDA GPU"),
    (["train", str(TINY), "--set", "model.context=3"], "model.context=3 leaves no room for moves after the 3-token"),
])
def test_values_that_crashed_later_are_one_line_errors_at_once(tiny_checkpoint: Path, tmp_path: Path, argv: list[str],
                                                               says: str, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24, cases 8 and 9: each of these was a traceback (or, for play, a game that started and then
    aborted on the model's first move); now a one-line error, exit 2, before any game or output."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    monkeypatch.chdir(tmp_path)
    argv = [str(tiny_checkpoint) if a == "CKPT" else a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("chessdt: error: ") and err.count("\n") == 1 and says in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("*.pgn")) and not (tmp_path / "runs").exists()
