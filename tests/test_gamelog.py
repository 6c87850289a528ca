"""The JSONL game log: records round-trip, a resume keeps them, a torn line or a foreign file is handled."""

from pathlib import Path

import chess
import chess.pgn
import pytest

from chessdt.errors import UserError
from chessdt.play.gamelog import GameLog, GameRecord, read_game_log


def _record(game_id: str, result: str = "1-0") -> GameRecord:
    board = chess.Board()
    for m in ["f2f3", "e7e5", "g2g4", "d8h4"]:
        board.push_uci(m)
    return GameRecord(id=game_id, white="model@1500", black="random", result=result, termination="checkmate",
                      plies=board.ply(), model_moves={"white": 2, "black": 0}, illegal={"white": 1, "black": 0},
                      masked=False, engine_restarts=0, seconds=0.5, pgn=str(chess.pgn.Game.from_board(board)),
                      tags={"rating": 1500})


def test_records_round_trip_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "games.jsonl"
    log = GameLog(path, {"run": 1, "ratings": (1500,)})
    log.add(_record("a"))
    log.add(_record("b", "0-1"))
    again = GameLog(path, {"run": 1, "ratings": [1500]})  # tuples read back as lists: the same meta
    assert again.records == {"a": _record("a"), "b": _record("b", "0-1")}
    meta, records = read_game_log(path)
    assert meta == {"run": 1, "ratings": [1500]} and [r.id for r in records] == ["a", "b"]
    assert records[1].game().end().board().is_checkmate()


def test_torn_last_line_is_dropped_and_cut(tmp_path: Path) -> None:
    path = tmp_path / "games.jsonl"
    GameLog(path, {}).add(_record("a"))
    with open(path, "a") as f:
        f.write('{"id": "b", "whi')
    log = GameLog(path, {})
    assert list(log.records) == ["a"]
    log.add(_record("c"))
    assert [r.id for r in read_game_log(path)[1]] == ["a", "c"]


def test_other_settings_or_a_foreign_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "games.jsonl"
    GameLog(path, {"nodes": 1000})
    with pytest.raises(UserError, match="differs in nodes"):
        GameLog(path, {"nodes": 2000})
    p = tmp_path / "x.jsonl"
    p.write_text('{"not": "a log"}\n')
    with pytest.raises(UserError, match="not a chessdt game log"):
        GameLog(p, {})


def test_scores_of_a_record() -> None:
    won, drawn, aborted = _record("a", "1-0"), _record("b", "1/2-1/2"), _record("c", "*")
    assert won.decided and won.score_of("model@1500") == 1.0 and won.score_of("random") == 0.0
    assert drawn.white_score == 0.5 and drawn.score_of("random") == 0.5
    assert not aborted.decided


def test_games_of_other_weights_are_set_aside_not_resumed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 24, case 4: a log was resumed by a checkpoint name (`tiny@best`) that had moved to other weights."""
    path = tmp_path / "games.jsonl"
    GameLog(path, {"nodes": 1, "weights": {"model@1500": "aaaa"}}).add(_record("a"))
    with caplog.at_level("WARNING"):
        fresh = GameLog(path, {"nodes": 1, "weights": {"model@1500": "bbbb"}})
    assert fresh.records == {}  # nothing inherited from the other weights
    aside = tmp_path / "games.other-weights-1.jsonl"
    assert read_game_log(aside) == ({"nodes": 1, "weights": {"model@1500": "aaaa"}}, [_record("a")])
    assert read_game_log(path) == ({"nodes": 1, "weights": {"model@1500": "bbbb"}}, [])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "other weights (aaaa, now bbbb)" in said[0] and aside.name in said[0]
    # a log written before weights were recorded cannot say who played: set aside too, never reused
    old = tmp_path / "old.jsonl"
    GameLog(old, {"nodes": 1}).add(_record("a"))
    assert GameLog(old, {"nodes": 1, "weights": {"model@1500": "bbbb"}}).records == {}
    assert (tmp_path / "old.other-weights-1.jsonl").is_file()
    # the same weights resume; other settings and other weights stay an error (not a silent reset)
    GameLog(path, {"nodes": 1, "weights": {"model@1500": "bbbb"}}).add(_record("b"))
    assert list(GameLog(path, {"nodes": 1, "weights": {"model@1500": "bbbb"}}).records) == ["b"]
    with pytest.raises(UserError, match="differs in nodes, weights"):
        GameLog(path, {"nodes": 2, "weights": {"model@1500": "cccc"}})
