"""The report: report.md and plots from saved evaluation results (hand-made here, no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from chessdt import cli
from chessdt.errors import UserError
from chessdt.evals.legality import LegalityCell, LegalityResult, PlayedLegality
from chessdt.evals.openings import LineStats, OpeningRow, OpeningsResult, RepeatStats
from chessdt.evals.strength import (CplResult, CplRow, LadderResult, MatchingResult, OpponentRow, StrengthResult,
                                    SubjectRow)
from chessdt.report import write_report

PNG = b"\x89PNG"


def legality() -> LegalityResult:
    cell = LegalityCell(group="all", positions=1000, top1_legal=0.987, sampled_legal=0.95, illegal_mass=0.031)
    by_ply = (LegalityCell("0-9", 300, 0.999, 0.99, 0.01), LegalityCell("10+", 700, 0.98, 0.93, 0.04))
    played = (PlayedLegality(rating=1500, games=4, moves=400, illegal=6, per_game=1.5, max_per_game=3, mean_plies=200.0),)
    return LegalityResult(overall=cell, by_ply=by_ply, by_rating=(), played=played, held_out_games=20,
                          temperature=1.0, top_p=1.0, inputs="pure sequence (move tokens)")


def strength() -> StrengthResult:
    subjects = (SubjectRow("model@1200", 1200, 1100.0, 1000.0, 1200.0, 20, 0.3, {"sf-1350": 0.3}, 0.5, False),
                SubjectRow("model@2000", 2000, 1460.0, 1380.0, 1540.0, 20, 0.6, {"sf-1350": 0.6}, 0.2, False),
                SubjectRow("model@2400", 2400, math.inf, math.nan, math.inf, 20, 1.0, {"sf-1350": 1.0}, 0.0, False))
    opponents = (OpponentRow("random", "random", False, 700.0, 500.0, 900.0),
                 OpponentRow("sf-1350", "sf-1350", True, 1350.0, 1350.0, 1350.0))
    ladder = LadderResult(subjects=subjects, opponents=opponents, spearman=1.0, slope=0.45, games=64, aborted=1,
                          engine_restarts=2, move_limit_draws=3, nodes=1000, virtual_draws=1.0)
    matching = MatchingResult(prompted=(1200, 2000), bands=("1100-1299", "1900-2099"),
                              accuracy=((0.41, 0.35), (0.38, 0.44)), n=((120, 80), (120, 80)),
                              best_prompt=(1200, 2000), diagonal_peaks=2, bands_with_data=2, row_peaks=2, games=30,
                              skip_plies=10)
    cpl = CplResult(rows=(CplRow("model@1200", 1200, 50, 120.0, 90.0, 150.0, 60.0, 0.12),), nodes=2000, cap=1000,
                    spearman=math.nan, failed=0)
    return StrengthResult(ladder=ladder, matching=matching, cpl=cpl, notes=("an example note",))


def openings() -> OpeningsResult:
    def lines(h: float) -> tuple[LineStats, ...]:
        return tuple(LineStats(k=k, games=40, entropy=h * k / 12, distinct=10, top_share=0.2, top_line="1. e4 e5",
                               js_to_data=0.3) for k in (2, 4, 8, 12))

    rep = (RepeatStats(line="start", samples=50, distinct=4, top_share=0.6, top_move="e4"),)
    rows = (OpeningRow("self-play", "model@1200", 1200, 40, lines(4.0), 1.7, rep),
            OpeningRow("data", "data 1100-1299", 1200, 40, lines(5.0), None, rep),
            OpeningRow("self-play", "model@2000", 2000, 40, lines(3.0), 1.2, rep),
            OpeningRow("data", "data 1900-2099", 2000, 40, lines(4.5), None, rep))
    return OpeningsResult(rows=rows, line_plies=(2, 4, 8, 12), band_width=200, opponent="", notes=())


def test_report_from_all_results(tmp_path: Path) -> None:
    run = tmp_path / "run"
    legality().save(run / "eval" / "legality.json")
    strength().save(run / "eval" / "strength.json")
    openings().save(run / "eval" / "openings.json")
    curve = [{"step": 30 * i, "tokens": 1000 * i, "time_s": 60.0 * i, "val_loss": 3.0 - 0.25 * i,
              "top1": 0.1 * i, "legal": 0.3 * i} for i in range(3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve) + "{truncated\n")
    report = write_report(run)
    text = report.path.read_text()
    assert report.sections == ("legality", "strength", "openings")
    assert {p.name for p in report.plots} == {"legality.png", "elo.png", "matching.png", "openings.png",
                                              "training.png"}
    for p in report.plots:
        assert p.read_bytes()[:4] == PNG and f"]({p.relative_to(run).as_posix()})" in text
    for needle in ("98.70%", "| model@2000 | 2000 | 1460 | 1380 .. 1540 |", "+inf", "diagonal peaks in 2 of 2",
                   "note: an example note", "| 60 | 2,000 | 2.0 | 2.500 | 20.0% | 60.0% |",
                   "| data | data 1100-1299 | 40 |"):
        assert needle in text, needle
    # the legality section opens with what the model was given; the training section says it too
    section = text.split("## Move legality\n\n", 1)[1]
    assert section.startswith("**Model inputs: pure sequence (move tokens).**")
    assert "## Training\n\n**Model inputs: not recorded" in text  # this run directory has no config.json
    assert "(legal top-1 first reached 95% not reached, 98% not reached, 99% not reached)" in text


def test_report_with_some_results_and_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    with pytest.raises(UserError, match="no evaluation results"):
        write_report(run)
    assert cli.main(["report", str(run)]) == 2
    (run / "metrics.jsonl").parent.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 0, "tokens": 0, "val_loss": 7.6}) + "\n")
    assert write_report(run).sections == ()  # a training curve alone is a report (one point: no plot)
    assert "| 0 | 0 |" in (run / "report.md").read_text()
    legality().save(run / "eval" / "legality.json")
    assert cli.main(["report", str(run)]) == 0
    assert "report.md" in capsys.readouterr().out
    text = (run / "report.md").read_text()
    assert "Not run: `chessdt eval strength CKPT`" in text and "Not run: `chessdt eval openings CKPT`" in text
    assert (run / "report" / "legality.png").read_bytes()[:4] == PNG


def test_results_round_trip_through_json(tmp_path: Path) -> None:
    for result in (legality(), strength(), openings()):
        path = result.save(tmp_path / "r.json")
        assert type(result).load(path).format() == result.format()


def test_a_torn_or_foreign_result_file_leaves_its_section_out(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 24, case 8: a torn eval JSON made `chessdt report` a traceback."""
    run = tmp_path / "run"
    legality().save(run / "eval" / "legality.json")
    whole = strength().save(run / "eval" / "strength.json").read_text()
    (run / "eval" / "strength.json").write_text(whole[: len(whole) // 2])  # torn by a crash
    (run / "eval" / "openings.json").write_text("[1, 2, 3]\n")  # JSON, but not a result
    assert cli.main(["report", str(run)]) == 0
    assert "(legality; " in capsys.readouterr().out  # the readable section only
    text = (run / "report.md").read_text()
    assert "98.70%" in text
    assert "Left out: `strength.json` is torn or not a result file (rerun `chessdt eval strength`)" in text
    assert "Left out: `openings.json` is torn or not a result file" in text
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 2 and all("its section is left out of the report" in m and "\n" not in m for m in said)
    assert "strength.json is torn or not a StrengthResult" in said[0]
