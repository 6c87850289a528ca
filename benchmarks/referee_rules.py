"""Which referee rule? Replay adjudication rules over a played-out match log and count their errors.

Every game of a match played with a referee (`chessdt eval match ... --referee`, or `chessdt run` with
`eval.adjudicate = true`) stores the referee's score after every ply. With every game played out
(`playout=1`, the default), any rule (threshold, consecutive plies, first ply) can be replayed over
the same games: how many games it would adjudicate, how often the side it named then failed to win
on the board (false adjudications, 95% Wilson interval), and what it does to each pair's Elo
(played out vs adjudicated, paired 95% intervals). The ratio printed last is the share of plies an
adjudicating run would have played.

    python benchmarks/referee_rules.py runs/quickstart/eval/match_games.jsonl --cp 200,300,400,600 --plies 4,8,12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chessdt.evals.match import pair_results, rejudge
from chessdt.evals.results import fmt
from chessdt.metrics import paired_score, wilson_interval
from chessdt.play.gamelog import read_game_log
from chessdt.stockfish.referee import RefereeRule


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", help="a match game log (JSONL) played with a referee and playout=1")
    ap.add_argument("--cp", default="200,300,400,600,1000", help="thresholds to try (centipawns)")
    ap.add_argument("--plies", default="2,4,8,12", help="consecutive plies to try")
    ap.add_argument("--from-ply", dest="from_ply", default="20", help="first plies to try")
    args = ap.parse_args(argv)
    meta, records = read_game_log(Path(args.log))
    records = [r for r in records if r.decided]
    if not records or not all(r.referee for r in records):
        print(f"{args.log}: no refereed games (play the match with --referee)", file=sys.stderr)
        return 2
    if not all(r.played_out for r in records):
        print(f"{args.log}: some games stopped at a verdict (playout < 1): their ends are unknown", file=sys.stderr)
        return 2
    pairs = sorted({(r.tags["a"], r.tags["b"]) for r in records})
    total_plies = sum(r.plies for r in records)
    print(f"{args.log}: {len(records):,} games, referee {meta.get('referee', '?')}; "
          f"pairs: {', '.join(f'{b} vs {a}' for a, b in pairs)}")
    head = "| cp | plies | from | verdicts | false adjudications (95%) | " + " | ".join(
        f"{b} - {a}: played out / adjudicated" for a, b in pairs) + " | plies played |"
    print("\n" + head + "\n" + "|---" * (head.count("|") - 1) + "|")
    for from_ply in (int(x) for x in args.from_ply.split(",")):
        for cp in (int(x) for x in args.cp.split(",")):
            for plies in (int(x) for x in args.plies.split(",")):
                rule = RefereeRule(cp=cp, plies=plies, from_ply=from_ply)
                judged = [rejudge(r, rule) for r in records]
                verdicts = [r for r in judged if r.adjudication]
                false = sum(r.false_adjudication for r in verdicts)
                lo, hi = wilson_interval(false, len(verdicts))
                cells = []
                for a, b in pairs:
                    po = paired_score(pair_results(judged, a, b))
                    ad = paired_score(pair_results(judged, a, b, "adjudicated"))
                    cells.append(f"{fmt(po.elo, 0)} [{fmt(po.elo_lo, 0)}, {fmt(po.elo_hi, 0)}] / "
                                 f"{fmt(ad.elo, 0)} [{fmt(ad.elo_lo, 0)}, {fmt(ad.elo_hi, 0)}]")
                played = sum(r.adjudication_ply or r.plies for r in judged) / total_plies
                rate = false / len(verdicts) if verdicts else float("nan")
                print(f"| {cp} | {plies} | {from_ply} | {len(verdicts):,} | {false} = {fmt(rate, 1, True)} "
                      f"[{fmt(lo, 1, True)}, {fmt(hi, 1, True)}] | " + " | ".join(cells) + f" | {played:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
