"""train(cfg) -> run directory: AdamW with warmup + cosine, evals, checkpoints, exact resume, DDP.

Run directory layout::

    config.json        the resolved config of the run
    metrics.jsonl      one line per evaluation: val loss, top-1 move accuracy, legal top-1 share
    train.jsonl        one line every log_every steps: train loss, lr, tokens/s
    checkpoints/       step_NNNNNNN (last K) and best (lowest val loss); see chessdt.checkpoint

Under ``torchrun`` every rank trains on its own share of each epoch's batches
(DistributedDataParallel, NCCL on GPU, gloo on CPU); only rank 0 evaluates and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chess
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from chessdt import checkpoint as ckpt_io
from chessdt.config import Config, to_dict
from chessdt.data import IGNORE, Batch, Batcher
from chessdt.errors import UserError
from chessdt.model import GPT
from chessdt.shards import PreparedData
from chessdt.tokenizer import NUM_MOVES, Vocab

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for 'auto'; otherwise the named device."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def lr_at(step: int, lr: float, warmup: int, max_steps: int, min_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine to lr*min_ratio."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA under 'auto' (or anywhere under 'bf16'); fp32 otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def open_data(cfg: Config, run_dir: Path, progress: bool) -> PreparedData:
    """The prepared data of a config: data.prepared, else <run_dir>/data prepared from data.inputs."""
    path = Path(cfg.data.prepared) if cfg.data.prepared else run_dir / "data"
    if not (path / "meta.json").is_file():
        if not cfg.data.inputs:
            raise UserError(f"no prepared data at {path} and no data.inputs to prepare it from")
        from chessdt.prepare import prepare  # only needed the first time

        log.info("preparing %s from %d input(s)", path, len(cfg.data.inputs))
        prepare(list(cfg.data.inputs), path, cfg.data, progress=progress)
    data = PreparedData.open(path)
    if data.vocab.rating_bucket != cfg.data.rating_bucket:
        raise UserError(f"{path} was prepared with rating_bucket={data.vocab.rating_bucket}, "
                        f"the config says {cfg.data.rating_bucket}")
    return data


# -- evaluation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSet:
    """A fixed validation sample: batches plus, per batch, the legal moves at each move target."""

    batches: list[Batch]
    legal: list[list[tuple[int, int, frozenset[int]]]]  # per batch: (row, col, legal move ids)


def _legal_ids(board: chess.Board, vocab: Vocab) -> frozenset[int]:
    return frozenset(vocab.encode_move(m) for m in board.legal_moves)


def build_eval_set(batcher: Batcher, max_tokens: int) -> EvalSet:
    """Batches of the first ~max_tokens validation tokens and the legal moves at each position.

    Boards are rebuilt by replaying each game with python-chess, so legality includes castling
    rights and en passant, which the stored piece arrays do not carry.
    """
    vocab, P = batcher.vocab, batcher.prefix_len
    batches, legal = [], []
    for ids in batcher.fixed_plan(max_tokens):
        batch = batcher.batch(ids)
        entries = []
        for row, (g, s, n_in) in enumerate(batcher.segs[ids]):
            game = batcher.split.game(int(g))
            board = chess.Board()
            for tok in game[P : P + s]:
                board.push(vocab.decode_move(int(tok)))
            for col in range(P - 1, n_in):
                target = int(batch.targets[row, col])
                if target < NUM_MOVES:
                    entries.append((row, col, _legal_ids(board, vocab)))
                    board.push(vocab.decode_move(target))
        batches.append(batch)
        legal.append(entries)
    return EvalSet(batches=batches, legal=legal)


@torch.no_grad()
def evaluate(model: GPT, evalset: EvalSet, device: torch.device, precision: str) -> dict[str, float]:
    """Validation loss (moves and <end>), top-1 move accuracy, share of top-1 picks that are legal."""
    was_training = model.training
    model.eval()
    loss_sum = n_loss = n_moves = correct = legal_n = 0.0
    for batch, entries in zip(evalset.batches, evalset.legal):
        b = batch.to(device)
        with autocast_for(device, precision):
            logits = model(b.tokens, b.boards, b.plies)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits.view(-1, logits.size(-1)), b.targets.view(-1),
                                          ignore_index=IGNORE, reduction="sum"))
        n_loss += int((b.targets != IGNORE).sum())
        top1 = logits.argmax(-1).cpu()
        for row, col, legal in entries:
            pick = int(top1[row, col])
            n_moves += 1
            correct += pick == int(batch.targets[row, col])
            legal_n += pick in legal
    model.train(was_training)
    return {"val_loss": loss_sum / max(1, n_loss), "top1": correct / max(1, n_moves),
            "legal": legal_n / max(1, n_moves), "val_positions": int(n_moves)}


# -- training ------------------------------------------------------------------------------------
def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluations in RUN_DIR/metrics.jsonl, oldest first; unreadable lines (a write cut short)
    and lines without finite tokens and val_loss are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) and math.isfinite(row[k])
                                             for k in ("tokens", "val_loss")):
                rows.append(row)
    return rows


def _trim_jsonl(path: Path, step: int) -> None:
    """Drop lines logged after `step` (an interrupted run went further than its last checkpoint)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


def run_directory(cfg: Config) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path.cwd() / "runs" / cfg.name


def train(cfg: Config, *, resume: bool = False, device: str | None = None, progress: bool = True,
          stop_at: int | None = None) -> Path:
    """Train a model as configured; returns the run directory.

    Args:
        resume: continue from the latest step checkpoint of the run directory, exactly.
        device: overrides train.device.
        stop_at: stop (and checkpoint) after this optimizer step, without changing the schedule.
    """
    tc = cfg.train
    rank, local_rank, world = _dist_info()
    ddp = world > 1
    dev = pick_device(device or tc.device)
    if ddp:
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    master = rank == 0
    if tc.threads:
        torch.set_num_threads(tc.threads)
    run_dir = run_directory(cfg)
    ckpt_dir = run_dir / "checkpoints"
    try:
        if master:
            run_dir.mkdir(parents=True, exist_ok=True)
        latest = ckpt_io.step_checkpoints(ckpt_dir)
        if resume and not latest:
            raise UserError(f"--resume: no checkpoint in {ckpt_dir}")
        if not resume and latest:
            raise UserError(f"{run_dir} already has checkpoints: pass --resume, or set another run_dir")
        if ddp and not master:
            dist.barrier()  # let rank 0 prepare data first
        data = open_data(cfg, run_dir, progress and master)
        if ddp and master:
            dist.barrier()
        vocab = data.vocab
        if master:
            (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))

        torch.manual_seed(tc.seed)
        model = GPT(cfg.model, vocab.size, vocab).to(dev)
        opt_kwargs: dict[str, Any] = dict(lr=tc.lr, betas=(tc.beta1, tc.beta2))
        try:
            optimizer = torch.optim.AdamW(model.optimizer_groups(tc.weight_decay), fused=True, **opt_kwargs)
        except (RuntimeError, TypeError):
            optimizer = torch.optim.AdamW(model.optimizer_groups(tc.weight_decay), **opt_kwargs)
        step = tokens_seen = 0
        train_seconds = 0.0  # training wall time of earlier sessions of this run (for max_minutes)
        best = math.inf
        if resume:
            meta = ckpt_io.load_training_state(latest[-1], model, optimizer)
            if meta["config"]["model"] != to_dict(cfg.model):
                raise UserError(f"--resume: the model config differs from the checkpoint's {latest[-1]}")
            step, tokens_seen = int(meta["step"]), int(meta["tokens_seen"])
            train_seconds = float(meta.get("train_seconds", 0.0))
            best = float(meta.get("best_val_loss", math.inf))
            if master:
                for name in ("metrics.jsonl", "train.jsonl"):
                    _trim_jsonl(run_dir / name, step)
            log.info("resumed from %s at step %d", latest[-1], step)
        raw = model
        fwd: torch.nn.Module = model
        if tc.compile:
            fwd = torch.compile(model)
        if ddp:
            fwd = torch.nn.parallel.DistributedDataParallel(
                fwd, device_ids=[local_rank] if dev.type == "cuda" else None)

        train_batches = Batcher(data, "train", cfg.model.context, tc.batch_tokens, cfg.model.board_input,
                                tc.cond_dropout, tc.seed)
        stream = train_batches.stream(start=step * tc.grad_accum, rank=rank, world=world)
        evalset = None
        if master:
            val = Batcher(data, "val", cfg.model.context, tc.batch_tokens, cfg.model.board_input)
            evalset = build_eval_set(val, tc.eval_tokens)

        def save(metrics: dict[str, Any]) -> None:
            nonlocal best
            extra = {"micro_batches": step * tc.grad_accum * world, "world_size": world,
                     "train_seconds": round(train_seconds + time.perf_counter() - t0, 1),
                     "best_val_loss": min(best, metrics.get("val_loss", math.inf))}
            ckpt_io.save_checkpoint(ckpt_dir / f"{ckpt_io.STEP_PREFIX}{step:07d}", raw, cfg, vocab, step=step,
                                    tokens_seen=tokens_seen, metrics=metrics, optimizer=optimizer, extra=extra)
            if metrics.get("val_loss", math.inf) < best:
                best = metrics["val_loss"]
                ckpt_io.save_checkpoint(ckpt_dir / "best", raw, cfg, vocab, step=step, tokens_seen=tokens_seen,
                                        metrics=metrics, extra=extra)
            ckpt_io.prune(ckpt_dir, tc.keep_last)

        def do_eval(elapsed: float) -> dict[str, Any]:
            assert evalset is not None
            m = {"step": step, "tokens": tokens_seen, "time_s": round(train_seconds + elapsed, 1),
                 **evaluate(raw, evalset, dev, tc.precision)}
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(m) + "\n")
            log.info("step %d: val_loss %.4f top1 %.3f legal %.3f", step, m["val_loss"], m["top1"], m["legal"])
            return m

        metrics: dict[str, Any] = {}
        if master and not resume:
            metrics = do_eval(0.0)
        t0 = time.perf_counter()
        t_log, tok_log = t0, tokens_seen
        last = stop_at if stop_at is not None else tc.max_steps
        by_clock = tc.schedule_by_time and tc.max_minutes > 0  # the clock ends the run, so the bar counts seconds
        if by_clock:
            bar = tqdm(total=round(tc.max_minutes * 60), initial=round(train_seconds), unit="s",
                       disable=not (progress and master), dynamic_ncols=True,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
        else:
            bar = tqdm(total=tc.max_steps, initial=step, disable=not (progress and master), unit="step",
                       dynamic_ncols=True)
        model.train()
        interrupted = False
        try:
            while step < min(last, tc.max_steps):
                sched_step = step
                if tc.schedule_by_time and step >= tc.warmup_steps:  # warm up by steps, decay by the clock
                    spent = train_seconds + time.perf_counter() - t0
                    at = tc.warmup_steps + spent / (tc.max_minutes * 60) * (tc.max_steps - tc.warmup_steps)
                    sched_step = max(step, int(at))
                lr = lr_at(sched_step, tc.lr, tc.warmup_steps, tc.max_steps, tc.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                stats = torch.zeros(2, dtype=torch.float64)  # loss sum over micro-batches, real tokens
                for micro in range(tc.grad_accum):
                    batch = next(stream).to(dev)
                    sync = not ddp or micro == tc.grad_accum - 1
                    with (contextlib.nullcontext() if sync else fwd.no_sync()):  # type: ignore[operator]
                        with autocast_for(dev, tc.precision):
                            logits = fwd(batch.tokens, batch.boards, batch.plies)
                        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch.targets.view(-1),
                                               ignore_index=IGNORE)
                        (loss / tc.grad_accum).backward()
                    stats += torch.tensor([loss.item() / tc.grad_accum, batch.n_real], dtype=torch.float64)
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if ddp:
                    dist.all_reduce(stats)
                    stats[0] /= world
                step += 1
                tokens_seen += int(stats[1])
                if by_clock:
                    clock = min(bar.total, round(train_seconds + time.perf_counter() - t0))
                    bar.update(max(0, clock - bar.n))
                else:
                    bar.update(1)
                if master and (step % tc.log_every == 0 or step == last):
                    now = time.perf_counter()
                    tps = (tokens_seen - tok_log) / max(1e-9, now - t_log)
                    t_log, tok_log = now, tokens_seen
                    bar.set_postfix(step=step, loss=f"{float(stats[0]):.3f}", tok_s=f"{tps:,.0f}", lr=f"{lr:.2e}")
                    line = {"step": step, "tokens": tokens_seen, "loss": float(stats[0]), "lr": lr,
                            "tokens_per_s": round(tps, 1), "time_s": round(train_seconds + now - t0, 1)}
                    if dev.type == "cuda":
                        line["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
                    with open(run_dir / "train.jsonl", "a") as f:
                        f.write(json.dumps(line) + "\n")
                out_of_time = (tc.max_minutes > 0
                               and train_seconds + time.perf_counter() - t0 > tc.max_minutes * 60)
                if ddp:  # every rank must agree to stop, or the others hang in all_reduce
                    flag = torch.tensor([float(out_of_time)])
                    dist.all_reduce(flag)
                    out_of_time = bool(flag.item())
                done = step >= min(last, tc.max_steps) or out_of_time
                if master and (step % tc.eval_every == 0 or done):
                    metrics = do_eval(time.perf_counter() - t0)
                if master and (step % tc.save_every == 0 or done):
                    save(metrics)
                if done:
                    break
        except KeyboardInterrupt:
            interrupted = True
            if master:
                log.warning("interrupted at step %d: saving a checkpoint", step)
                save(metrics)
        finally:
            bar.close()
        if interrupted:
            raise KeyboardInterrupt
        if ddp:
            dist.barrier()
        return run_dir
    finally:
        if ddp and dist.is_initialized():
            dist.destroy_process_group()
