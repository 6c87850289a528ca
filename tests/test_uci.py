"""The UCI front end: protocol lines in memory, FEN positions, and a real game against Stockfish."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import chess
import chess.engine
import pytest
import torch

from chessdt.stockfish.engine import find_stockfish
from chessdt.errors import UserError
from chessdt.play.players import ModelPlayer
from chessdt.play.policy import ModelPolicy, Prompted, Sampling
from chessdt.play.uci import UciEngine, engine_name
from chessdt.play.uci_model import ModelSide


@pytest.fixture(scope="module")
def policy(tiny_checkpoint: Path) -> ModelPolicy:
    return ModelPolicy.from_checkpoint(tiny_checkpoint)


def _side(engine: UciEngine) -> ModelSide:
    """The model's side of an in-process engine, once it has done everything asked of it."""
    assert engine.ready(60) and engine.side is not None
    return engine.side


def _talk(engine: UciEngine, *lines: str) -> list[str]:
    """Send lines; the engine's answers to them."""
    out = engine.out
    assert isinstance(out, io.StringIO)
    start = len(out.getvalue())
    for line in lines:
        assert engine.handle(line)
        assert engine.wait(timeout=60)  # a go's bestmove comes from a worker thread
    return out.getvalue()[start:].splitlines()


def test_handshake_lists_options(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "uci", "isready")
    assert lines[0] == f"id name chessdt {policy.model_id} (no value head, weights {policy.weights_id[:8]})"
    assert lines[-2:] == ["uciok", "readyok"]
    options = [ln.removeprefix("option name ").split(" type ")[0] for ln in lines if ln.startswith("option name ")]
    assert options == ["Rating", "OpponentRating", "Temperature", "TopP", "Guidance", "Seed", "Threads", "Hash",
                       "Move Overhead", "Ponder", "UCI_LimitStrength", "UCI_Elo", "UCI_ShowWDL", "SyzygyPath"]
    assert "option name Rating type spin default 1500 min 400 max 3199" in lines
    assert not engine.handle("quit")


def test_setoption(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    assert _talk(engine, "setoption name Rating value 1800", "setoption name opponentrating value 1200",
                 "setoption name Temperature value 0.5", "setoption name TopP value 0.9",
                 "setoption name Guidance value 1.5", "setoption name Seed value 7") == []
    assert engine.model == Prompted(policy, 1800, 1200, Sampling(temperature=0.5, top_p=0.9, guidance=1.5))
    assert _side(engine).player.prompted == engine.model and engine.seed == 7
    assert _talk(engine, "setoption name OpponentRating value 0") == []
    assert engine.model.opponent_rating is None  # 0 = the same as Rating
    bad = _talk(engine, "setoption name Rating value high", "setoption name Rating value 99",
                "setoption name TopP value 0", "setoption name Temperature value nan", "setoption name Hashes value 16",
                "setoption Rating 1500", "setoption name Rating")
    assert len(bad) == 7 and all(ln.startswith("info string ") for ln in bad)
    assert "must be between 400 and 3199" in bad[1] and "unknown option 'Hashes'" in bad[4]
    assert engine.model.rating == 1800  # unchanged by the bad lines


def test_malformed_lines_never_crash(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    _talk(engine, "position startpos moves e2e4")
    garbage = ["", "   ", "xyzzy", "position", "position startpos moves e2e5", "position fen",
               "position fen 8/8/8 w - - 0 1", "position fen 8/8/8/8/8/8/8/8 w - - 0 1",
               "position startpos moves e2e4 e2e4", "go depth", "go wtime x btime 10", "go bogus",
               "go searchmoves zz99", "setoption name", "stop", "ponderhit", "position startpos junk"]
    for line in garbage:
        answer = _talk(engine, line)
        if line.strip() in ("", "stop", "ponderhit"):
            assert answer == [], line
        else:
            assert any(a.startswith("info string ") for a in answer), line
    assert _talk(engine, "isready") == ["readyok"]
    assert engine.board == chess.Board()  # the last valid position (`startpos junk` still set it)


def test_rejected_position_is_not_answered_for(policy: ModelPolicy) -> None:
    """After a rejected `position`, go must not answer for the previous position (issue 14, case 7)."""
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "position startpos moves e2e4", "position startpos moves e2e4 e2e4", "go movetime 50")
    assert lines[-1] == "bestmove 0000" and engine.board is None
    assert any("no valid position" in ln for ln in lines)
    lines = _talk(engine, "position startpos moves e2e4", "go movetime 5000")
    assert chess.Move.from_uci(lines[-1].split()[1]) in engine.board.legal_moves


def test_out_of_range_values_are_rejected_when_set(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    for line in ("setoption name Temperature value 1e-300", "setoption name Temperature value 1e300",
                 "setoption name Threads value 0", "setoption name Move Overhead value -5",
                 "setoption name UCI_Elo value 5000", "setoption name UCI_LimitStrength value maybe"):
        answer = _talk(engine, line)
        assert len(answer) == 1 and "ignored: must" in answer[0], line
    assert engine.model.sampling.temperature == 1.0 and engine.threads == 1 and engine.move_overhead == 30
    assert _talk(engine, "setoption name Temperature value 0") == []
    assert engine.model.sampling.temperature == 0.0


@pytest.mark.parametrize("failure", ["nan_weights", "sampling"])
def test_every_go_ends_in_a_legal_bestmove(policy: ModelPolicy, failure: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing model still answers every go with a legal move (issue 14, case 7)."""
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    if failure == "nan_weights":
        broken = ModelPolicy(policy.model, policy.vocab, policy.cfg)
        broken.model = type(policy.model)(policy.cfg.model, policy.vocab.size, policy.vocab).eval()
        with torch.no_grad():
            for p in broken.model.parameters():
                p.fill_(float("nan"))
        engine = UciEngine(Prompted(broken, 1500), io.StringIO())
    else:
        def fail(*args: object, **kw: object) -> None:
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        monkeypatch.setattr("chessdt.play.policy.Sampling.draw", fail)
    for moves in ("", " moves e2e4", " moves e2e4 e7e5 g1f3"):
        lines = _talk(engine, f"position startpos{moves}", "go movetime 60000")
        board = engine.board
        assert board is not None and lines[-1].startswith("bestmove ")
        assert chess.Move.from_uci(lines[-1].split()[1]) in board.legal_moves
        assert any(("sampling failed" in ln) or ("failed" in ln) for ln in lines), lines


def test_time_budget() -> None:
    from chessdt.play.uci_time import Go, budget_ms, parse_go

    go, complaints = parse_go("wtime 10000 btime 20000 winc 100 binc 200 movestogo 5".split(), chess.Board())
    assert complaints == [] and go == Go(wtime=10000, btime=20000, winc=100, binc=200, movestogo=5)
    assert budget_ms(go, chess.WHITE, 50) == pytest.approx(10000 / 5 + 100 - 50)
    assert budget_ms(go, chess.BLACK, 0) == pytest.approx(20000 / 5 + 200)
    assert budget_ms(Go(wtime=1000, winc=5000), chess.WHITE, 0) == pytest.approx(500)  # at most half the clock
    assert budget_ms(Go(wtime=10, movetime=100), chess.WHITE, 30) == pytest.approx(10 / 30 / 2)  # overhead: half at most
    assert budget_ms(Go(movetime=100, wtime=60_000), chess.WHITE, 30) == 70  # the tighter limit wins
    assert budget_ms(Go(), chess.WHITE, 30) is None and budget_ms(Go(hold=True), chess.WHITE, 30) is None


def _slow_model(engine: UciEngine, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Warm the engine up, then make its model wait for the event returned before it plays."""
    _talk(engine, "isready")
    release = threading.Event()
    player = _side(engine).player
    real = player.play

    def slow(board: chess.Board) -> chess.Move:
        release.wait(60)
        return real(board)

    monkeypatch.setattr(player, "play", slow)
    return release


def test_late_model_answers_with_a_legal_move_on_time(policy: ModelPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline (or stop) answers for a model that is still thinking: a legal move, once."""
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    release = _slow_model(engine, monkeypatch)
    lines = _talk(engine, "position startpos moves d2d4", "go movetime 40")  # overhead 30: 10 ms budget
    assert sum(ln.startswith("bestmove") for ln in lines) == 1
    assert chess.Move.from_uci(lines[-1].split()[1]) in engine.board.legal_moves
    assert "the time budget ran out before the model answered" in lines[-2]
    played = chess.Move.from_uci(lines[-1].split()[1])
    lines = _talk(engine, "go infinite", "stop")
    assert sum(ln.startswith("bestmove") for ln in lines) == 1 and "stop came" in lines[-2]
    release.set()
    assert _talk(engine, "isready") == ["readyok"]  # the model is done (the second search skipped), nothing more sent
    # The model is fed the fallback move that was played, not its own late one.
    session = _side(engine).player._session
    assert session is not None and session.boards[0].move_stack[-1] == played


def test_the_played_move_is_fed_to_the_model_off_the_clock(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "position startpos moves e2e4", "go movetime 60000")
    player = _side(engine).player
    board = chess.Board()
    board.push_uci("e2e4")
    board.push_uci(lines[-1].split()[1])
    session = player._session
    assert session is not None and session.boards[0].move_stack == board.move_stack
    board.push_uci("d2d4")
    reference = torch.softmax(policy.logits_full(board, policy.player_prompt(chess.BLACK, 1500, None)), -1)
    assert torch.allclose(player.distribution(board, temperature=1.0), reference, atol=1e-5)
    assert player._session is session  # continued, not re-encoded


def test_limit_strength_and_threads(policy: ModelPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    before = torch.get_num_threads()
    applied: list[tuple[int, int]] = []  # (thread, count): torch's thread count belongs to the thread that sets it
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (applied.append((threading.get_ident(), n)), real(n))[1])
    try:
        assert _talk(engine, "setoption name Threads value 2", "setoption name Hash value 256",
                     "setoption name Move Overhead value 100", "setoption name UCI_Elo value 1100") == []
        _side(engine)
        assert engine.move_overhead == 100
        # applied where the model computes (its own thread here; its process under `chessdt uci`)
        assert applied and applied[-1][1] == 2 and applied[-1][0] != threading.get_ident()
        assert engine.model.rating == 1500  # UCI_Elo counts only with UCI_LimitStrength on
        _talk(engine, "setoption name UCI_LimitStrength value true")
        assert engine.model.rating == 1100 and _side(engine).player.prompted == engine.model
        _talk(engine, "setoption name Rating value 2000")
        assert engine.model.rating == 1100
        _talk(engine, "setoption name UCI_LimitStrength value false")
        side = _side(engine)
        assert engine.model.rating == 2000 and side.player.prompted.rating == 2000
        assert side.ponderer.prompted.rating == 2000 and side.ponderer.prompted.sampling.temperature == 0
    finally:
        torch.set_num_threads(before)


def test_ponder_move_is_the_most_likely_reply(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500, 1200, Sampling(temperature=0.0)), io.StringIO())
    lines = _talk(engine, "position startpos moves e2e4", "go movetime 60000")
    assert len(lines[-1].split()) == 2  # no ponder move unless the GUI set Ponder
    lines = _talk(engine, "setoption name Ponder value true", "position startpos moves e2e4", "go movetime 60000")
    words = lines[-1].split()
    assert words[0] == "bestmove" and words[2] == "ponder"
    board = chess.Board()
    board.push_uci("e2e4")
    board.push_uci(words[1])
    reply = ModelPlayer(Prompted(policy, 1200, 1500), seed=0)
    probs = reply.distribution(board, temperature=1.0)
    best = max(board.legal_moves, key=lambda m: float(probs[policy.vocab.encode_move(m)]))
    assert words[3] == best.uci()


def test_position_and_go(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "ucinewgame", "position startpos moves e2e4 e7e5 g1f3", "go wtime 600000 btime 600000 winc 0")
    assert engine.board.move_stack == [chess.Move.from_uci(m) for m in ("e2e4", "e7e5", "g1f3")]
    best = chess.Move.from_uci(lines[-1].split()[1])
    assert lines[-1].startswith("bestmove ") and best in engine.board.legal_moves
    info = lines[-2].split()
    assert info[:2] == ["info", "depth"] and info[info.index("pv") + 1] == best.uci()
    p = float(info[info.index("string") + 1].removeprefix("p="))
    expected = _side(engine).player.distribution(engine.board, temperature=1.0)[policy.vocab.encode_move(best)]
    assert p == pytest.approx(float(expected), abs=1e-4)
    # searchmoves restricts the choice
    lines = _talk(engine, "go searchmoves a7a6 h7h6 movetime 60000")
    assert lines[-1].split()[:2] in (["bestmove", "a7a6"], ["bestmove", "h7h6"])


def test_go_infinite_waits_for_stop(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "position startpos", "go infinite")
    assert not any(ln.startswith("bestmove") for ln in lines)
    lines = _talk(engine, "isready")  # it waits for the model, which shows its info lines of the held search
    assert lines[-1] == "readyok" and not any(ln.startswith("bestmove") for ln in lines)
    assert engine.search is not None and engine.search.finished.wait(60)  # the model's own move, not a random one
    stop = _talk(engine, "stop")
    assert len(stop) == 1 and stop[0].startswith("bestmove ")
    assert _talk(engine, "stop") == []
    lines = _talk(engine, "go ponder")
    assert not any(ln.startswith("bestmove") for ln in lines)
    assert engine.search is not None and engine.search.finished.wait(60)
    assert _talk(engine, "ponderhit")[0].startswith("bestmove ")


def test_game_over_position(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "position fen 7k/6Q1/6K1/8/8/8/8/8 b - - 0 1", "go")
    assert lines[-1] == "bestmove 0000"


def test_fen_positions_start_from_the_fen(policy: ModelPolicy) -> None:
    """A FEN is the model's starting board: its inputs are that position, then the moves after it."""
    fen = "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"
    player = ModelPlayer(Prompted(policy, 1500), seed=0)

    def reference(board: chess.Board) -> torch.Tensor:
        prompt = policy.player_prompt(board.turn, 1500, None)
        return torch.softmax(policy.logits_full(board, prompt), -1)

    board = chess.Board(fen)
    assert torch.allclose(player.distribution(board, temperature=1.0), reference(board), atol=1e-5)
    board.push_san("Bc4")
    board.push_san("Nf6")
    assert torch.allclose(player.distribution(board, temperature=1.0), reference(board), atol=1e-5)
    # Same side to move and no moves, but another start: must not reuse the FEN game's cache.
    start = chess.Board()
    assert torch.allclose(player.distribution(start, temperature=1.0), reference(start), atol=1e-5)
    assert not torch.allclose(reference(chess.Board(fen)), reference(start), atol=1e-5)


@pytest.fixture(scope="module")
def stockfish() -> Path:
    try:
        return find_stockfish()
    except UserError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_full_game_against_stockfish(tiny_checkpoint: Path, stockfish: Path) -> None:
    board = chess.Board()
    clock = chess.engine.Limit(white_clock=60, black_clock=60, white_inc=1, black_inc=1)
    probabilities = []
    with chess.engine.SimpleEngine.popen_uci([sys.executable, "-m", "chessdt", "uci", str(tiny_checkpoint)],
                                             timeout=120) as model, \
            chess.engine.SimpleEngine.popen_uci(str(stockfish)) as sf:
        assert model.id["name"] == engine_name(ModelPolicy.from_checkpoint(tiny_checkpoint), 4)
        assert " (step 4, no value head, weights " in model.id["name"]
        assert {"Rating", "OpponentRating", "Temperature", "TopP", "Seed", "Guidance"} <= set(model.options)
        model.configure({"Rating": 1800, "OpponentRating": 1400, "Temperature": "0.8", "TopP": "0.95", "Seed": 3})
        sf.configure({"Threads": 1, "Hash": 16})
        # Full-strength Stockfish on a tiny node budget: it mates a barely trained model quickly.
        while not board.is_game_over(claim_draw=True) and len(board.move_stack) < 400:
            if board.turn == chess.WHITE:
                result = model.play(board, clock, info=chess.engine.INFO_ALL)
                assert result.move in board.legal_moves and result.info["pv"] == [result.move]
                probabilities.append(float(result.info["string"].removeprefix("p=")))
            else:
                result = sf.play(board, chess.engine.Limit(nodes=200))
            assert result.move is not None
            board.push(result.move)
        model.ping()  # still alive after a whole game
    assert board.is_game_over(claim_draw=True), "400 plies without an end"
    assert len(probabilities) == (len(board.move_stack) + 1) // 2
    assert all(0.0 < p <= 1.0 for p in probabilities)


# lichess-bot's config.yml.default `uci_options` (lichess-bot-devs/lichess-bot, August 2026)
LICHESS_BOT_DEFAULTS = {"Move Overhead": 100, "Threads": 4, "Hash": 512, "SyzygyPath": "./syzygy/", "UCI_ShowWDL": True}


def test_real_client_with_lichess_bot_defaults(tiny_checkpoint: Path) -> None:
    """python-chess's engine API (what lichess-bot uses) with lichess-bot's default uci_options, our
    README block merged over them: python-chess refuses an undeclared option (issue 25)."""
    board = chess.Board()
    with chess.engine.SimpleEngine.popen_uci([sys.executable, "-m", "chessdt", "uci", str(tiny_checkpoint)],
                                             timeout=120) as engine:
        assert {"Threads", "Hash", "Move Overhead", "UCI_LimitStrength", "UCI_Elo", "Ponder"} <= set(engine.options)
        assert set(LICHESS_BOT_DEFAULTS) <= set(engine.options)  # a model without a value head too
        assert engine.options["Threads"].default == 1 and engine.options["UCI_Elo"].max == 3199
        engine.configure(LICHESS_BOT_DEFAULTS)
        engine.configure({"Threads": 1, "Hash": 512, "Move Overhead": 100,
                          "UCI_LimitStrength": True, "UCI_Elo": 1300, "Temperature": "1e-300"})
        for _ in range(6):
            # a generous clock: the values asserted here must not depend on how busy the machine is
            result = engine.play(board, chess.engine.Limit(white_clock=600, black_clock=600), ponder=True,  # sets Ponder
                                 info=chess.engine.INFO_ALL)
            assert result.move in board.legal_moves
            board.push(result.move)
            assert result.ponder is None or result.ponder in board.legal_moves
            if result.ponder is None:
                assert board.is_game_over()
                break
        engine.ping()


def test_polyglot_xboard_adapter(tiny_checkpoint: Path) -> None:
    """Through polyglot (Debian's UCI-to-xboard adapter): the features handshake, then a move."""
    polyglot = shutil.which("polyglot") or ("/usr/games/polyglot" if Path("/usr/games/polyglot").is_file() else None)
    if polyglot is None:
        pytest.skip("polyglot not installed (apt-get install polyglot)")
    # polyglot splits -ec on spaces and does not understand quotes
    if " " in sys.executable or " " in str(tiny_checkpoint):
        pytest.skip("polyglot cannot start a command with spaces in its paths")
    command = f"{sys.executable} -m chessdt uci {tiny_checkpoint}"
    proc = subprocess.Popen([polyglot, "-noini", "-ec", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=tiny_checkpoint.parent)
    assert proc.stdin is not None and proc.stdout is not None

    def until(prefix: str) -> list[str]:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line.strip())
            if line.startswith(prefix):
                return seen
        raise AssertionError(f"polyglot ended before {prefix!r}: {seen[-5:]}")

    try:
        proc.stdin.write("xboard\nprotover 2\n")
        proc.stdin.flush()
        features = until("feature done=1")
        assert 'feature option="UCI_Elo -spin 1500 400 3199"' in features
        proc.stdin.write("new\nlevel 0 10 0\nusermove e2e4\n")
        proc.stdin.flush()
        move = until("move ")[-1].split()[1]
        board = chess.Board()
        board.push_uci("e2e4")
        assert chess.Move.from_uci(move) in board.legal_moves
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_answers_at_end_of_input_and_leaves_no_thread(policy: ModelPolicy) -> None:
    """`echo go | chessdt uci`: the bestmove still comes, and no thread runs the model after serve
    returns (exiting under a running torch op aborts the process)."""
    from chessdt.play.uci import serve

    before = torch.get_num_threads()
    threads = set(threading.enumerate())
    out = io.StringIO()
    try:
        engine = serve(Prompted(policy, 1500), io.StringIO("position startpos moves g2g4\ngo movetime 600000\n"), out)
    finally:
        torch.set_num_threads(before)
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("bestmove ") and engine.board is not None
    assert chess.Move.from_uci(last.split()[1]) in engine.board.legal_moves
    assert not any(t.name.startswith("chessdt-") and t.is_alive() for t in set(threading.enumerate()) - threads)


# -- the value head's score ------------------------------------------------------------------------
def _own_wdl(policy: ModelPolicy, board: chess.Board, rating: int) -> tuple[float, float, float]:
    """The value head's W/D/L for the side to move, computed here from the whole game (no cache)."""
    from chessdt.tokenizer import position_inputs

    prompt = policy.player_prompt(board.turn, rating, None)
    tokens, boards, plies = (torch.as_tensor(a)[None] for a in position_inputs(prompt, board, policy.context,
                                                                               policy.vocab))
    with torch.no_grad():
        _, value = policy.model(tokens, boards, plies, with_value=True)
    win, draw, loss = torch.softmax(value[0, -1].float(), -1).tolist()
    return win, draw, loss


def test_no_value_head_no_score_and_no_wdl_option(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "uci", "position startpos", "go movetime 5000")
    assert "option name UCI_ShowWDL type check default true" in lines  # declared for GUIs that set it: a no-op
    assert not any(" score " in ln for ln in lines) and lines[-1].startswith("bestmove ")


def test_value_head_score_through_python_chess(tiny_value_checkpoint: Path) -> None:
    """python-chess's engine API driving `chessdt uci`: it parses `score cp` and `wdl`, and both are
    the value head's prediction for the position searched, from the side to move."""
    from chessdt.rules import wdl_score, score_cp

    policy = ModelPolicy.from_checkpoint(tiny_value_checkpoint)
    board = chess.Board()
    seen = []
    with chess.engine.SimpleEngine.popen_uci([sys.executable, "-m", "chessdt", "uci", str(tiny_value_checkpoint)],
                                             timeout=120) as engine:
        assert engine.options["UCI_ShowWDL"].default is True
        engine.configure({"Rating": 1700})
        for _ in range(4):
            own = _own_wdl(policy, board, 1700)
            result = engine.play(board, chess.engine.Limit(white_clock=600, black_clock=600), info=chess.engine.INFO_ALL)
            assert result.move in board.legal_moves
            wdl, score = result.info["wdl"], result.info["score"]
            assert wdl.turn == board.turn and score.turn == board.turn  # from the side to move
            w, d, loss = wdl.relative.wins, wdl.relative.draws, wdl.relative.losses
            assert w + d + loss == 1000
            assert [abs(a - 1000 * b) <= 2 for a, b in zip((w, d, loss), own)] == [True] * 3
            cp = score.relative.score()
            assert cp == score_cp(wdl_score((w / 1000, d / 1000, loss / 1000)))
            seen.append((w, d, loss))
            board.push(result.move)
        engine.configure({"UCI_ShowWDL": False})
        result = engine.play(board, chess.engine.Limit(white_clock=600, black_clock=600), info=chess.engine.INFO_ALL)
        assert "score" in result.info and "wdl" not in result.info
    # trained at a high value weight, the head says something other than uniform
    assert max(max(abs(x - 333) for x in row) for row in seen) > 10


def test_the_deadline_margin_follows_the_recent_lateness(policy: ModelPolicy) -> None:
    from chessdt.play.uci_time import LATENESS_FACTOR, MAX_MARGIN_SHARE, MIN_MARGIN_MS

    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    assert engine.deadline_margin(70) == MIN_MARGIN_MS  # nothing seen yet
    engine.lateness.extend([3.0, 21.0, 8.0])
    assert engine.deadline_margin(70) == pytest.approx(LATENESS_FACTOR * 21.0 + MIN_MARGIN_MS)  # the worst of them
    engine.lateness.append(500.0)
    assert engine.deadline_margin(70) == pytest.approx(MAX_MARGIN_SHARE * 70)  # never the whole budget
    engine.lateness.extend([1.0] * 32)  # LATENESS_WINDOW
    assert engine.deadline_margin(70) == pytest.approx(LATENESS_FACTOR * 1.0 + MIN_MARGIN_MS)  # a quiet spell forgets it


def test_a_late_model_plays_the_quick_fallback_and_times_its_deadline(policy: ModelPolicy,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    release = _slow_model(engine, monkeypatch)
    # White's queen can take an undefended rook: the fallback takes it
    fen = "4k3/8/8/3r4/8/8/8/3QK3 w - - 0 1"
    lines = _talk(engine, f"position fen {fen}", "go movetime 60")
    release.set()
    assert lines[-1] == "bestmove d1d5" and "quick fallback" in lines[-2]
    assert len(engine.lateness) == 1 and engine.lateness[0] >= 0.0
    assert engine.ready(60)


def test_a_clock_beyond_any_timer_still_answers_without_a_traceback(policy: ModelPolicy,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24, case 8: `go wtime 1e20` (as a whole number) sent a bestmove, then the deadline timer's
    thread died with OverflowError on stderr. The budget is capped at MAX_BUDGET_MS."""
    from chessdt.play.uci_time import MAX_BUDGET_MS, Go, budget_ms

    huge = 10**20
    assert budget_ms(Go(wtime=huge, btime=huge), chess.WHITE, 30) == MAX_BUDGET_MS - 30
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda a: died.append(a.exc_value))
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "position startpos", f"go wtime {huge} btime {huge}")
    assert engine.search is not None and engine.search.timer is not None
    time.sleep(0.2)  # the timer thread has started waiting (where it died)
    assert any(ln.startswith("bestmove ") for ln in lines) and died == []
    engine.search.timer.cancel()


# -- issue 25: the model's own moves, counted fallbacks, the model in its own process ----------------
def test_move_overhead_never_leaves_the_model_nothing() -> None:
    """`go movetime 100` with Move Overhead 100 (lichess-bot's default) left a 0 ms budget: every move
    was the fallback. The overhead keeps back at most half of a move's time."""
    from chessdt.play.uci_time import OVERHEAD_SHARE, Go, budget_ms, kept_back_ms

    assert OVERHEAD_SHARE == 0.5
    assert budget_ms(Go(movetime=100), chess.WHITE, 100) == 50
    assert budget_ms(Go(movetime=100), chess.WHITE, 30) == 70  # a small overhead is kept back whole
    assert budget_ms(Go(movetime=100), chess.WHITE, 10_000) == 50
    assert budget_ms(Go(wtime=3000, btime=3000, winc=100, binc=100), chess.BLACK, 100) == pytest.approx(100)
    for limit in (1, 7, 100, 433, 10_000):
        for overhead in (0, 30, 100, 10_000):
            assert kept_back_ms(limit, overhead) <= limit / 2 and budget_ms(Go(movetime=limit), chess.WHITE,
                                                                            overhead) >= limit / 2


def test_a_capped_move_overhead_is_announced_once_per_setting(policy: ModelPolicy) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "setoption name Move Overhead value 100", "position startpos", "go movetime 100")
    warnings = [ln for ln in lines if "Move Overhead 100 ms would leave the model no time" in ln]
    assert len(warnings) == 1 and "keeping back 50 ms" in warnings[0]
    lines = _talk(engine, "position startpos", "go movetime 100", "go wtime 60000 btime 60000")
    assert not any("Move Overhead" in ln for ln in lines)  # once per setting, and a long clock needs no cap
    lines = _talk(engine, "setoption name Move Overhead value 80", "position startpos", "go movetime 100")
    assert sum("Move Overhead 80 ms would leave" in ln for ln in lines) == 1
    engine.close()


def test_every_fallback_is_announced_and_counted(policy: ModelPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    lines = _talk(engine, "position startpos", "go movetime 60000")
    assert not any("fallback" in ln for ln in lines) and (engine.moves, engine.fallbacks) == (1, 0)
    release = _slow_model(engine, monkeypatch)
    lines = _talk(engine, "position startpos moves e2e4", "go movetime 40")
    assert lines[-2].startswith("info string fallback 1 of 2 moves: the time budget ran out before the model "
                                "answered; played the quick fallback move")
    lines = _talk(engine, "position startpos moves e2e4 e7e5", "go infinite", "stop")
    assert lines[-2].startswith("info string fallback 2 of 3 moves: stop came before the model answered")
    assert (engine.moves, engine.fallbacks) == (3, 2)
    release.set()
    lines = _talk(engine, "isready", "position startpos moves d2d4", "go movetime 60000")
    assert not any("fallback" in ln for ln in lines) and (engine.moves, engine.fallbacks) == (4, 2)
    engine.close()


def test_a_model_process_that_dies_gives_one_line_and_a_legal_bestmove(tiny_checkpoint: Path) -> None:
    """The model in its own process: killed in the middle of a search, the search is answered at once
    with one info line and a legal move, and the model is started again for the next one."""
    import os
    import signal

    policy = ModelPolicy.from_checkpoint(tiny_checkpoint)
    engine = UciEngine(Prompted(policy, 1500), io.StringIO(), process=True)
    try:
        assert _talk(engine, "isready") == ["readyok"]
        worker = engine.worker
        assert worker is not None and worker.pid is not None and worker.pid != os.getpid()
        os.kill(worker.pid, signal.SIGSTOP)  # frozen: the go below cannot be answered by the model
        lines = _talk(engine, "position startpos moves e2e4")
        engine.handle("go movetime 600000")
        os.kill(worker.pid, signal.SIGKILL)
        assert engine.wait(60)
        lines = _talk(engine)
        out = engine.out
        assert isinstance(out, io.StringIO)
        lines = out.getvalue().splitlines()[-2:]
        assert lines[0].startswith("info string fallback 1 of 1 moves: the model process died (exit code -9); "
                                   "starting it again; played the quick fallback move")
        board = chess.Board()
        board.push_uci("e2e4")
        assert lines[1].startswith("bestmove ") and chess.Move.from_uci(lines[1].split()[1]) in board.legal_moves
        assert engine.restarts == 1 and engine.worker is not None and engine.worker.pid != worker.pid
        lines = _talk(engine, "isready", "position startpos moves e2e4", "go movetime 600000")
        assert lines[0] == "readyok" and not any("fallback" in ln for ln in lines)
        assert lines[-2].startswith("info depth 1") and (engine.moves, engine.fallbacks) == (2, 1)
    finally:
        engine.close()


def test_a_model_that_fell_behind_skips_the_searches_already_answered(policy: ModelPolicy,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches answered by the fallback while the model was busy are not computed afterwards: that
    would only make the next move late too."""
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    release = _slow_model(engine, monkeypatch)
    side = _side(engine)
    calls = []
    think = side.think
    monkeypatch.setattr(side, "think", lambda t: calls.append(t.search) or think(t))
    for _ in range(3):
        _talk(engine, "position startpos", "go movetime 40")
    release.set()
    assert engine.ready(60) and calls == [1]  # the first, already under way; the second and third skipped
    lines = _talk(engine, "position startpos", "go movetime 60000")
    assert calls == [1, 4] and not any("fallback" in ln for ln in lines)
    engine.close()


def test_a_ponder_search_stopped_before_ponderhit_is_not_counted(policy: ModelPolicy,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """python-chess stops a ponder search whose move the opponent did not play and discards its bestmove:
    neither a move nor a fallback."""
    engine = UciEngine(Prompted(policy, 1500), io.StringIO())
    release = _slow_model(engine, monkeypatch)
    lines = _talk(engine, "position startpos moves e2e4 e7e5", "go ponder wtime 60000 btime 60000", "stop")
    assert len(lines) == 1 and lines[0].startswith("bestmove ") and (engine.moves, engine.fallbacks) == (0, 0)
    lines = _talk(engine, "position startpos moves e2e4 e7e5", "go ponder movetime 40", "ponderhit")
    assert lines[-2].startswith("info string fallback 1 of 1 moves: the time budget ran out")  # after ponderhit: a move
    release.set()
    engine.close()
