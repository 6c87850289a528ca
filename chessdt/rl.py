"""RL fine-tuning (the RLHF recipe, for chess): policy gradient with a KL penalty to the base model.

Each update plays `games_per_step` games with the current policy (half as white, half as black)
against an opponent, all games advancing together through one KV-cache Session. The reward is the
game result from the model's side (+1 / 0 / -1; unfinished games are draws, or judged by a
Stockfish evaluation with ``reward = "engine"``). The loss per game is REINFORCE with a
leave-one-out baseline, plus beta times the exact KL(pi || pi_base) over legal moves at every
position where the model moved:

    loss = -mean_i (R_i - mean_{j != i} R_j) * sum_t log pi(a_t | s_t) + beta * mean_t KL_t

The policy samples among legal moves only, and log-probabilities and KL are taken over the
legal-masked distribution, so the gradient matches how the moves were drawn. Logged per update:
reward, KL, policy entropy, and distinct openings in the batch, so collapse shows as it happens.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chess
import chess.engine
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from chessdt import checkpoint as ckpt_io
from chessdt.config import Config, RLConfig, to_dict
from chessdt.errors import UserError
from chessdt.rules import ABORTED, RESULTS, game_over, parse_opponent, white_score
from chessdt.model import GPT
from chessdt.play.players import Player, RandomPlayer, StockfishPlayer
from chessdt.play.policy import ModelPolicy, Prompted, Sampling, Session
from chessdt.tokenizer import game_inputs

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One game played by the policy, as the model saw it."""

    prompt: list[int]
    color: chess.Color  # the model's side (self-play: both, recorded as WHITE)
    moves: list[chess.Move]
    model_plies: list[int]  # indices into moves that the model chose
    legal: list[torch.Tensor]  # per model ply: (1968,) bool legal-move mask
    reward: float
    result: str


def result_reward(board: chess.Board, color: chess.Color) -> tuple[float, str]:
    """+1 / 0 / -1 from `color`'s side for a finished game, 0 for an unfinished one."""
    over = game_over(board, claim_draw=True)
    if over is None:
        return 0.0, ABORTED
    result = over[0]
    return 2.0 * (white_score(result) if color == chess.WHITE else 1.0 - white_score(result)) - 1.0, result


def engine_reward(engine: Any, board: chess.Board, color: chess.Color, nodes: int) -> float:
    """Expected score in [-1, 1] from a Stockfish evaluation (for games cut at max_plies)."""
    info = engine.analyse(board, chess.engine.Limit(nodes=nodes))
    score = info["score"].pov(color)
    wdl = score.wdl(model="sf15.1").expectation()  # 0..1
    return 2.0 * wdl - 1.0


def rollout_model(policy: ModelPolicy, cfg: RLConfig) -> Prompted:
    """The model as it plays rollouts: at rl.rating (0 = unknown), legal moves only, at rl.temperature."""
    return Prompted(policy, cfg.rating or None, None, Sampling(temperature=cfg.temperature, mask_illegal=True))


def rollout_prompts(model: Prompted, colors: list[chess.Color | None]) -> list[list[int]]:
    """The prompt of each rollout: the model's side wins (its rating against its own), or for
    self-play (colour None) both sides at the model's rating with no result."""
    return [model.policy.prompt(model.rating, model.rating, None) if c is None else model.prompt(c) for c in colors]


@torch.no_grad()
def play_rollouts(model: Prompted, prompts: list[list[int]], colors: list[chess.Color | None],
                  opponent: Player | None, cfg: RLConfig, generator: torch.Generator,
                  judge: Any = None) -> list[Rollout]:
    """Play one game per prompt in lockstep; colors[i] None means self-play (model moves both sides)."""
    policy, sampling = model.policy, model.sampling
    session = Session(policy, prompts)
    n = len(prompts)
    boards = [chess.Board() for _ in range(n)]
    model_plies: list[list[int]] = [[] for _ in range(n)]
    legal: list[list[torch.Tensor]] = [[] for _ in range(n)]
    done = [False] * n
    for ply in range(cfg.max_plies):
        if all(done):
            break
        logits = session.logits
        to_move = [i for i in range(n) if not done[i] and (colors[i] is None or boards[i].turn == colors[i])]
        chosen: dict[int, chess.Move] = {}
        if to_move:
            picks = policy.choose(logits[to_move], [boards[i] for i in to_move], sampling, generator)
            for i, m in zip(to_move, picks):
                chosen[i] = m
                model_plies[i].append(ply)
                legal[i].append(policy.vocab.legal_mask(boards[i]))
        for i in range(n):
            if not done[i] and i not in chosen:
                assert opponent is not None
                chosen[i] = opponent.play(boards[i])
        moves = [chosen.get(i) for i in range(n)]
        for i, played in enumerate(moves):
            if played is not None:
                boards[i].push(played)
        session.push(moves)
        for i in range(n):
            if not done[i] and game_over(boards[i], claim_draw=True) is not None:
                done[i] = True
    out = []
    for i in range(n):
        given = colors[i]
        color = given if given is not None else chess.WHITE
        reward, result = result_reward(boards[i], color)
        if result == "*" and judge is not None and given is not None:
            reward = engine_reward(judge, boards[i], color, cfg.eval_nodes)
        out.append(Rollout(prompts[i], color, list(boards[i].move_stack), model_plies[i], legal[i], reward, result))
    return out


def sequence_inputs(rollouts: list[Rollout], policy: ModelPolicy) -> tuple[torch.Tensor, ...]:
    """Padded (B, T) tokens, (B, T, 64) boards and (B, T) plies of whole games, laid out as in
    training: position t holds token t and the board after it."""
    games = []
    for r in rollouts:
        board = chess.Board()
        for m in r.moves:
            board.push(m)
        games.append(board)
    whole = max(len(r.prompt) + len(r.moves) for r in rollouts)  # a context that cuts nothing
    arrays = game_inputs([r.prompt for r in rollouts], games, whole, policy.vocab)
    return tuple(torch.as_tensor(a, device=policy.device) for a in arrays)


@dataclass
class UpdateStats:
    loss: float
    reward: float
    kl: float
    entropy: float
    logp: float


def rl_loss(policy_model: GPT, base_model: GPT, rollouts: list[Rollout], policy: ModelPolicy,
            beta: float) -> tuple[torch.Tensor, UpdateStats]:
    """REINFORCE with a leave-one-out baseline + beta * KL(pi || pi_base), over legal moves."""
    tokens, boards, plies = sequence_inputs(rollouts, policy)
    logits = GPT.move_logits(policy_model(tokens, boards, plies)).float()  # (B, T, 1968)
    with torch.no_grad():
        base_logits = GPT.move_logits(base_model(tokens, boards, plies)).float()
    rewards = torch.tensor([r.reward for r in rollouts], device=logits.device)
    n = len(rollouts)
    advantages = rewards - (rewards.sum() - rewards) / (n - 1)
    P = len(rollouts[0].prompt)
    rows, cols, actions, masks = [], [], [], []
    for i, r in enumerate(rollouts):
        for k, ply in enumerate(r.model_plies):
            rows.append(i)
            cols.append(P - 1 + ply)  # the position whose output predicts move `ply`
            actions.append(policy.vocab.encode_move(r.moves[ply]))
            masks.append(r.legal[k])
    if not rows:
        raise RuntimeError("no model moves in this batch of rollouts")
    idx_r = torch.tensor(rows, device=logits.device)
    idx_c = torch.tensor(cols, device=logits.device)
    legal = torch.stack(masks).to(logits.device)  # (N, 1968)
    # A large finite negative (not -inf) keeps 0 * log 0 terms, and their gradients, at zero.
    lp = F.log_softmax(logits[idx_r, idx_c].masked_fill(~legal, -1e9), dim=-1)
    lp_base = F.log_softmax(base_logits[idx_r, idx_c].masked_fill(~legal, -1e9), dim=-1)
    p = lp.exp()
    kl = torch.where(legal, p * (lp - lp_base), torch.zeros_like(p)).sum(-1)  # (N,)
    entropy = -torch.where(legal, p * lp, torch.zeros_like(p)).sum(-1)
    chosen = lp.gather(1, torch.tensor(actions, device=logits.device)[:, None]).squeeze(1)  # (N,)
    game_logp = torch.zeros(n, device=logits.device).index_add(0, idx_r, chosen)
    pg = -(advantages * game_logp).mean()
    loss = pg + beta * kl.mean()
    stats = UpdateStats(float(loss.detach()), float(rewards.mean()), float(kl.detach().mean()),
                        float(entropy.detach().mean()), float(chosen.detach().mean()))
    return loss, stats


def distinct_openings(rollouts: list[Rollout], plies: int) -> int:
    return len({tuple(m.uci() for m in r.moves[:plies]) for r in rollouts})


@contextlib.contextmanager
def _opponent(cfg: RLConfig) -> Iterator[Player | None]:
    opponent = parse_opponent(cfg.opponent, allow_self=True)
    if opponent == "self":
        yield None
    elif opponent == "random":
        yield RandomPlayer(cfg.seed)
    else:
        with StockfishPlayer(cfg.engine or None, elo=opponent.elo, skill=opponent.skill,
                             nodes=cfg.opponent_nodes) as sf:
            yield sf


@contextlib.contextmanager
def _judge(cfg: RLConfig) -> Iterator[Any]:
    if cfg.reward != "engine":
        yield None
        return
    from chessdt.stockfish.engine import Engine, find_stockfish

    with Engine(find_stockfish(cfg.engine or None)) as engine:
        yield engine


def finetune_rl(cfg: Config, out_dir: Path, device: str = "cpu", progress: bool = True) -> Path:
    """Fine-tune cfg.rl.base with policy gradient + KL; returns the run directory.

    The run directory gets `rl.jsonl` (one line per update: reward, KL, entropy, distinct
    openings, results) and `checkpoints/step_*`, loadable like any training
    checkpoint (their meta.json carries the RL settings under "rl").
    """
    rc = cfg.rl
    if not rc.base:
        raise UserError("rl.base is empty: set the pretrained checkpoint (--set rl.base=PATH)")
    base_policy = ModelPolicy.from_checkpoint(rc.base, device)
    base_model = base_policy.model
    model = copy.deepcopy(base_model).train()
    for prm in base_model.parameters():
        prm.requires_grad_(False)
    policy = ModelPolicy(model, base_policy.vocab, base_policy.cfg, device, model_id=f"rl({base_policy.model_id})")
    max_plies = min(rc.max_plies, policy.context - policy.prompt_len)
    rc = dataclasses.replace(rc, max_plies=max_plies)
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    # The saved config is the base model's (so checkpoints load as usual) with this [rl] section.
    saved_cfg = dataclasses.replace(base_policy.cfg, rl=rc, name=cfg.name, run_dir=str(out_dir))
    (out_dir / "config.json").write_text(json.dumps(to_dict(saved_cfg), indent=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=rc.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(rc.seed)
    torch.manual_seed(rc.seed)
    rollout_at = rollout_model(policy, rc)
    metrics_path = out_dir / "rl.jsonl"
    metrics_path.write_text("")
    t0 = time.perf_counter()
    with _opponent(rc) as opponent, _judge(rc) as judge:
        bar = tqdm(range(1, rc.steps + 1), disable=not progress, unit="update", desc="finetune-rl")
        for step in bar:
            colors: list[chess.Color | None] = (
                [None] * rc.games_per_step if rc.opponent == "self"
                else [chess.WHITE if i % 2 == 0 else chess.BLACK for i in range(rc.games_per_step)])
            model.eval()
            rollouts = play_rollouts(rollout_at, rollout_prompts(rollout_at, colors), colors, opponent, rc,
                                     generator, judge)
            model.train()
            loss, stats = rl_loss(model, base_model, rollouts, policy, rc.beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if rc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), rc.grad_clip)
            optimizer.step()
            results = {res: sum(r.result == res for r in rollouts) for res in (*RESULTS, ABORTED)}
            score = float(np.mean([(r.reward + 1) / 2 for r in rollouts]))
            line = {"step": step, **dataclasses.asdict(stats), "score": score,
                    "distinct_openings": distinct_openings(rollouts, rc.opening_plies),
                    "games": len(rollouts), "mean_plies": float(np.mean([len(r.moves) for r in rollouts])),
                    "results": results, "time_s": round(time.perf_counter() - t0, 1)}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(line) + "\n")
            bar.set_postfix(R=f"{stats.reward:+.2f}", KL=f"{stats.kl:.3f}", H=f"{stats.entropy:.2f}",
                            open=line["distinct_openings"])
            if step % rc.save_every == 0 or step == rc.steps:
                extra = {"rl": {"step": step, "base": str(rc.base), **{k: v for k, v in line.items() if k != "results"}}}
                ckpt_io.save_checkpoint(out_dir / "checkpoints" / f"{ckpt_io.STEP_PREFIX}{step:07d}", model,
                                        saved_cfg, policy.vocab, step=step, tokens_seen=0, metrics=line,
                                        extra=extra)
    return out_dir
