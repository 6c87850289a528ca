"""chessdt: a research testbed for chess decision transformers."""

__version__ = "0.1.0"
