"""A tiny untrained model wrapped as a ModelPolicy: evaluator plumbing in seconds."""

from __future__ import annotations

import torch

from chessdt.config import Config, DataConfig, ModelConfig
from chessdt.model import GPT
from chessdt.play.policy import ModelPolicy
from chessdt.tokenizer import Vocab


def tiny_policy(seed: int = 0, context: int = 64, label: str = "elo", board_input: bool = True) -> ModelPolicy:
    """A 1-layer, 32-wide GPT with random weights (seeded), on CPU."""
    torch.manual_seed(seed)
    cfg = Config(name="tiny-test", data=DataConfig(label=label),
                 model=ModelConfig(n_layer=1, n_head=2, d_model=32, context=context, board_input=board_input,
                                     attack_features=board_input))
    vocab = Vocab(rating_bucket=cfg.data.rating_bucket)
    model = GPT(cfg.model, vocab.size)
    return ModelPolicy(model, vocab, cfg, model_id=f"tiny{seed}")
