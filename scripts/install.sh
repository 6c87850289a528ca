#!/usr/bin/env bash
# Set up chessdt on a fresh machine: Stockfish (when missing) and a .venv with chessdt and its test tools.
# Debian/Ubuntu: Stockfish from apt-get (as root, or with sudo). macOS: from Homebrew.
# Elsewhere, or when it cannot install, it says in one line what to run and carries on:
# only the evaluations that play Stockfish need it, and `chessdt run` checks for it before training.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v stockfish >/dev/null && [ ! -x /usr/games/stockfish ]; then
  if command -v apt-get >/dev/null; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      if ! command -v sudo >/dev/null; then sudo="none"
      elif [ -t 0 ]; then sudo="sudo"          # may ask for the password
      else sudo="sudo -n"; fi                   # no terminal: only without a password
    fi
    if [ "$sudo" = none ] || ! { $sudo apt-get update -qq || true; $sudo apt-get install -y -qq stockfish; }; then
      echo "chessdt: could not install Stockfish; run: sudo apt-get install -y stockfish" >&2
    fi
  elif command -v brew >/dev/null; then
    brew install stockfish || echo "chessdt: could not install Stockfish; run: brew install stockfish" >&2
  else
    echo "chessdt: Stockfish not found; install it from your package manager (or stockfishchess.org) and put it on PATH" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch pinned: an unpinned torch may pull a multi-GB CUDA build where a CPU one will do.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 -e '.[test]'
