"""eval prompt: the prompt's effect in the first plies, against each band's own moves."""

from __future__ import annotations

import json
from pathlib import Path

import chess
import pytest
import torch

from chessdt import cli
from chessdt.evals.heldout import HeldOutGame, teacher_forced_logits
from chessdt.evals.prompt import PromptResult, evaluate_prompt
from chessdt.metrics import wilson_interval
from chessdt.play.policy import ModelPolicy, Sampling
from conftest import small_cfg
from tiny_policy import tiny_policy

E4, D4, E5, D5 = (chess.Move.from_uci(u) for u in ("e2e4", "d2d4", "e7e5", "d7d5"))


def band_games(n: int) -> list[HeldOutGame]:
    """n games where White is rated 1200 and opens 1.e4, n where White is 2000 and opens 1.d4
    (Black, rated 1600, answers symmetrically), then a few plies of the same line."""
    low = (E4, E5, chess.Move.from_uci("g1f3"), chess.Move.from_uci("b8c6"))
    high = (D4, D5, chess.Move.from_uci("c2c4"), chess.Move.from_uci("e7e6"))
    return [HeldOutGame(moves=low, white=1250, black=1650, result="1-0") for _ in range(n)] + \
           [HeldOutGame(moves=high, white=2050, black=1650, result="0-1") for _ in range(n)]


class SteeredModel(torch.nn.Module):
    """A stand-in GPT that the prompt steers completely: White's rating slot below 1600 puts almost all
    mass on e2e4 / e7e5, at or above it on d2d4 / d7d5 (every position, so both sides see it)."""

    def __init__(self, policy: ModelPolicy) -> None:
        super().__init__()
        self.vocab = policy.vocab
        self.threshold = policy.vocab.rating_token(1600)
        self.size = policy.vocab.size

    def forward(self, tokens: torch.Tensor, boards: torch.Tensor, plies: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        out = torch.zeros(B, T, self.size)
        low = tokens[:, 1] < self.threshold  # (B,) the white rating slot
        for b in range(B):
            first, second = (E4, E5) if low[b] else (D4, D5)
            out[b, :, self.vocab.encode_move(first)] = 12.0
            out[b, :, self.vocab.encode_move(second)] = 12.0
        return out


def steered_policy() -> ModelPolicy:
    policy = tiny_policy(context=32)
    policy.model = SteeredModel(policy)  # type: ignore[assignment]
    return policy


def test_a_prompt_that_steers_is_closest_to_its_own_band() -> None:
    cfg = small_cfg(ratings=(1200, 2000), prompt_plies=4, prompt_bootstrap=200)
    result = evaluate_prompt(steered_policy(), band_games(12), cfg)
    assert result.positions == (24, 24)  # 12 games x 2 White moves in the first 4 plies, per band
    assert result.band_games == (12, 12)
    assert result.best_nll == (1200, 2000) and result.best_tv == (1200, 2000)
    assert result.own_best_nll == 2 and result.own_best_tv == 2
    for ci in range(2):
        gain = result.own_gain[ci]
        assert gain is not None and gain.value > 5 and gain.lo > 5  # ~12 nats: e4 at prompt 2000 is nearly impossible
        assert result.tv[ci][ci].value < 0.01
        assert result.tv[1 - ci][ci].value > 0.99
    # the data's lowest and highest bands never share a first move; the prompts put it apart as far
    assert result.data_spread.value == pytest.approx(1.0) and result.data_spread.lo == pytest.approx(1.0)
    assert result.model_spread.value > 0.99
    shares = {s.move: s for s in result.first_moves}
    assert set(shares) == {"e2e4", "d2d4"}
    assert shares["e2e4"].data[0].value == 1.0 and shares["e2e4"].data[1].value == 0.0
    assert shares["e2e4"].data[0].lo == pytest.approx(wilson_interval(12, 12)[0])  # 12 of 12 White players, ~0.76
    assert shares["e2e4"].model[0] > 0.99 and shares["d2d4"].model[1] > 0.99


def test_nll_is_the_mean_of_the_played_moves_probabilities(one_thread: None) -> None:
    policy = tiny_policy(seed=3, context=32)
    games = band_games(3)
    cfg = small_cfg(ratings=(1200, 2000), prompt_plies=4, prompt_bootstrap=50)
    result = evaluate_prompt(policy, games, cfg)
    # by hand: band 1200's White moves (plies 0 and 2 of the first 3 games) under prompt 2000
    total, n = 0.0, 0
    prompts = [policy.prompt(2000, g.black, g.result) for g in games[:3]]
    for i, logits in teacher_forced_logits(policy, games[:3], prompts):
        board = chess.Board()
        for p, move in enumerate(games[i].moves):
            if p % 2 == 0:
                probs = Sampling().played(logits[p : p + 1], policy.vocab.legal_mask(board)[None])
                total -= float(torch.log(probs[0, policy.vocab.encode_move(move)]))
                n += 1
            board.push(move)
    assert n == 6
    assert result.nll[1][0].value == pytest.approx(total / n, rel=1e-5)
    assert result.nll[1][0].lo <= result.nll[1][0].value <= result.nll[1][0].hi


def test_eval_prompt_cli_writes_the_table(tiny_checkpoint: Path, pgn_file: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ev"
    assert cli.main(["eval", "prompt", str(tiny_checkpoint), "--games", str(pgn_file), "--out", str(out),
                     "--set", "eval.prompt_games=10", "--set", "eval.prompt_bootstrap=50",
                     "--set", "eval.ratings=1200,1600,2000"]) == 0
    text = capsys.readouterr().out
    assert "own prompt best in" in text and "White's first move" in text
    result = PromptResult.load(out / "prompt.json")
    assert result.games == 10 and result.prompted == (1200, 1600, 2000)
    assert json.loads((out / "prompt.json").read_text())["plies"] == 10


def test_no_player_in_any_band_is_a_user_error(tmp_path: Path) -> None:
    from chessdt.errors import UserError

    games = [HeldOutGame(moves=(E4,), white=None, black=None)]
    with pytest.raises(UserError, match="no held-out game"):
        evaluate_prompt(tiny_policy(context=32), games, small_cfg(ratings=(1200, 2000)))


class MildModel(torch.nn.Module):
    """A stand-in GPT the prompt steers a little: White's rating slot below 1600 lifts e2e4 by one nat, at
    or above it d2d4; with the rating unknown (guidance's second row) neither. White's other first
    moves get 0, every other token -30 (so no illegal mass is left to replace)."""

    def __init__(self, policy: ModelPolicy) -> None:
        super().__init__()
        self.vocab = policy.vocab
        self.size = policy.vocab.size

    def forward(self, tokens: torch.Tensor, boards: torch.Tensor, plies: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        out = torch.full((B, T, self.size), -30.0)
        out[:, :, [self.vocab.encode_move(m) for m in chess.Board().legal_moves]] = 0.0
        for b in range(B):
            rating = self.vocab.rating_of_token(int(tokens[b, 1]))
            if rating is not None:
                out[b, :, self.vocab.encode_move(E4 if rating < 1600 else D4)] = 1.0
        return out


def test_guidance_amplifies_the_prompt_and_is_recorded() -> None:
    policy = tiny_policy(context=32)
    policy.model = MildModel(policy)  # type: ignore[assignment]
    results = {w: evaluate_prompt(policy, band_games(12), small_cfg(ratings=(1200, 2000), prompt_plies=2,
                                                                    prompt_bootstrap=100, guidance=w))
               for w in (0.0, 3.0)}
    assert results[0.0].guidance == 0.0 and results[3.0].guidance == 3.0
    assert "guidance w=3" in results[3.0].format() and "guidance" not in results[0.0].format()
    for ci in range(2):
        plain, guided = results[0.0].own_gain[ci], results[3.0].own_gain[ci]
        assert plain is not None and guided is not None
        # White's first move: cond - uncond is one nat on the band's move, and w=3 makes it four
        assert plain.value == pytest.approx(1.0, abs=1e-3) and guided.value == pytest.approx(4.0, abs=1e-3)
    assert results[3.0].model_spread.value > results[0.0].model_spread.value + 0.3


def test_the_report_shows_the_prompt_table(tmp_path: Path) -> None:
    from chessdt.report import write_report

    run = tmp_path / "run"
    cfg = small_cfg(ratings=(1200, 2000), prompt_plies=4, prompt_bootstrap=50)
    evaluate_prompt(steered_policy(), band_games(6), cfg, run / "eval" / "prompt.json")
    report = write_report(run)
    assert "prompt" in report.sections
    text = report.path.read_text()
    assert "## The prompt where history cannot help" in text and "own prompt best in 2 of 2 bands" in text
    (run / "eval" / "prompt.json").write_text("{\"prompted\": 3}")  # torn: the section says so, the report stands
    text = write_report(run).path.read_text()
    assert "Left out: `prompt.json` is torn" in text


class LeaningModel(torch.nn.Module):
    """d2d4 at 1.5 always; e2e4 at 1.0 with White's rating known, 0 with it unknown: the raw top-1 is d2d4,
    guidance at w=1 makes it e2e4 (1 + 1 * (1 - 0) = 2 > 1.5)."""

    def __init__(self, policy: ModelPolicy) -> None:
        super().__init__()
        self.vocab = policy.vocab
        self.size = policy.vocab.size

    def forward(self, tokens: torch.Tensor, boards: torch.Tensor, plies: torch.Tensor) -> torch.Tensor:
        out = torch.full((*tokens.shape, self.size), -30.0)
        out[:, :, self.vocab.encode_move(D4)] = 1.5
        known = torch.tensor([self.vocab.rating_of_token(int(t)) is not None for t in tokens[:, 1]])
        out[known, :, self.vocab.encode_move(E4)] = 1.0
        return out


def test_move_matching_with_guidance_takes_the_guided_top1() -> None:
    from chessdt.evals.strength import move_matching

    policy = tiny_policy(context=32)
    policy.model = LeaningModel(policy)  # type: ignore[assignment]
    games = band_games(3)[:3]  # White rated 1250 opens 1.e4
    plain = move_matching(policy, games, [1200], skip_plies=0)
    guided = move_matching(policy, games, [1200], skip_plies=0, guidance=1.0)
    assert plain.n == guided.n == ((6,),)  # White's moves at plies 0 and 2 of 3 games
    assert plain.accuracy[0][0] == 0.0  # d2d4 everywhere
    assert guided.accuracy[0][0] == pytest.approx(0.5)  # e2e4 now matches ply 0, ply 2 (g1f3) still missed
