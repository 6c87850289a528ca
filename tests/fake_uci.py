"""A tiny UCI engine for plumbing tests: plays the first legal move (sorted UCI), scores the best
material balance reachable in one ply.

Usage: python fake_uci.py [--crash-at N] [--hang-at N] [--crash-on-uci] [--once FILE]
  --crash-at N  exit on the N-th `go` of this process; --hang-at N  stop answering on it.
  --crash-on-uci  exit on `uci`, during the handshake.
  --once FILE   misbehave only if FILE does not exist yet (it is created when this process misbehaves),
                so a restart then works.
  --short-below N  a multi-PV search of fewer than N nodes reports one line less (as Stockfish does when
                its budget runs out before the first iteration has reached every move).
"""

import argparse
import os
import sys
import time

import chess

def command(*args: str) -> list[str]:
    """Command line that starts this fake engine (for Engine/open_engine)."""
    return [sys.executable, os.path.abspath(__file__), *args]


def script(directory: str, *args: str) -> str:
    """An executable wrapper for this fake engine (for CLI --engine PATH)."""
    path = os.path.join(str(directory), "fakefish")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec " + " ".join(f"'{a}'" for a in command(*args)) + ' "$@"\n')
    os.chmod(path, 0o755)
    return path


VALUES = {chess.PAWN: 100, chess.KNIGHT: 300, chess.BISHOP: 300, chess.ROOK: 500, chess.QUEEN: 900}


def _material(board: chess.Board, color: chess.Color) -> int:
    return sum(v * (len(board.pieces(p, color)) - len(board.pieces(p, not color))) for p, v in VALUES.items())


def _after(board: chess.Board, move: chess.Move) -> int:
    """Material for the mover after `move`: a one-ply capture search, enough to see a hung queen."""
    mover = board.turn
    board.push(move)
    value = _material(board, mover)
    board.pop()
    return value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--crash-at", type=int, default=0)
    ap.add_argument("--hang-at", type=int, default=0)
    ap.add_argument("--crash-on-uci", action="store_true")
    ap.add_argument("--once")
    ap.add_argument("--short-below", type=int, default=0)
    args = ap.parse_args()
    misbehave = not (args.once and os.path.exists(args.once))

    def misbehaving() -> None:
        if args.once:
            open(args.once, "w").close()
    board = chess.Board()
    gos = 0
    multipv = 1
    out = sys.stdout
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "uci":
            if misbehave and args.crash_on_uci:
                misbehaving()
                sys.exit(3)
            out.write("id name FakeFish 1.0\nid author tests\n")
            out.write("option name Threads type spin default 1 min 1 max 8\n")
            out.write("option name Hash type spin default 16 min 1 max 1024\n")
            out.write("option name UCI_LimitStrength type check default false\n")
            out.write("option name UCI_Elo type spin default 1350 min 1350 max 2850\n")
            out.write("option name Skill Level type spin default 20 min 0 max 20\n")
            out.write("option name MultiPV type spin default 1 min 1 max 500\n")
            out.write("uciok\n")
        elif cmd[:3] == ["setoption", "name", "MultiPV"]:
            multipv = int(cmd[4])
        elif cmd[0] == "isready":
            out.write("readyok\n")
        elif cmd[0] == "position":
            if cmd[1] == "startpos":
                board = chess.Board()
                rest = cmd[2:]
            else:
                board = chess.Board(" ".join(cmd[2:8]))
                rest = cmd[8:]
            if rest and rest[0] == "moves":
                for m in rest[1:]:
                    board.push_uci(m)
        elif cmd[0] == "go":
            gos += 1
            if misbehave and gos == args.crash_at:
                misbehaving()
                sys.exit(3)
            if misbehave and gos == args.hang_at:
                misbehaving()
                time.sleep(3600)
            moves = sorted(board.legal_moves, key=lambda m: m.uci())
            if multipv > 1:  # every line: the moves by material after them (best first, then UCI order)
                ranked = sorted(moves, key=lambda m: -_after(board, m))[:multipv]
                nodes = int(cmd[cmd.index("nodes") + 1]) if "nodes" in cmd else 0
                if nodes < args.short_below:
                    ranked = ranked[:-1]
                for i, m in enumerate(ranked, 1):
                    out.write(f"info depth 1 multipv {i} score cp {_after(board, m)} nodes 1 pv {m.uci()}\n")
                out.write(f"bestmove {ranked[0].uci()}\n")
                out.flush()
                continue
            score = max((_after(board, m) for m in moves), default=0)
            out.write(f"info depth 1 score cp {score} nodes 1 pv {moves[0].uci()}\n")
            out.write(f"bestmove {moves[0].uci()}\n")
        elif cmd[0] == "quit":
            break
        out.flush()


if __name__ == "__main__":
    main()
