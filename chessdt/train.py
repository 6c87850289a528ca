"""train(cfg) -> run directory: AdamW with warmup + cosine, evals, checkpoints, exact resume, DDP.

Run directory layout::

    config.json        the resolved config of the run
    metrics.jsonl      one line per evaluation: val loss, top-1 move accuracy, legal top-1 share
                       (with a value head also val_value_loss and val_value_brier)
    train.jsonl        one line every log_every steps: train loss, lr, tokens/s (and value_loss)
    checkpoints/       step_NNNNNNN (last K) and best (lowest val loss); see chessdt.checkpoint

With ``model.value_head`` the loss is the next-move loss plus ``train.value_weight`` times the value
head's cross-entropy on each position's W/D/L outcome for the side to move; ``loss`` and
``val_loss`` stay the next-move loss alone, so runs with and without the head compare directly.

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
from typing import Any, cast

import chess
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from chessdt import checkpoint as ckpt_io
from chessdt.checks import check_device
from chessdt.config import Config, prepared_path, run_path, to_dict
from chessdt.data.batches import IGNORE, Batch, Batcher
from chessdt.data import mix
from chessdt.errors import UserError
from chessdt.files import LOCK_NAME, exclusive
from chessdt.model import GPT, check_fits
from chessdt.data.shards import PreparedData
from chessdt.tokenizer import NUM_MOVES, Vocab

log = logging.getLogger(__name__)


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for 'auto'; otherwise the named device, or a UserError when it is not a
    device or this machine does not have it."""
    if name != "auto":
        try:
            dev = torch.device(check_device(name))
        except ValueError as e:
            raise UserError(f"device {name!r}: {e}") from None
        mps = getattr(torch.backends, "mps", None)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {name!r}: torch sees no CUDA GPU on this machine; use cpu (or auto)")
        if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if dev.type == "mps" and not (mps is not None and mps.is_available()):
            raise UserError(f"device {name!r}: torch sees no Apple GPU (MPS) on this machine; use cpu (or auto)")
        return dev
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


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA under 'auto' (or anywhere under 'bf16'); fp32 otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def open_data(cfg: Config, run_dir: Path, progress: bool) -> PreparedData:
    """The prepared data of a config: data.prepared, else <run_dir>/data prepared from data.inputs."""
    path = prepared_path(cfg, run_dir)
    if not (path / "meta.json").is_file():
        if not cfg.data.inputs:
            raise UserError(f"no prepared data at {path} and no data.inputs to prepare it from")
        from chessdt.data.prepare import prepare  # only needed the first time

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
                    entries.append((row, col, vocab.legal_ids(board)))
                    board.push(vocab.decode_move(target))
        batches.append(batch)
        legal.append(entries)
    return EvalSet(batches=batches, legal=legal)


def value_loss_sum(value_logits: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy of the value head over positions with a known outcome, their count)."""
    n = int((values != IGNORE).sum())
    loss = F.cross_entropy(value_logits.float().reshape(-1, 3), values.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss, n


@torch.no_grad()
def evaluate(model: GPT, evalset: EvalSet, device: torch.device, precision: str) -> dict[str, float]:
    """Validation loss (moves and <end>), top-1 move accuracy, share of top-1 picks that are legal;
    with a value head also its mean cross-entropy and 3-class Brier score on the known outcomes."""
    was_training = model.training
    model.eval()
    loss_sum = n_loss = n_moves = correct = legal_n = 0.0
    v_loss = v_brier = 0.0
    v_n = 0
    for batch, entries in zip(evalset.batches, evalset.legal):
        b = batch.to(device)
        with autocast_for(device, precision):
            if model.cfg.value_head and b.values is not None:
                logits, vlogits = model(b.tokens, b.boards, b.plies, with_value=True)
                vl, n = value_loss_sum(vlogits, b.values)
                known = b.values != IGNORE
                probs = torch.softmax(vlogits.float()[known], dim=-1)  # (N, 3)
                onehot = F.one_hot(b.values[known], 3).float()
                v_loss, v_n, v_brier = v_loss + float(vl), v_n + n, v_brier + float(((probs - onehot) ** 2).sum())
            else:
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
    out = {"val_loss": loss_sum / max(1, n_loss), "top1": correct / max(1, n_moves),
           "legal": legal_n / max(1, n_moves), "val_positions": int(n_moves)}
    if v_n:
        out.update(val_value_loss=v_loss / v_n, val_value_brier=v_brier / v_n, val_value_positions=v_n)
    return out


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
    """Drop lines logged after `step` (an interrupted run went further than its last checkpoint),
    and lines that do not parse (a write cut short by a kill or a full disk)."""
    if not path.is_file():
        return
    lines = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(ln)
        except json.JSONDecodeError:
            log.warning("%s: dropped a torn line (%.60s)", path, ln)
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            lines.append(ln)
    path.write_text("".join(ln + "\n" for ln in lines))


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stops, nothing non-finite is saved."""


@dataclass
class _Progress:
    """How far a run has come: saved with every step checkpoint, restored by --resume."""

    step: int = 0  # optimizer steps taken
    tokens_seen: int = 0  # real (non-padding) input tokens trained on, all ranks
    train_seconds: float = 0.0  # training wall time of earlier sessions of this run (for max_minutes)
    best: float = math.inf  # lowest validation loss so far (the `best` checkpoint)


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or a signal after its loop began; `saved` is the checkpoint then
    written (None on ranks other than 0). An interrupt before the loop is a plain KeyboardInterrupt:
    nothing was saved."""

    def __init__(self, saved: Path | None) -> None:
        super().__init__()
        self.saved = saved


@dataclass(frozen=True)
class _Ranks:
    """Where this process sits in a torchrun job (a single process is rank 0 of 1)."""

    rank: int
    local_rank: int
    world: int

    @property
    def ddp(self) -> bool:
        return self.world > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def _start_ranks(tc_device: str) -> tuple[_Ranks, torch.device]:
    """This process's rank and device; joins the process group under torchrun."""
    rank, local_rank, world = _dist_info()
    ranks = _Ranks(rank, local_rank, world)
    dev = pick_device(tc_device)
    if ranks.ddp:
        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return ranks, dev


def _open_run(cfg: Config, run_dir: Path, resume: bool, ranks: _Ranks, progress: bool) -> PreparedData:
    """Check the run directory against --resume, prepare or open the data (rank 0 first), save the config."""
    ckpt_dir = run_dir / "checkpoints"
    if ranks.master:
        run_dir.mkdir(parents=True, exist_ok=True)
    latest = ckpt_io.step_checkpoints(ckpt_dir)
    if resume and not latest:
        raise UserError(f"--resume: no checkpoint in {ckpt_dir}")
    if not resume and latest:
        raise UserError(f"{run_dir} already has checkpoints: pass --resume, or set another run_dir")
    if ranks.ddp and not ranks.master:
        dist.barrier()  # let rank 0 prepare data first
    data = open_data(cfg, run_dir, progress and ranks.master)
    if ranks.ddp and ranks.master:
        dist.barrier()
    if ranks.master:
        (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    return data


def _new_model(cfg: Config, vocab: Vocab, dev: torch.device) -> tuple[GPT, torch.optim.Optimizer]:
    """The model, initialised from train.seed, and its AdamW (fused where the build has it)."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = GPT(cfg.model, vocab.size, vocab).to(dev)
    opt_kwargs: dict[str, Any] = dict(lr=tc.lr, betas=(tc.beta1, tc.beta2))
    try:
        optimizer = torch.optim.AdamW(model.optimizer_groups(tc.weight_decay), fused=True, **opt_kwargs)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(model.optimizer_groups(tc.weight_decay), **opt_kwargs)
    return model, optimizer


def _resume(cfg: Config, run_dir: Path, model: GPT, optimizer: torch.optim.Optimizer, master: bool) -> _Progress:
    """Load the newest readable step checkpoint into model and optimizer (saying so when a newer one
    is corrupt); drop log lines written after it."""
    meta: dict[str, Any] | None = None
    for latest in reversed(ckpt_io.step_checkpoints(run_dir / "checkpoints")):
        try:
            meta = ckpt_io.load_training_state(latest, model, optimizer)  # checks the [model] config first
            break
        except ckpt_io.CorruptCheckpoint as e:
            log.warning("--resume: skipping %s: %s", latest.name, e)
    if meta is None:
        raise UserError(f"--resume: no readable checkpoint in {run_dir / 'checkpoints'} (see the warnings above)")
    done = _Progress(step=int(meta["step"]), tokens_seen=int(meta["tokens_seen"]),
                     train_seconds=float(meta.get("train_seconds", 0.0)),
                     best=float(meta.get("best_val_loss", math.inf)))
    if master:
        for name in ("metrics.jsonl", "train.jsonl"):
            _trim_jsonl(run_dir / name, done.step)
    log.info("resumed from %s at step %d", latest, done.step)
    return done


def _forward_module(model: GPT, cfg: Config, ranks: _Ranks, dev: torch.device) -> torch.nn.Module:
    """What the training step calls: the model, compiled and/or wrapped for DDP as configured."""
    fwd: torch.nn.Module = model
    if cfg.train.compile:
        fwd = cast(torch.nn.Module, torch.compile(model))  # an OptimizedModule; its stub says Callable
    if ranks.ddp:
        fwd = DistributedDataParallel(fwd, device_ids=[ranks.local_rank] if dev.type == "cuda" else None)
    return fwd


class _Trainer:
    """The training loop of one session of a run, its state in one place (see :func:`train`)."""

    def __init__(self, cfg: Config, run_dir: Path, data: PreparedData, ranks: _Ranks, dev: torch.device,
                 model: GPT, optimizer: torch.optim.Optimizer, done: _Progress) -> None:
        tc = cfg.train
        self.cfg, self.tc, self.run_dir, self.ranks, self.dev = cfg, tc, run_dir, ranks, dev
        self.model, self.optimizer, self.done = model, optimizer, done
        self.vocab = data.vocab
        self.fwd = _forward_module(model, cfg, ranks, dev)
        self.value = cfg.model.value_head
        reps = None
        if tc.rating_bands or tc.oversample != "none" or tc.band_cap:
            ratings = mix.game_ratings(data, data.splits["train"])
            reps = mix.epoch_repeats(ratings, tc.rating_bands, tc.oversample, tc.oversample_max, tc.band_cap,
                                     tc.seed)
            if ranks.master:
                log.info("training mix (epoch 1): %s", mix.describe(reps(0)))
        batches = Batcher(data, "train", cfg.model.context, tc.batch_tokens, cfg.model.board_input,
                          tc.cond_dropout, tc.seed, values=self.value, game_repeats=reps)
        self.stream = batches.stream(start=done.step * tc.grad_accum, rank=ranks.rank, world=ranks.world)
        self.evalset: EvalSet | None = None
        if ranks.master:
            val = Batcher(data, "val", cfg.model.context, tc.batch_tokens, cfg.model.board_input,
                          values=self.value)
            self.evalset = build_eval_set(val, tc.eval_tokens)
        self.t0 = time.perf_counter()  # start of this session's training (reset when the loop starts)
        self.metrics: dict[str, Any] = {}  # the latest evaluation, saved with the next checkpoint

    def seconds(self) -> float:
        """Training wall time of the whole run so far (earlier sessions included)."""
        return self.done.train_seconds + time.perf_counter() - self.t0

    def evaluate(self, seconds: float) -> None:
        """Validation metrics now, appended to metrics.jsonl (rank 0 only)."""
        assert self.evalset is not None
        d = self.done
        m = {"step": d.step, "tokens": d.tokens_seen, "time_s": round(seconds, 1),
             **evaluate(self.model, self.evalset, self.dev, self.tc.precision)}
        if not math.isfinite(m["val_loss"]):
            raise TrainingDiverged(self.divergence_message(m["val_loss"]))
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(m) + "\n")
        log.info("step %d: val_loss %.4f top1 %.3f legal %.3f%s", d.step, m["val_loss"], m["top1"], m["legal"],
                 f" value_loss {m['val_value_loss']:.4f}" if "val_value_loss" in m else "")
        self.metrics = m

    def save(self) -> Path:
        """A step checkpoint (optimizer included), `best` when validation improved, old ones pruned;
        returns the step checkpoint."""
        d, tc, ckpt_dir = self.done, self.tc, self.run_dir / "checkpoints"
        val = self.metrics.get("val_loss", math.inf)
        extra = {"micro_batches": d.step * tc.grad_accum * self.ranks.world, "world_size": self.ranks.world,
                 "train_seconds": round(self.seconds(), 1), "best_val_loss": min(d.best, val)}
        saved = ckpt_io.save_checkpoint(ckpt_dir / f"{ckpt_io.STEP_PREFIX}{d.step:07d}", self.model, self.cfg,
                                        self.vocab, step=d.step, tokens_seen=d.tokens_seen, metrics=self.metrics,
                                        optimizer=self.optimizer, extra=extra)
        if val < d.best:
            d.best = val
            ckpt_io.save_checkpoint(ckpt_dir / "best", self.model, self.cfg, self.vocab, step=d.step,
                                    tokens_seen=d.tokens_seen, metrics=self.metrics, extra=extra)
        ckpt_io.prune(ckpt_dir, tc.keep_last)
        return saved

    def learning_rate(self) -> float:
        """This step's learning rate: warmup by steps, then cosine by steps or by the clock."""
        tc, step = self.tc, self.done.step
        sched_step = step
        if tc.schedule_by_time and step >= tc.warmup_steps:  # warm up by steps, decay by the clock
            at = tc.warmup_steps + self.seconds() / (tc.max_minutes * 60) * (tc.max_steps - tc.warmup_steps)
            sched_step = max(step, int(at))
        return lr_at(sched_step, tc.lr, tc.warmup_steps, tc.max_steps, tc.min_lr_ratio)

    def step(self, lr: float) -> torch.Tensor:
        """One optimizer step over grad_accum micro-batches; (mean move loss, real tokens, mean value
        loss) over all ranks (the value loss is 0 without a value head)."""
        tc = self.tc
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        stats = torch.zeros(3, dtype=torch.float64)  # move loss, real tokens, value loss
        for micro in range(tc.grad_accum):
            batch = next(self.stream).to(self.dev)
            sync = not self.ranks.ddp or micro == tc.grad_accum - 1
            with (self.fwd.no_sync() if isinstance(self.fwd, DistributedDataParallel) and not sync
                  else contextlib.nullcontext()):
                value_loss = torch.zeros((), device=self.dev)
                with autocast_for(self.dev, tc.precision):
                    if self.value:
                        assert batch.values is not None  # the batcher was built with values
                        logits, vlogits = self.fwd(batch.tokens, batch.boards, batch.plies, with_value=True)
                        vsum, n = value_loss_sum(vlogits, batch.values)
                        value_loss = vsum / max(n, 1)
                    else:
                        logits = self.fwd(batch.tokens, batch.boards, batch.plies)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch.targets.view(-1),
                                       ignore_index=IGNORE)
                total = loss + tc.value_weight * value_loss
                if self.model.last_rating_loss is not None:  # model.rating_head: set by the forward pass
                    total = total + tc.rating_weight * self.model.last_rating_loss
                    self.model.last_rating_loss = None
                (total / tc.grad_accum).backward()
            stats += torch.tensor([loss.item() / tc.grad_accum, batch.n_real, value_loss.item() / tc.grad_accum],
                                  dtype=torch.float64)
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ranks.ddp:
            dist.all_reduce(stats)
            stats[0] /= self.ranks.world
            stats[2] /= self.ranks.world
        self.done.step += 1
        self.done.tokens_seen += int(stats[1])
        return stats

    def out_of_time(self) -> bool:
        """train.max_minutes reached (agreed by every rank, or the others would hang in all_reduce)."""
        over = self.tc.max_minutes > 0 and self.seconds() > self.tc.max_minutes * 60
        if self.ranks.ddp:
            flag = torch.tensor([float(over)])
            dist.all_reduce(flag)
            over = bool(flag.item())
        return over

    def progress_bar(self, show: bool) -> tqdm:
        """Steps, or seconds when the clock ends the run (schedule_by_time with max_minutes)."""
        tc = self.tc
        if tc.schedule_by_time and tc.max_minutes > 0:
            return tqdm(total=round(tc.max_minutes * 60), initial=round(self.done.train_seconds), unit="s",
                        disable=not show, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
        return tqdm(total=tc.max_steps, initial=self.done.step, disable=not show, unit="step", dynamic_ncols=True)

    def run(self, last: int, show_progress: bool, evaluate_first: bool) -> None:
        """Train until step `last` (or max_steps, or the clock); checkpoint on Ctrl-C and re-raise."""
        tc, d, master = self.tc, self.done, self.ranks.master
        if master and evaluate_first:
            self.evaluate(d.train_seconds)
        self.t0 = time.perf_counter()
        t_log, tok_log = self.t0, d.tokens_seen
        bar = self.progress_bar(show_progress and master)
        by_clock = tc.schedule_by_time and tc.max_minutes > 0
        self.model.train()
        interrupted = False
        saved: Path | None = None
        try:
            while d.step < min(last, tc.max_steps):
                lr = self.learning_rate()
                stats = self.step(lr)
                if not math.isfinite(float(stats[0])):  # all ranks see the same all-reduced loss
                    raise TrainingDiverged(self.divergence_message(float(stats[0])))
                if by_clock:
                    bar.update(max(0, min(bar.total, round(self.seconds())) - bar.n))
                else:
                    bar.update(1)
                if master and (d.step % tc.log_every == 0 or d.step == last):
                    now = time.perf_counter()
                    tps = (d.tokens_seen - tok_log) / max(1e-9, now - t_log)
                    t_log, tok_log = now, d.tokens_seen
                    bar.set_postfix(step=d.step, loss=f"{float(stats[0]):.3f}", tok_s=f"{tps:,.0f}", lr=f"{lr:.2e}")
                    self.log_line(float(stats[0]), lr, tps, d.train_seconds + now - self.t0,
                                  float(stats[2]) if self.value else None)
                over = self.out_of_time()  # asked every step: under DDP every rank must join
                finished = d.step >= min(last, tc.max_steps) or over
                if master and (d.step % tc.eval_every == 0 or finished):
                    self.evaluate(self.seconds())
                if master and (d.step % tc.save_every == 0 or finished):
                    self.save()
                if finished:
                    break
        except KeyboardInterrupt:
            interrupted = True
            if master:
                log.warning("interrupted at step %d: saving a checkpoint", d.step)
                saved = self.save()
        finally:
            bar.close()
        if interrupted:
            raise Interrupted(saved)

    def divergence_message(self, loss: float) -> str:
        """What to tell the user when the loss stopped being finite (nothing is saved from now on)."""
        kept = ckpt_io.step_checkpoints(self.run_dir / "checkpoints")
        where = (f"the last finite checkpoint, {kept[-1]}, is kept" if kept
                 else "no checkpoint had been saved yet")
        return (f"training diverged: loss {loss} at step {self.done.step}; stopped without saving "
                f"(the weights are no longer finite); {where}. Lower train.lr "
                f"(now {self.tc.lr:g}) or raise train.warmup_steps, then start again or --resume")

    def log_line(self, loss: float, lr: float, tokens_per_s: float, seconds: float,
                 value_loss: float | None = None) -> None:
        """One line of train.jsonl."""
        line: dict[str, Any] = {"step": self.done.step, "tokens": self.done.tokens_seen, "loss": loss, "lr": lr,
                                "tokens_per_s": round(tokens_per_s, 1), "time_s": round(seconds, 1)}
        if value_loss is not None:
            line["value_loss"] = value_loss
        if self.dev.type == "cuda":
            line["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(self.dev) / 2**30, 2)
        with open(self.run_dir / "train.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def train(cfg: Config, *, resume: bool = False, device: str | None = None, progress: bool = True,
          stop_at: int | None = None) -> Path:
    """Train a model as configured; returns the run directory.

    Args:
        resume: continue from the latest step checkpoint of the run directory, exactly.
        device: overrides train.device.
        stop_at: stop (and checkpoint) after this optimizer step, without changing the schedule.
    """
    tc = cfg.train
    # before any data is prepared or memory taken: weights, gradients and Adam's two moments must fit
    check_fits(cfg.model, Vocab(rating_bucket=cfg.data.rating_bucket).size, 4, "train")
    ranks, dev = _start_ranks(device or tc.device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    run_dir = run_path(cfg)
    # Only rank 0 locks: the ranks of one torchrun job share the run directory by design.
    lock = (exclusive(run_dir / LOCK_NAME, f"run directory {run_dir}") if ranks.master
            else contextlib.nullcontext())
    try:
        with lock:
            return _train_locked(cfg, run_dir, ranks, dev, resume, progress, stop_at)
    finally:
        if ranks.ddp and dist.is_initialized():
            dist.destroy_process_group()


def _train_locked(cfg: Config, run_dir: Path, ranks: _Ranks, dev: torch.device, resume: bool, progress: bool,
                  stop_at: int | None) -> Path:
    """The body of :func:`train`, run while this process holds the run directory."""
    tc = cfg.train
    data = _open_run(cfg, run_dir, resume, ranks, progress)
    model, optimizer = _new_model(cfg, data.vocab, dev)
    done = _resume(cfg, run_dir, model, optimizer, ranks.master) if resume else _Progress()
    trainer = _Trainer(cfg, run_dir, data, ranks, dev, model, optimizer, done)
    trainer.run(stop_at if stop_at is not None else tc.max_steps, progress, evaluate_first=not resume)
    if ranks.ddp:
        dist.barrier()
    return run_dir
