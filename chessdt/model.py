"""The whole GPT in one file: a pre-norm decoder over move tokens, optionally seeing the board.

Inputs per position t (all the same length T):

* ``tokens`` (B, T): ``<bos> cond... move move ...`` ids from :class:`chessdt.tokenizer.Vocab`;
* ``boards`` (B, T, 64) uint8: the board *after* token t (piece codes of :func:`chessdt.tokenizer.board_array`);
  the decision transformer's state. Only used when ``ModelConfig.board_input``;
* ``plies`` (B, T): moves played on that board (0 for the prefix of a game from the start).
  Its parity is the side to move, so the board can be embedded from the mover's point of view.

The output at position t is the distribution of token t + 1. Input and output embeddings are
tied; with ``move_features`` a move's embedding is the sum of its own vector and vectors for its
from-square, to-square and promotion, so what the model learns about one move (a knight on g1
can go to f3) transfers to moves that share a square.

With ``board_head`` each move's logit also gets a learned score of the pieces on its from- and
to-square, and with ``attack_features`` (:mod:`chessdt.features`) the model sees which squares the
opponent attacks, which we defend, which of our pieces are pinned and whether we are in check, and
each move's logit gets a learned weight for every move fact that holds ("its path is blocked", "the
king steps into an attack", ...). These are computed from the board on the fly, in training and in
play alike, and never mask anything: legality is still the model's to learn, from exact features.

With ``value_head`` a linear head on the final residual stream also predicts, at every position,
win/draw/loss (:data:`chessdt.rules.WDL`) for the side to move on that position's board; it is
read with ``forward(..., with_value=True)`` (training, held-out calibration) or from a cached step
(:meth:`GPT.step_value`, UCI scores). Without it the model is unchanged, weights and all.

Generation uses a :class:`KVCache`: a batch of sequences that advance in lockstep (a batch of
games played together, or the two prompts of classifier-free guidance), each step costing
O(length) instead of re-running the whole prefix.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal, overload
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chessdt.config import ConfigError, ModelConfig
from chessdt.features import MOVE_FACTS, SQUARE_FEATURES, Geometry, code_facts
from chessdt.tokenizer import NUM_MOVES, RATING_MAX, RATING_MIN, Vocab, all_moves

N_PIECE_CODES = 12  # shards.board_array codes 1..12 (0 is an empty square)
# The move prior is stored divided by this, so that Adam (whose steps are about lr in parameter
# units) moves its scores ~20x faster than the weights: a score must travel to a few nats for
# the prior to matter, and it should get there within the first hundred steps.
PRIOR_SCALE = 20.0
# The weights of the move facts (features.MOVE_FACTS) are shared by every move and position, so
# they see a lot of gradient; this scale lets them reach the several nats a fact is worth
# ("this move is blocked") within a few dozen steps.
FACT_SCALE = 50.0
# Continuous rating embedding: learned anchors every ANCHOR_STEP Elo over the tokenizer's range.
ANCHOR_STEP = 200
RATING_ANCHORS = tuple(range(RATING_MIN, RATING_MAX + 1, ANCHOR_STEP))
PREFIX_SCAN = 4  # the condition tokens sit in the first positions of every sequence
RATING_CENTRE, RATING_SCALE = 1600.0, 400.0  # the rating head's target is (rating - centre) / scale


def rating_values(vocab: Vocab) -> torch.Tensor:
    """(V,) float: the middle of each rating token's bucket, -1 for <rating:?>, nan for other tokens."""
    values = torch.full((vocab.size,), math.nan)
    values[vocab.unknown_rating] = -1.0
    for level in vocab.rating_levels():
        values[vocab.rating_token(level)] = min(level + vocab.rating_bucket / 2, RATING_MAX)
    return values


def move_feature_table(vocab_size: int) -> torch.Tensor:
    """(vocab_size, 3) long: from-square, to-square, promotion index per token.

    Non-move tokens get from = to = 64 and promotion = 5, entries no move shares.
    """
    table = torch.empty(vocab_size, 3, dtype=torch.long)
    table[:, 0] = 64
    table[:, 1] = 64
    table[:, 2] = 5
    for i, m in enumerate(all_moves()):
        table[i, 0] = m.from_square
        table[i, 1] = m.to_square
        table[i, 2] = 0 if m.promotion is None else m.promotion - 1  # 1..4 = N, B, R, Q
    return table


def board_indices(boards: torch.Tensor, plies: torch.Tensor) -> torch.Tensor:
    """Embedding-bag indices (B, T, 64) of boards seen by the side to move.

    Pieces are recoded as own (1..6) / opponent (7..12) so that 'my piece stands here', the first
    thing a legal move needs, is linear in the input. Empty squares map to 0, the padding index.
    """
    codes = boards.long()  # (B, T, 64)
    black_to_move = (plies % 2 == 1).unsqueeze(-1)  # (B, T, 1)
    swapped = torch.where(codes > 6, codes - 6, codes + 6)
    rel = torch.where(black_to_move & (codes > 0), swapped, codes)
    squares = torch.arange(64, device=boards.device)
    return torch.where(rel > 0, 1 + squares * N_PIECE_CODES + rel - 1, torch.zeros_like(rel))


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences that advance together."""

    keys: list[torch.Tensor]  # per layer (B, H, max_len, head_dim)
    values: list[torch.Tensor]  # per layer (B, H, max_len, head_dim)
    length: int = 0  # positions filled so far
    ratings: torch.Tensor | None = None  # (B, 2, d) white's and black's rating vectors (model.rating_every)

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def reset(self) -> None:
        self.length = 0

    def select(self, rows: torch.Tensor) -> "KVCache":
        """A cache holding only the given batch rows (e.g. to drop finished games)."""
        return KVCache([k[rows] for k in self.keys], [v[rows] for v in self.values], self.length,
                       None if self.ratings is None else self.ratings[rows])


class _Gather(torch.autograd.Function):
    """table[index] whose backward is an index_add, or a bincount for a small table (both several
    times faster on CPU than the index_put that plain indexing uses for its gradient)."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.size = table.numel()
        return table[index]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        if ctx.size <= 4096:  # many hits per entry: a bincount beats scattered atomic adds
            out = torch.bincount(index.reshape(-1), weights=grad.reshape(-1).float(), minlength=ctx.size)
            return out.to(grad.dtype), None
        out = torch.zeros(ctx.size, dtype=grad.dtype, device=grad.device)
        return out.index_add_(0, index.reshape(-1), grad.reshape(-1)), None


@dataclass
class Geo:
    """What the attack features say about a batch of boards (see chessdt.features)."""

    squares: torch.Tensor  # (B, T, 64, len(SQUARE_FEATURES)) float
    in_check: torch.Tensor  # (B, T) bool
    code: torch.Tensor  # (B, T, NUM_MOVES) int32 packed move facts
    castle_bad: torch.Tensor  # (B, T, 4) float


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        mask = None
        causal = True
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k = cache.keys[layer][:, :, : start + T]
            v = cache.values[layer][:, :, : start + T]
            if start > 0:
                causal = False
                if T > 1:  # new queries see the whole past and the new positions causally
                    mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.proj(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


def param_count(cfg: ModelConfig, vocab_size: int) -> int:
    """Parameters of ``GPT(cfg, vocab_size)``, counted without building it (exact: tests/test_model.py)."""
    d = cfg.d_model
    block = 2 * d + (4 + 2 * cfg.mlp_ratio) * d * d  # two LayerNorms, qkv + proj, fc + proj
    n = vocab_size * d + cfg.context * d + cfg.n_layer * block + d  # token and position tables, blocks, ln_f
    if cfg.rating_continuous:
        n += (len(RATING_ANCHORS) + 1) * d
    if cfg.rating_every:
        n += 2 * d * d
    if cfg.move_features:
        n += (65 + 65 + 6) * d
    if cfg.board_input:
        n += (1 + 64 * N_PIECE_CODES) * d + 2 * d
    if cfg.board_head:
        n += 2 * 2 * (1 + N_PIECE_CODES) * NUM_MOVES
    if cfg.attack_features:
        n += 64 * len(SQUARE_FEATURES) * d + 2 * d + (len(MOVE_FACTS) if cfg.board_head else 0)
    if cfg.value_head:
        n += 3 * d + 3
    if cfg.rating_film:
        n += 2 * d * d
    if cfg.rating_head:
        n += d + 1
    return n


def machine_memory() -> int | None:
    """Bytes of RAM of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(cfg: ModelConfig, vocab_size: int, copies: int, purpose: str) -> None:
    """ConfigError, before anything is allocated, when `copies` float32 copies of the model's
    parameters exceed this machine's memory (1 to hold the weights; 4 to train: weights, gradients
    and Adam's two moments). A huge model.n_layer or d_model would otherwise grow until killed."""
    params = param_count(cfg, vocab_size)
    need, have = params * 4 * copies, machine_memory()
    if have is not None and need > have:
        raise ConfigError(f"a model of {params:,} parameters (model.n_layer={cfg.n_layer}, d_model={cfg.d_model}, "
                          f"context={cfg.context}) needs about {need / 2**30:,.1f} GiB to {purpose}, more than this "
                          f"machine's {have / 2**30:,.1f} GiB of memory: make the model smaller")


class GPT(nn.Module):
    """Decoder-only transformer over a :class:`~chessdt.tokenizer.Vocab`; see the module doc."""

    move_feats: torch.Tensor  # buffers registered in __init__ (the others only with the features that use them)
    move_ids: torch.Tensor
    code_facts: torch.Tensor
    token_rating: torch.Tensor

    def __init__(self, cfg: ModelConfig, vocab_size: int, vocab: Vocab | None = None) -> None:
        check_fits(cfg, vocab_size, 1, "hold its weights")  # a config or a checkpoint's meta.json may ask for any size
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        d = cfg.d_model
        self.tok_emb = nn.Embedding(vocab_size, d)
        if cfg.rating_every or cfg.rating_continuous or cfg.rating_film or cfg.rating_head:
            if vocab is None or vocab.size != vocab_size:
                raise ValueError("model.rating_every / rating_continuous / rating_film / rating_head need the "
                                 "vocabulary (its rating tokens)")
            self.register_buffer("token_rating", rating_values(vocab), persistent=False)
            if cfg.rating_continuous:
                self.rating_emb = nn.Parameter(torch.empty(len(RATING_ANCHORS), d))
                self.rating_emb_unknown = nn.Parameter(torch.empty(d))
            if cfg.rating_every:
                # zero at the start: the model begins as the prefix-only one and learns how much to use
                self.own_rating = nn.Linear(d, d, bias=False)
                self.opp_rating = nn.Linear(d, d, bias=False)
        self.pos_emb = nn.Embedding(cfg.context, d)
        self.register_buffer("move_feats", move_feature_table(vocab_size), persistent=False)
        if cfg.move_features:
            self.from_emb = nn.Embedding(65, d)
            self.to_emb = nn.Embedding(65, d)
            self.promo_emb = nn.Embedding(6, d)
        if cfg.board_input:
            # one vector per (square, own/opponent piece); a board is the sum over its pieces
            self.board_emb = nn.EmbeddingBag(1 + 64 * N_PIECE_CODES, d, mode="sum", padding_idx=0)
            self.turn_emb = nn.Embedding(2, d)
        if cfg.board_head:
            # per move, per side to move: a score for each piece code (empty, own, opponent) on its
            # from-square and on its to-square. "My knight on g1" makes g1f3 plausible, "my piece
            # on f3" rules it out: most of pseudo-legality, learned from a few thousand games; the
            # transformer handles the rest (lines blocked, pins, checks, intent).
            self.move_prior = nn.Parameter(torch.zeros(2, 2, 1 + N_PIECE_CODES, NUM_MOVES))
            self.register_buffer("move_ids", torch.arange(NUM_MOVES, dtype=torch.int32), persistent=False)
        if cfg.attack_features:
            self.geometry = Geometry()
            # per square: attacked by the opponent, defended by us, our piece pinned; and in check
            self.square_emb = nn.Parameter(torch.empty(64 * len(SQUARE_FEATURES), d))
            self.check_emb = nn.Embedding(2, d)
            if cfg.board_head:
                self.fact_weights = nn.Parameter(torch.zeros(len(MOVE_FACTS)))
                self.register_buffer("code_facts", code_facts(), persistent=False)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(d, bias=False)
        if cfg.value_head:
            # W/D/L logits for the side to move; built without drawing from the global generator, so
            # that the rest of the model starts from the same weights with or without the head.
            with torch.random.fork_rng(devices=[]):
                self.value_head = nn.Linear(d, 3)
        # the rating options of issue 27, built (and zeroed) without drawing from the global generator,
        # so the rest of the model starts from the same weights with or without them
        with torch.random.fork_rng(devices=[]):
            if cfg.rating_film:  # the mover's rating scales and shifts the last hidden state
                self.rating_film = nn.Linear(d, 2 * d, bias=False)
            if cfg.rating_head:  # the mover's rating, standardised, read off the last hidden state
                self.rating_head = nn.Linear(d, 1)
        self.last_rating_loss: torch.Tensor | None = None  # set by forward in training (model.rating_head)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, std); residual output projections shrunk by sqrt(2 * n_layer) so the
        residual stream's variance does not grow with depth; board vectors shrunk so that a sum
        over ~32 pieces starts at the scale of one token embedding."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2 or name == "move_prior":
                continue  # LayerNorm weights stay 1; the move prior and fact weights start at zero
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            elif name.startswith(("board_emb", "square_emb")):
                nn.init.normal_(p, 0.0, std / math.sqrt(32))
            else:
                nn.init.normal_(p, 0.0, std)
        if self.cfg.board_input:
            with torch.no_grad():
                self.board_emb.weight[0].zero_()
        if self.cfg.board_head:
            nn.init.zeros_(self.move_prior)  # starts as a plain GPT
        if self.cfg.rating_every:
            nn.init.zeros_(self.own_rating.weight)
            nn.init.zeros_(self.opp_rating.weight)
        if self.cfg.rating_continuous:
            nn.init.normal_(self.rating_emb_unknown, 0.0, self.cfg.init_std)
        if self.cfg.value_head:
            nn.init.zeros_(self.value_head.weight)  # starts at the base rates its bias learns first
            nn.init.zeros_(self.value_head.bias)
        if self.cfg.rating_film:
            nn.init.zeros_(self.rating_film.weight)  # starts as the model without it
        if self.cfg.rating_head:
            nn.init.zeros_(self.rating_head.weight)
            nn.init.zeros_(self.rating_head.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def token_embeddings(self) -> torch.Tensor:
        """(V, d) embedding of every token, shared by the input and the output layer."""
        w = self.tok_emb.weight
        if self.cfg.move_features:
            f = self.move_feats
            w = w + self.from_emb(f[:, 0]) + self.to_emb(f[:, 1]) + self.promo_emb(f[:, 2])
        return w

    def geo(self, boards: torch.Tensor, plies: torch.Tensor) -> Geo | None:
        """Attack features of the boards, or None if this model does not use them."""
        if not self.cfg.attack_features:
            return None
        squares, in_check, code, castle_bad = self.geometry(boards, plies % 2)
        return Geo(squares=squares, in_check=in_check, code=code, castle_bad=castle_bad)

    def embed(self, tokens: torch.Tensor, boards: torch.Tensor | None, plies: torch.Tensor | None,
              start: int, table: torch.Tensor, geo: Geo | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input vectors (B, T, d) and the board's embedding-bag indices (B*T, 64) if any."""
        B, T = tokens.shape
        if start + T > self.cfg.context:
            raise ValueError(f"sequence of {start + T} tokens exceeds the model context {self.cfg.context}")
        x = F.embedding(tokens, table)  # (B, T, d)
        if self.cfg.rating_continuous:  # rating tokens read their interpolated vectors instead
            x = torch.where(self.token_rating[tokens].isnan()[..., None], x, self.rating_vectors(tokens))
        x = x + self.pos_emb.weight[start : start + T]
        idx = None
        if self.cfg.board_input:
            if boards is None or plies is None:
                raise ValueError("this model was trained with board_input: pass boards and plies")
            idx = board_indices(boards, plies).view(B * T, 64)
            x = x + self.board_emb(idx).view(B, T, -1) + self.turn_emb(plies % 2)
        if geo is not None:
            x = x + geo.squares.view(B, T, -1) @ self.square_emb + self.check_emb(geo.in_check.long())
        return x, idx

    @overload
    def forward(self, tokens: torch.Tensor, boards: torch.Tensor | None = None, plies: torch.Tensor | None = None,
                cache: KVCache | None = None, with_value: Literal[False] = False) -> torch.Tensor: ...

    @overload
    def forward(self, tokens: torch.Tensor, boards: torch.Tensor | None, plies: torch.Tensor | None,
                cache: KVCache | None, with_value: Literal[True]) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def forward(self, tokens: torch.Tensor, boards: torch.Tensor | None = None, plies: torch.Tensor | None = None,
                cache: KVCache | None = None, *, with_value: Literal[True]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def forward(self, tokens: torch.Tensor, boards: torch.Tensor | None = None,
                plies: torch.Tensor | None = None, cache: KVCache | None = None,
                with_value: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits (B, T, V) for every position; with ``with_value`` also the value
        head's W/D/L logits (B, T, 3) (ValueError for a model without one).

        With a cache, ``tokens`` are the next T positions after the ``cache.length`` already seen;
        the cache is advanced by T.
        """
        if with_value and not self.cfg.value_head:
            raise ValueError("this model has no value head (model.value_head = false)")
        start = 0 if cache is None else cache.length
        if cache is not None and start + tokens.shape[1] > cache.max_len:
            raise ValueError(f"cache of {cache.max_len} positions is full")
        table = self.token_embeddings()
        geo = None if boards is None or plies is None else self.geo(boards, plies)
        x, idx = self.embed(tokens, boards, plies, start, table, geo)
        own = opp = None
        if self.cfg.rating_every or self.cfg.rating_film:
            own, opp = self.mover_ratings(tokens, plies, table, start, cache)  # (B, T, d) each
        if self.cfg.rating_every:
            assert own is not None and opp is not None
            x = x + self.own_rating(own) + self.opp_rating(opp)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length = start + tokens.shape[1]
        h = self.ln_f(x)
        if self.cfg.rating_film:
            assert own is not None
            scale, shift = self.rating_film(own).chunk(2, dim=-1)  # (B, T, d) each
            h = h * (1 + scale) + shift
        if self.cfg.rating_head and self.training:
            self.last_rating_loss = self.rating_loss(h, tokens, plies)
        logits = F.linear(h, table)  # (B, T, V)
        if self.cfg.board_head:
            assert boards is not None and plies is not None
            prior = self.move_prior_logits(boards, plies, geo)  # (B, T, NUM_MOVES)
            logits[..., :NUM_MOVES] += prior.to(logits.dtype)  # in place: F.linear keeps no output
        if with_value:
            return logits, self.value_head(h)  # (B, T, V), (B, T, 3)
        return logits

    def mover_ratings(self, tokens: torch.Tensor, plies: torch.Tensor | None, table: torch.Tensor, start: int,
                      cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(own, opponent) rating vectors (B, T, d) at every position, by the side to move there: read
        from the prompt when it is fed (start 0), from the cache after that."""
        if plies is None:
            raise ValueError("model.rating_every / rating_film need plies (the side to move at each position)")
        if start == 0:
            ratings = self.game_ratings(tokens, table)  # (B, 2, d)
            if cache is not None:
                cache.ratings = ratings
        elif cache is None or cache.ratings is None:
            raise ValueError("model.rating_every / rating_film: the cache holds no ratings (feed the prompt first)")
        else:
            ratings = cache.ratings
        black = (plies % 2 == 1)[..., None]  # (B, T, 1): the mover's colour
        own = torch.where(black, ratings[:, None, 1], ratings[:, None, 0])  # (B, T, d)
        opp = torch.where(black, ratings[:, None, 0], ratings[:, None, 1])
        return own, opp

    def rating_loss(self, h: torch.Tensor, tokens: torch.Tensor, plies: torch.Tensor | None) -> torch.Tensor:
        """Mean squared error of the rating head's reading of the mover's rating, standardised as
        (rating - RATING_CENTRE) / RATING_SCALE, over the positions of rows whose prompt names it (a
        rating dropped for guidance, or unknown, is no target); 0 where no row does."""
        if plies is None:
            raise ValueError("model.rating_head needs plies (the side to move at each position)")
        values = self.prompt_ratings(tokens)  # (B, 2): White's and Black's, nan when unknown
        black = plies % 2 == 1  # (B, T)
        target = torch.where(black, values[:, None, 1], values[:, None, 0])  # (B, T)
        known = ~target.isnan()
        if not bool(known.any()):
            return h.sum() * 0.0
        pred = self.rating_head(h).squeeze(-1).float()  # (B, T)
        z = (target - RATING_CENTRE) / RATING_SCALE
        return F.mse_loss(pred[known], z[known])

    def prompt_ratings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 2) White's and Black's rating (the bucket's middle) from the first two rating tokens of
        each row's prefix; nan where a slot is <rating:?> or the row has no two rating tokens."""
        ids, valid = self.rating_slots(tokens)
        vals = self.token_rating[ids]  # (B, 2): -1 for <rating:?>
        known = valid[:, None] & (vals >= 0)
        return torch.where(known, vals, torch.full_like(vals, math.nan))

    def move_prior_logits(self, boards: torch.Tensor, plies: torch.Tensor, geo: Geo | None = None) -> torch.Tensor:
        """(B, T, NUM_MOVES) scores of the pieces on every move's from- and to-square, plus the
        learned weights of the move facts that hold (with attack features)."""
        B, T = plies.shape
        flat = boards.reshape(B * T, 64).to(torch.int32)
        turn = (plies.reshape(B * T, 1) % 2).to(torch.int32)
        rel = torch.where((turn == 1) & (flat > 0), torch.where(flat > 6, flat - 6, flat + 6), flat)
        rel = rel * NUM_MOVES  # (B*T, 64) offsets of each square's piece code in a (13, M) table
        width = (1 + N_PIECE_CODES) * NUM_MOVES
        rel = rel.add_(turn * (2 * width))  # each side to move has its own tables
        moves = self.move_ids  # (M,): each move its own column
        from_idx = rel[:, self.move_feats[:NUM_MOVES, 0]].add_(moves)  # (B*T, M)
        to_idx = rel[:, self.move_feats[:NUM_MOVES, 1]].add_(moves + width)
        table = self.move_prior.view(-1) * PRIOR_SCALE
        prior = (_Gather.apply(table, from_idx) + _Gather.apply(table, to_idx)).view(B, T, NUM_MOVES)
        if self.cfg.attack_features:
            if geo is None:
                geo = self.geo(boards, plies)
            assert geo is not None
            w = self.fact_weights * FACT_SCALE
            per_code = self.code_facts @ w[:-1]  # every fact but castle_bad (the last)
            prior = prior + _Gather.apply(per_code, geo.code)
            cm = self.geometry.castle_moves
            prior = prior.index_add(2, cm, geo.castle_bad * w[-1])
        return prior

    def rating_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., d) continuous embedding of rating tokens: the unknown vector for <rating:?>, else
        a linear interpolation between the two anchors around the bucket's middle."""
        r = self.token_rating[tokens]  # (...,) nan for non-ratings, -1 for <rating:?>
        pos = ((r - RATING_ANCHORS[0]) / ANCHOR_STEP).clamp(0, len(RATING_ANCHORS) - 1).nan_to_num(0.0)
        lo = pos.floor().long().clamp(max=len(RATING_ANCHORS) - 2)
        frac = (pos - lo)[..., None].to(self.rating_emb.dtype)
        vec = self.rating_emb[lo] * (1 - frac) + self.rating_emb[lo + 1] * frac
        return torch.where((r < 0)[..., None], self.rating_emb_unknown.expand_as(vec), vec)

    def game_ratings(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, 2, d) vectors of White's and Black's rating: the first two rating tokens of each row's
        prefix (zeros for a row without two, e.g. an outcome-only label)."""
        if tokens.shape[1] < 2:
            return torch.zeros(tokens.shape[0], 2, self.cfg.d_model, device=tokens.device)
        ids, valid = self.rating_slots(tokens)
        vec = self.rating_vectors(ids) if self.cfg.rating_continuous else F.embedding(ids, table)
        return torch.where(valid[:, None, None], vec, torch.zeros_like(vec))

    def rating_slots(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, 2), valid (B,)): the first two rating tokens of each row's prefix (White's and
        Black's), and whether the row has two (an outcome-only label has none)."""
        head = tokens[:, :PREFIX_SCAN]
        is_rating = ~self.token_rating[head].isnan()  # (B, P)
        order = torch.where(is_rating, torch.arange(head.shape[1], device=head.device), PREFIX_SCAN)
        first2 = order.sort(dim=1).values[:, :2].clamp(max=head.shape[1] - 1)  # (B, 2) positions
        return head.gather(1, first2), is_rating.sum(1) >= 2

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` (default: context)."""
        max_len = max_len or self.cfg.context
        p = self.tok_emb.weight
        hd = self.cfg.d_model // self.cfg.n_head
        shape = (batch_size, self.cfg.n_head, max_len, hd)
        return KVCache(keys=[torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.blocks],
                       values=[torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.blocks])

    def step(self, tokens: torch.Tensor, cache: KVCache, boards: torch.Tensor | None = None,
             plies: torch.Tensor | None = None) -> torch.Tensor:
        """Feed the next token(s) of every sequence: tokens (B,) or (B, T) -> logits (B, V) of the
        last position. boards (B, 64) / (B, T, 64) and plies (B,) / (B, T) follow the same shape."""
        if tokens.dim() == 1:
            tokens = tokens[:, None]
            boards = None if boards is None else boards[:, None]
            plies = None if plies is None else plies[:, None]
        return self.forward(tokens, boards, plies, cache)[:, -1]

    def step_value(self, tokens: torch.Tensor, cache: KVCache, boards: torch.Tensor | None = None,
                   plies: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step` that also returns the value head's W/D/L logits (B, 3) of the last position."""
        if tokens.dim() == 1:
            tokens = tokens[:, None]
            boards = None if boards is None else boards[:, None]
            plies = None if plies is None else plies[:, None]
        logits, value = self.forward(tokens, boards, plies, cache, with_value=True)
        return logits[:, -1], value[:, -1]

    @staticmethod
    def move_logits(logits: torch.Tensor) -> torch.Tensor:
        """The move part (..., 1968) of full-vocabulary logits (moves are ids 0..1967)."""
        return logits[..., :NUM_MOVES]

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: decay matmul weights only (not embeddings or norms)."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            (decay if p.dim() == 2 and "emb" not in name else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
