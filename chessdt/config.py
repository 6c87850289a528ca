"""Experiment configuration: frozen, typed sections loaded from TOML with `--set` overrides.

An experiment file has one TOML table per section (``[data]``, ``[model]``, ...). Every key is a
field of that section's dataclass; an unknown key is an error that lists the valid ones. Fields
not given keep their defaults, so a config file says only what differs.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from chessdt.checks import check_device, check_guidance, check_temperature, check_top_p, check_values
from chessdt.errors import ConfigError, UserError
from chessdt.rules import Opponent
from chessdt.tables import build, merge, parse_overrides, to_dict

Reader = Literal["rust", "python-chess"]  # data.reader
Precision = Literal["auto", "bf16", "fp32"]  # train.precision
Reward = Literal["result", "engine", "rater"]  # rl.reward
Oversample = Literal["none", "rating", "cross"]  # train.oversample (chessdt.data.mix)
OVERSAMPLES: tuple[str, ...] = typing.get_args(Oversample)
LABELS = ("elo", "outcome", "engine")  # condition kinds; combine with '+', or 'none'
TIME_CONTROLS = ("ultrabullet", "bullet", "blitz", "rapid", "classical", "correspondence")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which games to read, how to filter them and how to label them."""

    inputs: tuple[str, ...] = ()  # PGN files/dirs/globs (.pgn, .gz, .bz2, .zst); relative to the config file
    prepared: str = ""  # prepared data directory; relative to the config file; "" = <run_dir>/data
    label: str = "elo"  # condition prefix: elo, outcome, engine, a '+' combination, or none
    rating_bucket: int = 100  # width of a rating token's bucket, in Elo points
    engine_tags: tuple[str, str] = ("WhiteEngineElo", "BlackEngineElo")  # header tags read by label=engine
    min_elo: int = 0  # drop games where a known rating is below this
    max_elo: int = 4000  # drop games where a known rating is above this
    require_both_elo: bool = True  # drop games unless both players have a numeric rating > 0
    rated_only: bool = False  # drop games whose Event says "Casual" (Lichess marks rated games)
    time_controls: tuple[str, ...] = ()  # keep only these Lichess classes; empty = all (unknown included)
    min_plies: int = 2  # drop games shorter than this many half-moves
    max_plies: int = 600  # drop games longer than this (garbage or joke games)
    drop_terminations: tuple[str, ...] = ("Abandoned", "Rules infraction")  # Termination values to drop
    dedupe: bool = True  # drop games whose identity was seen before (Site, or players+date+moves)
    dedupe_bits: int = 32  # Bloom filter of 2**bits bits (32: 512 MiB, flat in the games; false drops
    # about 1.7e-6 of games at 100 million, chessdt.data.dedupe)
    val_fraction: float = 0.02  # share of games in the validation split, chosen by a hash of identity
    split_salt: str = "chessdt"  # salt for that hash; change it to draw another split
    boards: bool = True  # unused since prepared format 2 (boards are computed from the moves per batch); kept so older configs load
    reader: Reader = "rust"  # move parser: rust (compiled, fast) or python-chess (reference)
    keep_truncated: bool = False  # on a truncated archive keep the games read before the break
    batch_games: int = 4096  # games parsed per batch (bounds memory, feeds the parser's threads)
    workers: int = 0  # prepare's worker processes (game-aligned chunks of the input); 0 = every core

    def __post_init__(self) -> None:
        parts = [p for p in self.label.split("+") if p]
        if self.label != "none" and (not parts or any(p not in LABELS for p in parts)):
            raise ConfigError(f"data.label={self.label!r}: use one of {LABELS} joined by '+', or 'none'")
        for tc in self.time_controls:
            if tc not in TIME_CONTROLS:
                raise ConfigError(f"data.time_controls: {tc!r} is not one of {TIME_CONTROLS}")
        if self.reader not in typing.get_args(Reader):
            raise ConfigError(f"data.reader={self.reader!r}: use 'rust' or 'python-chess'")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.rating_bucket <= 0:
            raise ConfigError("data.rating_bucket must be positive")
        if not 10 <= self.dedupe_bits <= 40:
            raise ConfigError(f"data.dedupe_bits={self.dedupe_bits} must be in [10, 40] (log2 of the filter's bits)")
        if self.workers < 0:
            raise ConfigError(f"data.workers={self.workers}: give a number of processes, or 0 for every core")

    @property
    def label_parts(self) -> tuple[str, ...]:
        return () if self.label == "none" else tuple(self.label.split("+"))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of the GPT and what it sees besides the move tokens."""

    n_layer: int = 6  # transformer blocks
    n_head: int = 8  # attention heads per block (d_model must divide evenly)
    d_model: int = 256  # residual stream width
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    context: int = 256  # longest token sequence the model is trained on (positions 0..context-1)
    dropout: float = 0.0  # dropout on attention output and MLP output; 0 for short CPU runs
    board_input: bool = True  # add an embedding of the board after each token (needs boards in the data)
    move_features: bool = True  # a move's embedding also sums from-square, to-square, promotion embeddings
    board_head: bool = True  # add to each move's logit a learned score of the pieces on its from- and to-square
    attack_features: bool = True  # also see attack maps, pins and check; board_head adds a learned weight per move fact
    init_std: float = 0.02  # std of the normal init of weights; residual projections get /sqrt(2*n_layer)
    rating_every: bool = False  # also add the mover's and the opponent's rating (each through its own
    # linear map) at every position, as a decision transformer's return-to-go; the prefix stays
    rating_continuous: bool = False  # rating tokens embed as a linear interpolation between learned
    # anchors every 200 Elo (at the bucket's middle), so a bucket the data never holds still gets a
    # sensible vector from its neighbours, instead of an untrained row of the token table
    value_head: bool = False  # also predict win/draw/loss for the side to move at every position,
    # trained on the game's result (train.value_weight); needs a prefix without the result (data.label)
    rating_film: bool = False  # the mover's rating also scales and shifts the last hidden state (a zero-
    # initialised linear map of its rating vector): the rating injected where the policy is read off
    rating_head: bool = False  # auxiliary head: read the mover's rating off the last hidden state at every
    # position (squared error, weight train.rating_weight), so the rating is a feature the policy sees

    def __post_init__(self) -> None:
        if min(self.n_layer, self.n_head, self.d_model, self.mlp_ratio, self.context) <= 0:
            raise ConfigError("model sizes (n_layer, n_head, d_model, mlp_ratio, context) must be positive")
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0 or not self.init_std > 0:
            raise ConfigError("model.dropout must be in [0, 1) and model.init_std positive")
        if self.board_head and not self.board_input:
            raise ConfigError("model.board_head needs model.board_input = true")
        if self.attack_features and not self.board_input:
            raise ConfigError("model.attack_features needs model.board_input = true")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation, batching, evaluation and checkpointing of one training run."""

    seed: int = 0  # seeds weights, data order, condition dropout: same seed, same run (on CPU)
    device: str = "auto"  # auto = cuda, then mps, then cpu; or an explicit torch device string
    batch_tokens: int = 8192  # padded tokens per micro-batch per rank (games are bucketed by length)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 1000  # optimizer steps; the cosine schedule ends here
    max_minutes: float = 0.0  # also stop (and save) after this much wall time; 0 = no limit
    schedule_by_time: bool = False  # cosine over max_minutes of training time, not max_steps (fixed-time budgets; not bit-reproducible)
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    warmup_steps: int = 100  # linear warmup from ~0 to lr
    weight_decay: float = 0.1  # AdamW decay on matmul weights (not embeddings, norms)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 = off
    cond_dropout: float = 0.1  # chance that a rating token is replaced by <rating:?> (for guidance)
    eval_every: int = 200  # steps between validation passes (and at the end)
    eval_tokens: int = 65536  # validation tokens per eval (a fixed set: the same games every time)
    save_every: int = 1000  # steps between checkpoints (a checkpoint is also written at the end)
    keep_last: int = 2  # step checkpoints kept besides the best one
    log_every: int = 10  # steps between metrics lines in train.jsonl
    compile: bool = False  # torch.compile the model (slow first steps; worth it for long GPU runs)
    precision: Precision = "auto"  # auto = bf16 autocast on CUDA, fp32 elsewhere; or bf16, fp32
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    value_weight: float = 0.25  # weight of the value head's loss (cross-entropy on W/D/L) beside the move loss
    rating_weight: float = 0.5  # weight of the rating head's loss (model.rating_head) beside the move loss (untuned)
    rating_bands: tuple[tuple[int, int], ...] = ()  # train only on games whose two players both lie in one
                                                    # [lo, hi] rating range (learnability checks); () = every game
    oversample: Oversample = "none"  # "rating": each 200-point band of mean rating drawn about equally;
                                     # "cross": +1 draw per 200 points between the players (chessdt.data.mix)
    oversample_max: int = 4  # the most times oversampling draws one game per epoch
    band_cap: int = 0  # at most this many game draws per 200-point band of mean rating per epoch, a fresh
                       # random sample each epoch (a large source, e.g. elite games, feeds the top band
                       # without drowning the rest); 0 = no cap

    def __post_init__(self) -> None:
        if self.precision not in typing.get_args(Precision):
            raise ConfigError(f"train.precision={self.precision!r}: use auto, bf16 or fp32")
        check_values("train.device", check_device, self.device)
        if not 0.0 <= self.cond_dropout <= 1.0:
            raise ConfigError(f"train.cond_dropout={self.cond_dropout} must be in [0, 1]")
        if min(self.batch_tokens, self.grad_accum, self.max_steps, self.eval_every, self.save_every,
               self.log_every, self.eval_tokens) <= 0:
            raise ConfigError("train.batch_tokens, grad_accum, max_steps, eval_every, save_every, log_every "
                              "and eval_tokens must be positive")
        if self.warmup_steps < 0 or self.keep_last < 0 or self.threads < 0:
            raise ConfigError("train.warmup_steps, keep_last and threads must not be negative")
        # `not x > 0` is also true for NaN, which every comparison fails
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr={self.lr} must be a positive finite number")
        for name in ("min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "max_minutes",
                     "value_weight", "rating_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"train.{name}={value} must be a finite number, 0 or more")
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ConfigError("train.beta1 and train.beta2 must be below 1")
        if self.schedule_by_time and self.max_minutes <= 0:
            raise ConfigError("train.schedule_by_time needs train.max_minutes > 0")
        if self.oversample not in OVERSAMPLES:
            raise ConfigError(f"train.oversample={self.oversample!r}: use one of {', '.join(OVERSAMPLES)}")
        if self.oversample_max < 1:
            raise ConfigError(f"train.oversample_max={self.oversample_max} must be 1 or more")
        if self.band_cap < 0:
            raise ConfigError(f"train.band_cap={self.band_cap} must be 0 (no cap) or more")
        for lo, hi in self.rating_bands:
            if not 0 <= lo <= hi:
                raise ConfigError(f"train.rating_bands: [{lo}, {hi}] is not a range of ratings (0 <= lo <= hi)")


@dataclass(frozen=True, kw_only=True)
class RLConfig:
    """RL fine-tuning of a pretrained model (`chessdt finetune-rl`): REINFORCE + KL to the base."""

    base: str = ""  # checkpoint (or run directory) of the pretrained model; relative to the config file
    steps: int = 50  # policy-gradient updates
    games_per_step: int = 16  # rollout games per update (half with white, half with black)
    lr: float = 1e-5  # AdamW learning rate (constant)
    beta: float = 0.1  # KL(pi || pi_base) penalty coefficient
    rating: int = 0  # prompted rating of the model's own side during rollouts; 0 = <rating:?>
    opponent: str = "base"  # base (the frozen base model at the policy's prompt), self, random, or Stockfish:
    # skill=N, full, a UCI_Elo rating, eps=P
    league: bool = False  # replace a model opponent by a frozen copy of the policy once it scores promote_score
    promote_score: float = 0.7  # league: mean score over the last promote_window updates that promotes
    promote_window: int = 10  # league: updates averaged for promotion
    opponent_nodes: int = 2000  # Stockfish node budget per move
    engine: str = ""  # Stockfish binary; "" = PATH, then /usr/games/stockfish
    reward: Reward = "result"  # result (+1 win, 0 draw, -1 loss), engine (games cut at max_plies judged by
    # Stockfish's expected score), or rater (the learned rater's forecast at the last position, for every game:
    # the RLHF analog, which never sees the result)
    rater: str = ""  # reward = rater: a checkpoint with a value head; "" = rl.base; relative to the config file
    adjudicate: bool = False  # the [eval] section's referee watches rollouts (a verdict ends the game and is its
    # result) and the matches against the base (played-out and adjudicated Elo, with its playout share)
    eval_nodes: int = 5000  # node budget for engine adjudication of unfinished games
    max_plies: int = 160  # a game stops here and counts as a draw (or is adjudicated); the rater's horizon
    eval_max_plies: int = 0  # the matches against the base stop here; 0 = as long as the model's context allows
    temperature: float = 1.0  # rollout sampling temperature (legal moves only)
    grad_clip: float = 1.0  # clip the global gradient norm; 0 = off
    save_every: int = 25  # updates between checkpoints (and at the end)
    opening_plies: int = 8  # 'distinct openings per batch' counts distinct first-N-ply lines
    eval_every: int = 0  # updates between direct matches against the frozen base (0 = none)
    eval_games: int = 64  # games of each such match (paired openings)
    variety_games: int = 128  # self-play openings (opening_plies long) for the logged line entropy
    seed: int = 0  # rollouts and sampling

    def __post_init__(self) -> None:
        try:
            Opponent.parse(self.opponent, models=True)
        except UserError as e:
            raise ConfigError(f"rl.{e}") from None
        if not 0 < self.promote_score <= 1 or self.promote_window < 1:
            raise ConfigError("rl.promote_score must be in (0, 1] and rl.promote_window at least 1")
        if self.eval_every < 0 or self.eval_games < 2 or self.variety_games < 1:
            raise ConfigError("rl.eval_every must be >= 0, rl.eval_games >= 2 and rl.variety_games >= 1")
        if self.reward not in typing.get_args(Reward):
            raise ConfigError(f"rl.reward={self.reward!r}: use result, engine or rater")
        if self.eval_max_plies < 0:
            raise ConfigError("rl.eval_max_plies must be >= 0 (0 = the model's context)")
        if self.games_per_step < 2:
            raise ConfigError("rl.games_per_step must be at least 2 (the baseline is the others' mean)")
        check_values("rl.temperature", check_temperature, self.temperature)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Sizes and settings of the evaluators (`chessdt eval ...`, `chessdt run`).

    The defaults run all three evaluators in a few minutes on 2 CPU cores; raise the counts
    (ladder_games, matching_games, openings_games, ...) for numbers with tight intervals.
    """

    # -- shared --
    ratings: tuple[int, ...] = (1200, 1600, 2000, 2400)  # prompted ratings evaluated
    temperature: float = 1.0  # model sampling temperature in played games (0 = most likely move)
    top_p: float = 1.0  # nucleus sampling mass in played games (1 = off)
    guidance: float = 0.0  # classifier-free guidance weight in played games (0 = off)
    mask_illegal: bool = False  # sample among legal moves only when playing (reported; legality is measured raw)
    band_width: int = 200  # human rating band of a prompted rating r: ratings in [r - w/2, r + w/2)
    games: str = ""  # held-out games: prepared data dir (val split) or PGN file; "" = the run's prepared data
    engine: str = ""  # Stockfish binary; "" = stockfish on PATH, then /usr/games/stockfish
    seed: int = 0  # seeds sampling, position choice and openings
    batch_size: int = 64  # model games advanced together through the KV cache
    workers: int = 2  # engine processes per Stockfish opponent (their moves run in parallel)
    max_plies: int = 300  # a game still running after this many half-moves is a draw (move_limit)
    threads: int = 1  # torch CPU threads set by the CLI for evals (small batches run best on 1); 0 = leave as is
    # -- legality --
    legality_positions: int = 2000  # held-out positions scored (taken in order from legality_games games)
    legality_games: int = 200  # held-out games read for legality
    ply_buckets: tuple[int, ...] = (0, 10, 20, 40, 80)  # lower edges of the ply buckets
    legality_selfplay: int = 8  # full self-play games per prompted rating, for illegal attempts per game
    # -- strength: ladder matches --
    ladder: tuple[str, ...] = ("random", "skill=0", "1350", "1600")  # opponents; UCI_Elo rungs anchor the fit
    ladder_games: int = 4  # games per prompted rating per opponent (each opening played with both colours)
    ladder_nodes: int = 1000  # Stockfish node budget per move in ladder games
    calibration_games: int = 4  # games between neighbouring opponents, tying unanchored ones to the scale
    opening_plies: int = 4  # plies of the paired opening lines (0 = every game from the start position)
    virtual_draws: float = 1.0  # draws added per pair that met, in the Elo fit (keeps perfect scores finite)
    # -- strength: direct matches between settings (the instrument for small differences) --
    match_games: int = 200  # games per pair of settings, paired openings (400 resolve about +-20 Elo); 0 = off
    match_plan: str = "adjacent"  # which settings meet: "adjacent" (neighbours, and first vs last) or "all"
    match_extra: tuple[str, ...] = ()  # settings besides eval.ratings, e.g. "rating=2000,temperature=0.3"
    # -- referee adjudication of played games (direct matches and ladder games; chessdt/stockfish/referee.py) --
    adjudicate: bool = False  # a fixed-node Stockfish judges every position; its rule may end a game
    referee_cp: int = 500  # a win once the referee scores the leader at >= this many centipawns ...
    referee_plies: int = 10  # ... on this many consecutive plies ...
    referee_from_ply: int = 20  # ... ending at this ply or later
    referee_nodes: int = 1000  # the referee's node budget per position
    referee_playout: float = 1.0  # share of would-be-adjudicated games played on to the end (validation); at 1
    # every game ends on the board and Elo is reported both ways, at < 1 adjudicated Elo only
    # -- strength: human move matching and centipawn loss --
    matching_games: int = 200  # held-out games for move matching
    skip_plies: int = 10  # opening plies left out of move matching and centipawn loss (Maia's protocol)
    matching_references: tuple[str, ...] = ()  # UCI engines scored on the same positions, e.g.
    # "uci=lc0 --weights=maia-1500.pb.gz@1500/1" (Maia at one node); see eval.ladder for the grammar
    cpl_positions: int = 60  # held-out positions analysed per prompted rating
    cpl_nodes: int = 2000  # Stockfish node budget per analysed position
    # -- openings --
    openings_games: int = 40  # self-play games per prompted rating (first max(line_plies) plies)
    openings_vs_games: int = 40  # games per prompted rating against openings_opponent
    openings_opponent: str = "skill=0"  # the fixed opponent: random, skill=N or a UCI_Elo rating (at ladder_nodes)
    line_plies: tuple[int, ...] = (2, 4, 8, 12)  # k of the first-k-ply line distributions
    repeat_samples: int = 50  # samples of the same position in the repeated-prompt test
    repeat_lines: tuple[str, ...] = ("start", "e2e4", "d2d4")  # its positions: moves from the start ("start" = none)
    openings_human_games: int = 5000  # held-out human games read for the data side (split into bands)
    # -- the prompt where history cannot help (`chessdt eval prompt`: the first plies by band) --
    prompt_games: int = 5000  # held-out games read (only their first prompt_plies plies are scored)
    prompt_plies: int = 10  # plies scored from the start of each game
    prompt_top_moves: int = 6  # White's first moves listed with their shares
    prompt_bootstrap: int = 1000  # resamples of the games behind each 95% interval
    # -- fidelity (models trained on a softmax ladder: the prompted model against each rung's exact policy) --
    fidelity_games: int = 60  # held-out games whose positions are scored (each position costs one Stockfish multi-PV)
    fidelity_plies: int = 300  # plies of each game scored, from the start
    fidelity_good_cp: int = 50  # "good moves": within this many centipawns of the best
    fidelity_rungs: tuple[str, ...] = ()  # the ladder's rungs (RATING:softmax=T[,gate=C]/NODES); () = read
    # from the Event tag of the first ladder file in data.inputs
    # -- value head (models with model.value_head) --
    value_games: int = 1000  # held-out games (with a result) whose positions the value head forecasts
    value_bootstrap: int = 1000  # resamples of those games behind each 95% interval

    def __post_init__(self) -> None:
        if not self.ratings:
            raise ConfigError("eval.ratings must list at least one prompted rating")
        if self.band_width <= 0 or self.batch_size <= 0 or self.workers <= 0 or self.max_plies <= 0:
            raise ConfigError("eval.band_width, batch_size, workers and max_plies must be positive")
        if not self.line_plies or min(self.line_plies) <= 0:
            raise ConfigError("eval.line_plies must be positive numbers of plies")
        if self.match_games % 2 or self.match_games < 0:
            raise ConfigError(f"eval.match_games={self.match_games} must be even (openings are paired by colour)")
        if self.match_plan not in ("adjacent", "all"):
            raise ConfigError(f"eval.match_plan={self.match_plan!r}: use 'adjacent' or 'all'")
        if self.ladder_games % 2:
            raise ConfigError(f"eval.ladder_games={self.ladder_games} must be even (openings are paired by colour)")
        if self.fidelity_games < 0 or self.fidelity_plies <= 0 or self.fidelity_good_cp < 0:
            raise ConfigError("eval.fidelity_games and fidelity_good_cp must be >= 0, fidelity_plies positive")
        if min(self.prompt_games, self.prompt_plies, self.prompt_top_moves, self.prompt_bootstrap) <= 0:
            raise ConfigError("eval.prompt_games, prompt_plies, prompt_top_moves and prompt_bootstrap must be positive")
        if self.value_games <= 0 or self.value_bootstrap <= 0:
            raise ConfigError("eval.value_games and eval.value_bootstrap must be positive")
        if self.referee_cp <= 0 or self.referee_plies < 1 or self.referee_nodes < 1 or self.referee_from_ply < 0:
            raise ConfigError("eval.referee_cp and referee_nodes must be positive, referee_plies >= 1, "
                              "referee_from_ply >= 0")
        if not 0.0 <= self.referee_playout <= 1.0:
            raise ConfigError(f"eval.referee_playout={self.referee_playout} is a share, from 0 to 1")
        check_values("eval.temperature", check_temperature, self.temperature)
        check_values("eval.top_p", check_top_p, self.top_p)
        check_values("eval.guidance", check_guidance, self.guidance)


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """The frontier experiment (`chessdt experiment`): strength against variety, one curve per arm.

    Every arm setting plays `match_games` games against one reference (the base model at
    `reference`), so every measured Elo is a difference from the same player with a paired
    interval; every setting's variety is measured on the same self-play openings and positions.
    """

    base: str = ""  # pretrained rating-conditioned checkpoint; "" = train it from [data]/[model]/[train]
    reference: str = "rating=1600"  # the base model setting every arm plays against (Elo 0 of the frontier);
    # the temperature, RL and quantilizer arms start from it (its rating is their prompt)
    ratings: tuple[int, ...] = (1200, 2000, 2400)  # conditioning arm: prompted ratings besides the reference's
    guidance_rating: int = 2000  # guidance arm: prompted rating
    guidance: tuple[float, ...] = (1.0, 3.0)  # guidance arm: weights w (needs train.cond_dropout > 0)
    temperatures: tuple[float, ...] = (0.7, 0.5, 0.3, 0.1)  # temperature arm, at the reference prompt
    filtered_min_elo: int = 2000  # filtered-imitation arm: keep games with both players at/above; 0 = off
    filtered_minutes: float = 0.0  # its training budget in minutes; 0 = the same [train] settings as the base
    rungs: tuple[str, ...] = ()  # the data's own players on the frontier: rung specs ('2000:softmax=20,gate=50/150'),
    # or ["data"] = the softmax rungs named in the base's games (their Event tag); () = none
    rl_rewards: tuple[str, ...] = ()  # RL arm: one run per reward (result, engine, rater; () = rl.reward) ...
    rl_betas: tuple[float, ...] = (0.02, 0.2)  # ... per KL coefficient ([rl] for the rest) ...
    rl_seeds: tuple[int, ...] = (0,)  # ... and per seed (intervals across seeds)
    rl_steps: tuple[int, ...] = ()  # RL checkpoints measured along each run (multiples of rl.save_every); () = last
    quantilizer_k: int = 8  # quantilizer arm: moves drawn from the base model per decision
    quantilizer_q: tuple[float, ...] = (0.5, 0.25, 0.125)  # kept fractions (q = 1/k is best-of-k); () = off
    quantilizer_nodes: int = 300  # Stockfish nodes per candidate evaluation
    match_games: int = 300  # games of each setting against the reference (paired openings, both colours)
    max_plies: int = 300  # a match game still running here is a draw
    variety_games: int = 500  # self-play openings per setting
    variety_plies: tuple[int, ...] = (2, 4, 8)  # line lengths k of the opening variety
    positions: int = 300  # held-out positions for per-position and good-move diversity
    position_nodes: int = 20000  # Stockfish nodes of the multi-PV search that scores every legal move
    good_cp: float = 50.0  # a good move is within this many centipawns of the best
    frontier_plies: int = 4  # line length k of the frontier's opening-variety axis (one of variety_plies)
    bootstrap: int = 1000  # bootstrap samples of every interval
    batch_size: int = 128  # games advanced together
    seed: int = 0

    def __post_init__(self) -> None:
        if self.match_games < 2 or self.match_games % 2:
            raise ConfigError("experiment.match_games must be even and at least 2 (pairs of games)")
        if self.frontier_plies not in self.variety_plies:
            raise ConfigError(f"experiment.frontier_plies={self.frontier_plies} must be one of variety_plies")
        if min(self.variety_games, self.positions, self.bootstrap, self.batch_size) < 1:
            raise ConfigError("experiment.variety_games, positions, bootstrap and batch_size must be positive")
        bad = [r for r in self.rl_rewards if r not in typing.get_args(Reward)]
        if bad or not self.rl_seeds:
            raise ConfigError(f"experiment.rl_rewards {bad}: use result, engine or rater; rl_seeds must not be empty")
        if any(not 0 < q <= 1 for q in self.quantilizer_q):
            raise ConfigError("experiment.quantilizer_q must be in (0, 1]")
        check_values("experiment.temperatures", check_temperature, *self.temperatures)
        check_values("experiment.guidance", check_guidance, *self.guidance)


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole experiment: one field per TOML section."""

    name: str = "experiment"  # run name, used for the run directory
    run_dir: str = ""  # where outputs go; relative to the config file; "" = runs/<name> under cwd
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        from chessdt.tokenizer import condition_slots  # the one place that knows the prefix's length

        prefix = 1 + len(condition_slots(self.data.label_parts))  # <bos> and the condition slots
        if self.model.context <= prefix:
            raise ConfigError(f"model.context={self.model.context} leaves no room for moves after the {prefix}-token "
                              f"prefix of data.label={self.data.label!r}; use at least {prefix + 1}")
        if self.model.value_head and "outcome" in self.data.label_parts:
            # The prompt would hold the answer: the value head would learn to read the result slot,
            # and in play (where the slot says "I win") report a win in every position.
            raise ConfigError("model.value_head needs a prefix without the result: drop 'outcome' from "
                              f"data.label (now {self.data.label!r})")


def _upgrade(table: dict[str, Any]) -> dict[str, Any]:
    """A config table in today's schema from one written before a field changed (old experiment
    files, meta.json of old checkpoints): rl.opponent = "stockfish" with rl.opponent_elo (0 = use
    rl.opponent_skill) became one strength spec in rl.opponent; experiment.base_rating (the RL and
    quantilizer arms' prompt, 0 = unknown) became experiment.reference; experiment.kl_positions went
    (KL is measured on the experiment's positions)."""
    ex = table.get("experiment")
    if isinstance(ex, dict) and {"base_rating", "kl_positions"} & set(ex):
        ex = dict(ex)
        ex.pop("kl_positions", None)
        if "base_rating" in ex:
            old = ex.pop("base_rating")
            ex.setdefault("reference", f"rating={old}" if old else "rating=?")
        table = {**table, "experiment": ex}
    rl = table.get("rl")
    if not isinstance(rl, dict) or not ({"opponent_elo", "opponent_skill"} & set(rl) or rl.get("opponent") == "stockfish"):
        return table
    rl = dict(rl)
    try:
        elo, skill = int(rl.pop("opponent_elo", 0) or 0), int(rl.pop("opponent_skill", 0) or 0)
    except (TypeError, ValueError):
        raise ConfigError("rl.opponent_elo and rl.opponent_skill must be whole numbers (better: rl.opponent = "
                          "'1600' or 'skill=3')") from None
    if rl.get("opponent", "stockfish") == "stockfish":
        rl["opponent"] = str(elo) if elo else f"skill={skill}"
    return {**table, "rl": rl}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read an experiment TOML (or defaults when path is None) and apply `--set` overrides.

    Relative paths inside the file (data.inputs, data.prepared, run_dir) are resolved against the
    file's folder, so a config runs the same from any working directory.
    """
    table: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a directory, not an experiment TOML file") from None
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (an experiment TOML is UTF-8 text)") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        except RecursionError:  # tomllib parses nested arrays and tables recursively
            raise ConfigError(f"{path}: nested too deep to be an experiment config") from None
    table = _upgrade(merge(table, parse_overrides(overrides or [])))
    cfg: Config = build(Config, table, "")
    if path is not None:
        cfg = resolve_paths(cfg, Path(path).resolve().parent)
    return cfg


def _resolve(p: str, base: Path) -> str:
    if not p or Path(p).is_absolute():
        return p
    return str((base / p).resolve())


def resolve_paths(cfg: Config, base: Path) -> Config:
    data = dataclasses.replace(
        cfg.data,
        inputs=tuple(_resolve(p, base) for p in cfg.data.inputs),
        prepared=_resolve(cfg.data.prepared, base),
    )
    rl = dataclasses.replace(cfg.rl, base=_resolve(cfg.rl.base, base), rater=_resolve(cfg.rl.rater, base))
    ev = dataclasses.replace(cfg.eval, games=_resolve(cfg.eval.games, base))
    experiment = dataclasses.replace(cfg.experiment, base=_resolve(cfg.experiment.base, base))
    return dataclasses.replace(cfg, data=data, rl=rl, eval=ev, experiment=experiment,
                               run_dir=_resolve(cfg.run_dir, base))


def override(cfg: Config, overrides: list[str]) -> Config:
    """`cfg` with `--set section.key=value` overrides applied (converted by each field's type)."""
    return config_from_dict(merge(to_dict(cfg), parse_overrides(overrides)))


def run_path(cfg: Config) -> Path:
    """The run directory of a config: run_dir, else runs/<name> under the working directory."""
    return Path(cfg.run_dir) if cfg.run_dir else Path.cwd() / "runs" / cfg.name


def prepared_path(cfg: Config, run: Path | None = None) -> Path:
    """The prepared data of a config: data.prepared, else <run dir>/data."""
    return Path(cfg.data.prepared) if cfg.data.prepared else (run or run_path(cfg)) / "data"


def config_from_dict(table: dict[str, Any]) -> Config:
    """Inverse of to_dict: rebuild a Config saved in a run directory or checkpoint (of any version)."""
    return build(Config, _upgrade(table), "")
