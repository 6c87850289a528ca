"""Stockfish: the engine as a resource, the games it generates, the labels it writes, the ladder report."""
