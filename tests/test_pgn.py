import io
import random

import chess.pgn
import numpy as np
import pytest

from chessdt.config import DataConfig
from chessdt.data.archives import text_blocks
from chessdt.data.pgn import (collect_stats, condition_tokens, game_identity, header_skip_reason, in_val_split,
                              iter_games, parse_moves, parse_rating, time_control_class)
from chessdt.tokenizer import Vocab
from conftest import FIXTURES, random_pgn

VOCAB = Vocab()


def games_of(text: str) -> list:
    return list(iter_games(io.StringIO(text)))


def test_iter_games_splits_headers_and_movetext():
    games = games_of((FIXTURES / "classics.pgn").read_text())
    assert [g.headers["White"] for g in games] == ["Paul Morphy", "alice", "carol", "erin"]
    assert games[0].movetext.startswith("1. e4 e5") and games[0].movetext.endswith("Rd8# 1-0")
    assert games[1].headers["Site"] == "https://lichess.org/fixture01"


def test_games_without_blank_lines_and_with_crlf_and_escapes():
    text = ('[White "a \\"quoted\\" name"]\r\n[Result "1-0"]\r\n1. e4 e5 1-0\r\n'
            '[White "b"]\n[Result "0-1"]\n% escape line\n1. d4 0-1\n')
    games = list(iter_games(text_blocks([text.encode()])))
    assert [g.headers["White"] for g in games] == ['a "quoted" name', "b"]
    assert [g.movetext for g in games] == ["1. e4 e5 1-0", "1. d4 0-1"]


def test_time_control_and_rating_parsing():
    assert time_control_class("29+0") == "ultrabullet"
    assert time_control_class("120+1") == "bullet"  # 160 s estimated
    assert time_control_class("180+0") == "blitz"
    assert time_control_class("300+5") == "rapid"  # 500 s estimated
    assert time_control_class("900+15") == "classical"  # 1500 s
    assert time_control_class("abc") == "unknown"
    assert parse_rating("junk") is None and parse_rating("-") is None and parse_rating("2700") == 2700


def _h(**kw: str) -> dict[str, str]:
    base = {"Result": "1-0", "WhiteElo": "1500", "BlackElo": "1600", "TimeControl": "300+0",
            "Event": "Rated Blitz game", "Termination": "Normal"}
    base.update(kw)
    return {k: v for k, v in base.items() if v != "DEL"}


@pytest.mark.parametrize("headers,cfg,reason", [
    (_h(), DataConfig(), None),
    (_h(Variant="Chess960"), DataConfig(), "non_standard_variant"),
    (_h(Variant="Standard"), DataConfig(), None),
    (_h(FEN="8/8/8/8/8/8/8/K6k w - - 0 1", SetUp="1"), DataConfig(), "setup_position"),
    (_h(Result="*"), DataConfig(), "missing_result"),
    (_h(Result="DEL"), DataConfig(), "missing_result"),
    (_h(WhiteElo="?"), DataConfig(), "missing_elo"),
    (_h(WhiteElo="?"), DataConfig(require_both_elo=False), None),
    (_h(WhiteElo="900"), DataConfig(min_elo=1000), "elo_out_of_range"),
    (_h(BlackElo="2900"), DataConfig(max_elo=2800), "elo_out_of_range"),
    (_h(Event="Casual Blitz game"), DataConfig(rated_only=True), "unrated"),
    (_h(Event="Casual Blitz game"), DataConfig(), None),
    (_h(TimeControl="60+0"), DataConfig(time_controls=("blitz", "rapid")), "time_control"),
    (_h(TimeControl="DEL"), DataConfig(time_controls=("blitz",)), "time_control"),
    (_h(Termination="Abandoned"), DataConfig(), "termination"),
    (_h(), DataConfig(label="engine"), "missing_engine_rating"),
    (_h(WhiteEngineElo="1800", BlackEngineElo="1700"), DataConfig(label="engine"), None),
])
def test_header_filters(headers, cfg, reason):
    assert header_skip_reason(headers, cfg) == reason


def test_malformed_header_line_is_counted_and_skipped():
    (game,) = games_of('[White "a"]\n[Black unquoted]\n[Result "1-0"]\n\n1. e4 1-0\n')
    assert game.malformed_headers == 1
    assert header_skip_reason(game.headers, DataConfig(require_both_elo=False), game.malformed_headers) == "malformed_header"


def test_condition_prefix_for_each_label():
    h = _h(WhiteEngineElo="2100", BlackEngineElo="?")
    v = VOCAB
    assert condition_tokens(h, DataConfig(label="none"), v) == [v.bos]
    assert condition_tokens(h, DataConfig(label="elo"), v) == [v.bos, v.rating_token(1500), v.rating_token(1600)]
    assert condition_tokens(h, DataConfig(label="outcome"), v) == [v.bos, v.result_token("1-0")]
    assert condition_tokens(h, DataConfig(label="engine+outcome"), v) == [
        v.bos, v.rating_token(2100), v.unknown_rating, v.result_token("1-0")]
    custom = DataConfig(label="engine", engine_tags=("WQ", "BQ"))
    assert condition_tokens({"WQ": "1234", "BQ": "2345"}, custom, v) == [v.bos, v.rating_token(1234), v.rating_token(2345)]


def test_identity_and_split_are_stable_and_salted():
    games = games_of(random_pgn(400, seed=3))
    ids = [game_identity(g) for g in games]
    assert len(set(ids)) == 400
    cfg = DataConfig(val_fraction=0.25)
    val = [in_val_split(i, cfg) for i in ids]
    assert 60 < sum(val) < 140
    assert val == [in_val_split(i, cfg) for i in ids]
    other = [in_val_split(i, DataConfig(val_fraction=0.25, split_salt="x")) for i in ids]
    assert other != val
    # Without a URL Site, identity comes from the headers and moves.
    a, b = games_of('[Site "?"]\n[White "x"]\n\n1. e4 *\n\n[Site "?"]\n[White "x"]\n\n1. d4 *\n')
    assert game_identity(a) != game_identity(b)


BAD_GAMES = {
    "illegal_move": '[Result "1-0"]\n\n1. e4 e5 2. Ke3 1-0\n',
    "garbage_token": '[Result "1-0"]\n\n1. e4 xyz 2. Nf3 1-0\n',
    "null_move": '[Result "1-0"]\n\n1. e4 -- 2. Nf3 1-0\n',
    "zero_moves": '[Result "1-0"]\n\n1-0\n',
    "empty_movetext": '[Result "1-0"]\n\n',
}


@pytest.mark.parametrize("reader", ["rust", "python-chess"])
def test_bad_movetext_reasons_agree_between_readers(reader):
    cfg = DataConfig(reader=reader)
    games = [games_of(t)[0] for t in BAD_GAMES.values()]
    ambiguous = games_of('[Result "*"]\n\n1. Nf3 d5 2. Nc3 d4 3. e3 e5 4. Ne2 e4 5. Ng1 *\n')[0]
    parsed = parse_moves(games + [ambiguous], cfg, VOCAB)
    lengths = np.diff(parsed.offsets)
    assert parsed.errors[0] == "illegal_move"
    assert parsed.errors[1] == "illegal_move"  # an unknown token is not a move
    assert parsed.errors[2] == "illegal_move"  # a null move is not a chess move
    assert parsed.errors[3] is None and lengths[3] == 0
    assert parsed.errors[4] is None and lengths[4] == 0
    assert parsed.errors[-1] == "illegal_move"  # Ng1 with knights on e2 and f3 is ambiguous


def test_readers_agree_on_random_games_with_boards():
    games = games_of(random_pgn(150, seed=11))
    a = parse_moves(games, DataConfig(reader="rust"), VOCAB, threads=2, boards=True)
    b = parse_moves(games, DataConfig(reader="python-chess"), VOCAB, boards=True)
    assert a.errors == b.errors == [None] * 150
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.moves, b.moves)
    assert np.array_equal(a.boards, b.boards)
    # and both are exactly python-chess's moves
    for i, g in enumerate(games):
        pc = chess.pgn.read_game(io.StringIO(g.movetext))
        assert [VOCAB.decode_move(int(t)) for t in a.game_moves(i)] == list(pc.mainline_moves())


def test_ten_thousand_ply_garbage_game_is_skipped_quickly():
    garbage = " ".join(f"{i}. Nf3 Nf6 {i}. Ng1 Ng8" for i in range(1, 2501))  # legal shuffling, 10,000 plies
    junk = " ".join(random.Random(0).choice(["e4", "Qxh7", "O-O", "Kd3", "1."]) for _ in range(10_000))
    games = games_of(f'[Result "*"]\n\n{garbage} *\n\n[Result "1-0"]\n\n{junk} 1-0\n')
    for reader in ("rust", "python-chess"):
        parsed = parse_moves(games, DataConfig(reader=reader), VOCAB)
        assert parsed.errors[0] is None and parsed.offsets[1] == 10_000
        assert parsed.errors[1] == "illegal_move"


def test_stats_counts_headers_and_skip_reasons(tmp_path):
    text = (FIXTURES / "classics.pgn").read_text() + "\n" + (FIXTURES / "classics.pgn").read_text()
    text += '\n[Variant "Atomic"]\n[Result "1-0"]\n[WhiteElo "1500"]\n[BlackElo "1500"]\n\n1. e4 1-0\n'
    path = tmp_path / "s.pgn"
    path.write_text(text)
    stats = collect_stats([str(path)], DataConfig(), progress=False)
    assert stats.games == 9
    assert stats.skipped == {"duplicate": 4, "non_standard_variant": 1}
    assert stats.kept == 4
    assert stats.results["1-0"] == 5 and stats.results["1/2-1/2"] == 2
    assert stats.time_controls["blitz"] == 2 and stats.time_controls["correspondence"] == 2
    assert stats.ratings[1500] == 6 and stats.ratings[2600] == 2
    with_moves = collect_stats([str(path)], DataConfig(min_plies=10), with_moves=True, progress=False)
    assert with_moves.skipped["too_short"] == 1 and with_moves.kept == 3
    assert "games: 9" in stats.format()


def _mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        i = rng.randrange(len(chars) + 1)
        if op == 0 and chars:
            del chars[min(i, len(chars) - 1)]
        elif op == 1:
            chars.insert(i, rng.choice('[]"{}()!?+#=x-/ \n\t;%*.0123456789abcdefghKQRBNPO\x00\ufffd\u00e9'))
        elif op == 2 and chars:
            chars[min(i, len(chars) - 1)] = rng.choice("\n []{}\"1")
        elif op == 3:
            return "".join(chars[:i])  # truncation
        elif op == 4:
            lines = "".join(chars).split("\n")
            rng.shuffle(lines)
            chars = list("\n".join(lines))
        else:
            j = rng.randrange(len(chars) + 1)
            chars[i:i] = chars[j : j + rng.randint(1, 40)]  # duplicate a stretch
    return "".join(chars)


def test_fuzz_mutated_pgn_never_raises():
    rng = random.Random(1234)
    base = (FIXTURES / "classics.pgn").read_text() + "\n" + random_pgn(6, seed=50)
    cases = [_mutate(base, rng) for _ in range(1200)]
    cfg_rust = DataConfig(require_both_elo=False)
    total = 0
    for k in range(0, len(cases), 100):
        games = [g for text in cases[k : k + 100] for g in iter_games(text_blocks([text.encode("utf-8", "replace")]))]
        for g in games:
            header_skip_reason(g.headers, cfg_rust, g.malformed_headers)
            game_identity(g)
            condition_tokens(g.headers, DataConfig(label="elo+outcome+engine"), VOCAB)
        parsed = parse_moves(games, cfg_rust, VOCAB, threads=2)
        assert len(parsed.errors) == len(games)
        total += len(games)
    # the python-chess reference path on a slice of the cases
    for text in cases[:150]:
        parse_moves(games_of(text), DataConfig(reader="python-chess"), VOCAB)
    assert total > 1200


def test_readers_agree_on_uci_moves_in_movetext():
    """python-chess's own uci-moves case: UCI notation inside the movetext, between SAN games."""
    text = (random_pgn(3, seed=21) + '\n[Event "uci"]\n[Result "*"]\n\n1. e2e4 e7e5 2. g1f3 b8c6 3. f1b5 a7a6 *\n\n'
            + random_pgn(2, seed=31) + '\n[Event "bad"]\n[Result "*"]\n\n1. e2e5 *\n')
    games = games_of(text)
    a = parse_moves(games, DataConfig(reader="rust"), VOCAB, threads=2, boards=True)
    b = parse_moves(games, DataConfig(reader="python-chess"), VOCAB, boards=True)
    assert a.errors == b.errors == [None] * 6 + ["illegal_move"]  # a really illegal move stays one
    assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.moves, b.moves)
    assert np.array_equal(a.boards, b.boards)
    assert [m.uci() for m in (VOCAB.decode_move(int(t)) for t in a.game_moves(3))] == \
        ["e2e4", "e7e5", "g1f3", "b8c6", "f1b5", "a7a6"]


LINES = ['[Event "x"]', '[Site "https://lichess.org/abc"]', '[White "a \\"b\\""]', "[bad header", "", "  ", "\t",
         "% escape", "1. e4 e5 2. Nf3 1-0", "1. d4 *", " [not a header]", "[Result \"1-0\"]  ", "{comment}"]


@pytest.mark.parametrize("seed", range(40))
def test_games_in_text_is_iter_games_on_any_text(seed):
    import random

    from chessdt.data.pgn import games_in_text

    rng = random.Random(seed)
    text = "\n".join(rng.choice(LINES) for _ in range(rng.randint(0, 60)))
    text += rng.choice(["", "\n", "\n\n"])
    assert list(games_in_text(text)) == list(iter_games([text.split("\n")]))


@pytest.mark.parametrize("seed", range(20))
def test_game_chunks_cut_only_where_a_game_starts(seed):
    import random

    from chessdt.data.prepare import GameChunks

    rng = random.Random(seed)
    text = "\n".join(rng.choice(LINES) for _ in range(rng.randint(0, 200)))
    text = text.replace("\n", rng.choice(["\n", "\r\n", "\n"]))
    data = text.encode()
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    chunks = list(GameChunks(iter(pieces), size=rng.randint(1, 40)))
    assert b"".join(chunks) == data

    def games(b: bytes) -> list:
        t = b.decode().replace("\r\n", "\n").replace("\r", "\n")
        return list(iter_games([t.split("\n")]))

    assert [g for c in chunks for g in games(c)] == games(data)


def test_stats_count_repeats_through_the_dedupe_filter(tmp_path):
    from chessdt.data.pgn import collect_stats

    (tmp_path / "d.pgn").write_text(random_pgn(30, seed=5) + "\n" + random_pgn(10, seed=5))
    for with_moves in (False, True):
        s = collect_stats([str(tmp_path / "d.pgn")], DataConfig(batch_games=7), with_moves=with_moves, progress=False)
        assert (s.games, s.kept, dict(s.skipped)) == (40, 30, {"duplicate": 10})
    s = collect_stats([str(tmp_path / "d.pgn")], DataConfig(dedupe=False), progress=False)
    assert (s.kept, dict(s.skipped)) == (40, {})
