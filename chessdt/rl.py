"""RL fine-tuning (the RLHF recipe, for chess): policy gradient with a KL penalty to the base model.

Each update plays `games_per_step` games with the current policy (half as white, half as black)
against an opponent, all games advancing together through the arena's batched sessions. The
opponent is the frozen base model at the policy's prompt (``opponent = "base"``: the policy starts
at 50%, so every result is informative), the random mover, Stockfish at a strength, or the policy
itself. With ``league = true`` the opponent is replaced by a frozen copy of the current policy
whenever the policy has scored at least `promote_score` over the last `promote_window` updates, so
the reward stays informative as the policy improves. The reward is the game result from the
model's side (+1 / 0 / -1); games cut at `max_plies` are draws, or judged by a Stockfish
evaluation with ``reward = "engine"``; with ``adjudicate = true`` the [eval] section's referee also
ends a rollout at its verdict, which is then the result. With ``reward = "rater"`` the reward is a
learned rater's opinion instead (:mod:`chessdt.rater`, the RLHF analog): 2 * its forecast expected
score at the game's last position (at most `max_plies`) - 1, for every game, finished or not; the
result never reaches the policy. The loss per game is REINFORCE with a leave-one-out
baseline, plus beta times the exact KL(pi || pi_base) over legal moves at every position where the
model moved:

    loss = -mean_i (R_i - mean_{j != i} R_j) * sum_t log pi(a_t | s_t) + beta * mean_t KL_t

The policy samples among legal moves only, and log-probabilities and KL are taken over the
legal-masked distribution, so the gradient matches how the moves were drawn. Logged per update:
reward, KL, policy entropy, distinct openings in the batch and the opponent; every `eval_every`
updates also a direct match against the frozen base (paired openings, Elo with a 95% interval,
refereed with ``adjudicate``: played out and adjudicated), the rater's score of the same games
(with a rater: proxy and true strength side by side, the over-optimisation curve) and the opening
variety of `variety_games` self-play openings, so a collapse shows as it happens.
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
from tqdm import tqdm

from chessdt import checkpoint as ckpt_io
from chessdt.config import Config, RLConfig, to_dict
from chessdt.errors import UserError
from chessdt.model import GPT
from chessdt.play.arena import GameSpec, Seat, model_seat, run_games
from chessdt.rules import Opponent
from chessdt.play.opponents import seat_for
from chessdt.play.gamelog import GameRecord
from chessdt.play.policy import ModelPolicy, Prompted, Sampling
from chessdt.rater import Rater
from chessdt.rules import ABORTED, RESULTS, opening_lines, white_score
from chessdt.stockfish.referee import Referee
from chessdt.tokenizer import game_inputs

log = logging.getLogger(__name__)

POLICY, OPPONENT = "policy", "opponent"  # seat labels in rollout games


@dataclass
class Rollout:
    """One side of one game played by the policy, as the model saw it."""

    prompt: list[int]
    color: chess.Color  # the model's side (a self-play game gives one rollout per side)
    moves: list[chess.Move]
    model_plies: list[int]  # indices into moves that the model chose
    legal: list[torch.Tensor]  # per model ply: (1968,) bool legal-move mask
    reward: float
    result: str


def engine_reward(engine: Any, board: chess.Board, color: chess.Color, nodes: int) -> float:
    """Expected score in [-1, 1] from a Stockfish evaluation (for games cut at max_plies)."""
    info = engine.analyse(board, chess.engine.Limit(nodes=nodes))
    score = info["score"].pov(color)
    wdl = score.wdl(model="sf15.1").expectation()  # 0..1
    return 2.0 * wdl - 1.0


def rollout_model(policy: ModelPolicy, cfg: RLConfig) -> Prompted:
    """The model as it plays rollouts: at rl.rating (0 = unknown), legal moves only, at rl.temperature."""
    return Prompted(policy, cfg.rating or None, None, Sampling(temperature=cfg.temperature, mask_illegal=True))


def rollout_specs(n: int, self_play: bool, seed: int) -> list[GameSpec]:
    """n games from the standard start: the policy alternately White and Black (or both sides)."""
    if self_play:
        return [GameSpec(id=f"g{i}", white=POLICY, black=POLICY, seed=seed) for i in range(n)]
    return [GameSpec(id=f"g{i}", white=POLICY if i % 2 == 0 else OPPONENT, black=OPPONENT if i % 2 == 0 else POLICY,
                     seed=seed) for i in range(n)]


def rollouts_of(record: GameRecord, model: Prompted, judge: Any = None, nodes: int = 0) -> list[Rollout]:
    """The policy's side(s) of a finished game: its plies, legal masks and reward (+1 / 0 / -1;
    a game cut at the move limit is judged by `judge`'s evaluation when one is given)."""
    moves = list(record.game().mainline_moves())
    colors = [c for c in (chess.WHITE, chess.BLACK) if (record.white, record.black)[0 if c else 1] == POLICY]
    out = []
    for color in colors:
        board, plies, legal = chess.Board(), [], []
        for k, m in enumerate(moves):
            if board.turn == color:
                plies.append(k)
                legal.append(model.policy.vocab.legal_mask(board))
            board.push(m)
        if record.termination == "move_limit" and judge is not None:
            reward = engine_reward(judge, board, color, nodes)
        else:
            score = white_score(record.result)
            reward = 2.0 * (score if color == chess.WHITE else 1.0 - score) - 1.0
        out.append(Rollout(model.prompt(color), color, moves, plies, legal, reward, record.result))
    return out


@torch.no_grad()
def play_rollouts(model: Prompted, opponent: Seat | None, cfg: RLConfig, seed: int,
                  judge: Any = None, rater: Rater | None = None, referee: Referee | None = None) -> list[Rollout]:
    """Play `cfg.games_per_step` games of `model` against `opponent` (None: against itself) in
    lockstep and return the policy's rollouts (two per self-play game). A `referee` ends games at its
    verdict (give it a rule with playout 0)."""
    seats: dict[str, Seat] = {POLICY: model}
    if opponent is not None:
        seats[OPPONENT] = opponent
    specs = rollout_specs(cfg.games_per_step, opponent is None, seed)
    records = run_games(specs, seats, None, batch_size=len(specs), max_plies=cfg.max_plies, referee=referee)
    rollouts = [r for rec in records if rec.decided for r in rollouts_of(rec, model, judge, cfg.eval_nodes)]
    if rater is not None:  # the rater's opinion replaces the result: the policy never sees it
        rated = rater.scores([(r.moves, r.color) for r in rollouts], cfg.max_plies)
        rollouts = [dataclasses.replace(r, reward=2.0 * float(x) - 1.0) for r, x in zip(rollouts, rated)]
    return rollouts


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
            beta: float, sampling: Sampling = Sampling(mask_illegal=True)) -> tuple[torch.Tensor, UpdateStats]:
    """REINFORCE with a leave-one-out baseline + beta * KL(pi || pi_base), over legal moves, both
    policies scored with the `sampling` the rollouts were drawn with (so the gradient is on-policy)."""
    if not sampling.mask_illegal:
        raise ValueError("RL rollouts sample among legal moves only (mask_illegal)")
    tokens, boards, plies = sequence_inputs(rollouts, policy)
    logits = GPT.move_logits(policy_model(tokens, boards, plies))  # (B, T, 1968)
    with torch.no_grad():
        base_logits = GPT.move_logits(base_model(tokens, boards, plies))
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
    lp = sampling.log_probabilities(logits[idx_r, idx_c], legal)
    lp_base = sampling.log_probabilities(base_logits[idx_r, idx_c], legal)
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


def opponent_seat(cfg: RLConfig, base: ModelPolicy) -> Seat | None:
    """The rollout opponent: None for self-play, the frozen base model at the policy's prompt, or a
    player seat (the random mover, Stockfish at a strength, any UCI engine; at rl.opponent_nodes)."""
    opponent = Opponent.parse(cfg.opponent, models=True)
    if opponent.kind == "self":
        return None
    if opponent.kind == "base":
        return rollout_model(base, cfg)
    return seat_for(opponent, cfg.engine or None, nodes=cfg.opponent_nodes)


@contextlib.contextmanager
def _judge(cfg: RLConfig) -> Iterator[Any]:
    if cfg.reward != "engine":
        yield None
        return
    from chessdt.stockfish.engine import Engine, find_stockfish

    with Engine(find_stockfish(cfg.engine or None)) as engine:
        yield engine


@contextlib.contextmanager
def _referees(cfg: Config) -> Iterator[tuple[Referee | None, Referee | None]]:
    """(rollout referee, match referee) with the [eval] section's rule when rl.adjudicate is on: the
    rollouts' stops at every verdict (the reward is the verdict; none under a rater, whose reward
    never sees the truth), the matches' plays its share out. (None, None) when it is off."""
    if not cfg.rl.adjudicate:
        yield None, None
        return
    from chessdt.stockfish.engine import find_stockfish
    from chessdt.stockfish.referee import referee_rule

    rule = referee_rule(dataclasses.replace(cfg.eval, adjudicate=True))
    assert rule is not None
    path = find_stockfish(cfg.rl.engine or cfg.eval.engine or None)
    with contextlib.ExitStack() as stack:
        rollouts = (None if cfg.rl.reward == "rater"
                    else stack.enter_context(Referee(path, dataclasses.replace(rule, playout=0.0))))
        yield rollouts, stack.enter_context(Referee(path, rule))


@torch.no_grad()
def measure_against_base(model: Prompted, base: Prompted, cfg: RLConfig, seed: int, referee: Referee | None = None,
                         rater: Rater | None = None) -> dict[str, Any]:
    """A direct match of the policy against the frozen base (paired openings, both colours; with a
    `referee`, Elo adjudicated and as played), the `rater`'s score of the policy's side in the same
    games at the rollouts' horizon, and the opening variety of the policy's own self-play: what the
    log shows every eval_every updates."""
    from chessdt.evals.match import pair_results, pair_specs
    from chessdt.evals.openings import line_stats
    from chessdt.metrics import mean_interval, paired_score

    pairs = max(1, cfg.eval_games // 2)
    specs = pair_specs("base", POLICY, range(pairs), opening_lines(2), seed)
    records = run_games(specs, {"base": base, POLICY: model}, None, batch_size=len(specs),
                        max_plies=cfg.eval_max_plies or cfg.max_plies, referee=referee)
    s = paired_score(pair_results(records, "base", POLICY, "adjudicated" if referee is not None else "as played"))
    out: dict[str, Any] = {"games": s.games, "score": s.score, "elo": s.elo, "elo_lo": s.elo_lo, "elo_hi": s.elo_hi}
    if referee is not None:
        played = paired_score(pair_results(records, "base", POLICY))
        out |= {"played_score": played.score, "played_elo": played.elo, "played_elo_lo": played.elo_lo,
                "played_elo_hi": played.elo_hi}
    if rater is not None:
        games = [(list(r.game().mainline_moves()), chess.WHITE if r.white == POLICY else chess.BLACK)
                 for r in records if r.decided]
        m, lo, hi = mean_interval(rater.scores(games, cfg.max_plies).tolist())
        out |= {"rater_score": m, "rater_lo": lo, "rater_hi": hi}
    plies = cfg.opening_plies
    openings = run_games([GameSpec(id=f"v{i}", white=POLICY, black=POLICY, seed=seed) for i in range(cfg.variety_games)],
                         {POLICY: model}, None, batch_size=cfg.variety_games, max_plies=plies)
    lines = line_stats([r.line() for r in openings], plies)
    return out | {f"lines{plies}_entropy": lines.entropy, f"lines{plies}_distinct": lines.distinct,
                  f"lines{plies}_top_share": lines.top_share}


def load_rater(cfg: RLConfig, device: str) -> Rater | None:
    """The learned rater of reward = rater (rl.rater, or the base's own value head), at the rollouts' prompt."""
    if cfg.reward != "rater":
        return None
    return Rater.load(cfg.rater or cfg.base, device, cfg.rating or None)


def finetune_rl(cfg: Config, out_dir: Path, device: str = "cpu", progress: bool = True) -> Path:
    """Fine-tune cfg.rl.base with policy gradient + KL; returns the run directory.

    The run directory gets `rl.jsonl` (one line per update: reward, score, KL, entropy, distinct
    openings, results, the opponent, and every eval_every updates the match against the base) and
    `checkpoints/step_*`, loadable like any training checkpoint (their meta.json carries the RL
    settings under "rl").
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
    room = policy.context - policy.prompt_len
    rc = dataclasses.replace(rc, max_plies=min(rc.max_plies, room), eval_max_plies=min(rc.eval_max_plies or room, room))
    rater = load_rater(rc, device)
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    # The saved config is the base model's (so checkpoints load as usual) with this [rl] section.
    saved_cfg = dataclasses.replace(base_policy.cfg, rl=rc, name=cfg.name, run_dir=str(out_dir))
    (out_dir / "config.json").write_text(json.dumps(to_dict(saved_cfg), indent=1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=rc.lr, weight_decay=0.0)
    torch.manual_seed(rc.seed)
    rollout_at = rollout_model(policy, rc)
    base_at = rollout_model(base_policy, rc)
    opponent = opponent_seat(rc, base_policy)
    opponent_name = rc.opponent
    recent: list[float] = []  # the policy's score per update against the current opponent
    metrics_path = out_dir / "rl.jsonl"
    metrics_path.write_text("")
    t0 = time.perf_counter()
    with _judge(rc) as judge, _referees(dataclasses.replace(cfg, rl=rc)) as (rollout_referee, match_referee):
        if rc.eval_every > 0:
            first = {"step": 0, "eval": measure_against_base(base_at, base_at, rc, rc.seed, match_referee, rater),
                     "time_s": round(time.perf_counter() - t0, 1)}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(first) + "\n")
        bar = tqdm(range(1, rc.steps + 1), disable=not progress, unit="update", desc="finetune-rl")
        for step in bar:
            model.eval()
            rollouts = play_rollouts(rollout_at, opponent, rc, seed=rc.seed * 1_000_003 + step, judge=judge,
                                     rater=rater, referee=rollout_referee)
            model.train()
            if len(rollouts) < 2:
                log.warning("update %d: fewer than two finished games, skipped", step)
                continue
            loss, stats = rl_loss(model, base_model, rollouts, policy, rc.beta, rollout_at.sampling)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if rc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), rc.grad_clip)
            optimizer.step()
            results = {res: sum(r.result == res for r in rollouts) for res in (*RESULTS, ABORTED)}
            score = float(np.mean([(r.reward + 1) / 2 for r in rollouts]))  # what the policy is paid: a proxy under a rater
            results_score = float(np.mean([white_score(r.result) if r.color == chess.WHITE else 1 - white_score(r.result)
                                           for r in rollouts]))  # the games as they ended (cut-offs: draws)
            line: dict[str, Any] = {
                "step": step, **dataclasses.asdict(stats), "score": score, "result_score": results_score,
                "opponent": opponent_name,
                "distinct_openings": distinct_openings(rollouts, rc.opening_plies), "games": len(rollouts),
                "mean_plies": float(np.mean([len(r.moves) for r in rollouts])), "results": results}
            recent = (recent + [score])[-rc.promote_window:]
            if (rc.league and opponent is not None and model_seat(opponent) is not None
                    and len(recent) == rc.promote_window and float(np.mean(recent)) >= rc.promote_score):
                snapshot = ModelPolicy(copy.deepcopy(model).eval(), policy.vocab, policy.cfg, device,
                                       model_id=f"{policy.model_id}@{step}")
                opponent, opponent_name, recent = rollout_model(snapshot, rc), f"snapshot@{step}", []
                line["promoted"] = opponent_name
            if rc.eval_every > 0 and (step % rc.eval_every == 0 or step == rc.steps):
                model.eval()
                line["eval"] = measure_against_base(rollout_at, base_at, rc, rc.seed, match_referee, rater)
            line["time_s"] = round(time.perf_counter() - t0, 1)
            with open(metrics_path, "a") as f:
                f.write(json.dumps(line) + "\n")
            bar.set_postfix(R=f"{stats.reward:+.2f}", KL=f"{stats.kl:.3f}", H=f"{stats.entropy:.2f}",
                            open=line["distinct_openings"])
            if step % rc.save_every == 0 or step == rc.steps:
                extra = {"rl": {"step": step, "base": str(rc.base),
                                **{k: v for k, v in line.items() if k not in ("results", "eval")}}}
                ckpt_io.save_checkpoint(out_dir / "checkpoints" / f"{ckpt_io.STEP_PREFIX}{step:07d}", model,
                                        saved_cfg, policy.vocab, step=step, tokens_seen=0, metrics=line,
                                        extra=extra)
    return out_dir
