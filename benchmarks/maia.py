"""chessdt's models beside Maia-1 on the same held-out human positions, by rating band.

Maia-1 (McIlroy-Young et al. 2020) is lc0 with one network per rating band, played at one node (its
policy head's top move). This script finds lc0 (``--lc0``, else ``lc0`` on PATH, else a build under
``data/lc0/build``) or builds it from a local source tree (``--build SRC``: Debian's packages only,
no download: meson, libabsl-dev, libopenblas-dev, libeigen3-dev, pkg-config), finds the Maia-1
weights (``maia-1100.pb.gz`` ... in ``--weights``, default ``data/maia``, git-ignored: copy them from
the public maia-chess repository's ``maia_weights/``), and scores, on exactly the positions that
``chessdt eval strength``'s move matching scores (the mover's own moves from ply 10 on, within the
model's context, movers inside some band), each chessdt model prompted at every band's centre and
each Maia at one node with the whole game's moves sent (``position startpos moves ...``) and its
cache off. Nothing is downloaded at run time.

    python benchmarks/maia.py runs/i27-base --games data/human10 --n-games 200

Intervals are 95% Wilson intervals over positions (positions of one game are not independent,
so they are somewhat too narrow); all rows score the same positions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from chessdt.evals.heldout import load_games
from chessdt.evals.strength import MatchingResult, ReferenceRow, move_matching, reference_matching
from chessdt.metrics import wilson_interval
from chessdt.play.policy import ModelPolicy

ROOT = Path(__file__).resolve().parents[1]
MESON_FLAGS = ["--buildtype=release", "--wrap-mode=nodownload", "-Dgtest=false", "-Dblas=true", "-Dopenblas=true",
               "-Dcudnn=false", "-Dplain_cuda=false", "-Dopencl=false", "-Ddx=false", "-Donnx=false",
               "-Dtensorflow=false", "-Dxla=false", "-Dsycl=off", "-Dmkl=false", "-Ddnnl=false", "-Donednn=false",
               "-Dispc=false", "-Dmetal=disabled"]


def build_lc0(source: Path, jobs: int) -> Path:
    """lc0 built from `source` (a checkout of LeelaChessZero/lc0) with the BLAS backend only."""
    build = source / "build"
    if not (build / "build.ninja").is_file():
        subprocess.run(["meson", "setup", "build", *MESON_FLAGS], cwd=source, check=True)
    subprocess.run(["nice", "-n", "10", "ninja", "-C", "build", "-j", str(jobs)], cwd=source, check=True)
    return build / "lc0"


def find_lc0(given: str | None) -> Path:
    for candidate in (given, shutil.which("lc0"), str(ROOT / "data" / "lc0" / "build" / "lc0")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate).resolve()
    sys.exit("no lc0: pass --lc0 PATH, put lc0 on PATH, or build it with --build SRC (an lc0 source tree)")


def maia_spec(lc0: Path, weights: Path, rating: int) -> str:
    """The opponent spec of Maia-`rating` at one node, BLAS backend, one thread, no cache."""
    return f"uci={lc0} --weights={weights} --backend=blas --threads=1 --nncache=0@{rating}/1"


def cells(accuracy: float, n: int) -> dict[str, float]:
    k = round(accuracy * n) if n else 0
    lo, hi = wilson_interval(k, n)
    return {"acc": k / n if n else math.nan, "lo": lo, "hi": hi, "n": n, "hits": k}


def text(c: dict[str, float]) -> str:
    if not c["n"]:
        return "-"
    return f"{100 * c['acc']:.1f} [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="chessdt checkpoints or run directories (LABEL=PATH to name one)")
    ap.add_argument("--games", required=True, help="held-out games: a prepared data dir (val split) or a PGN file")
    ap.add_argument("--n-games", type=int, default=200, help="held-out games read (default 200)")
    ap.add_argument("--ratings", default="1100,1300,1500,1700,1900,2100,2300",
                    help="band centres, also the prompts (default 1100..2300 by 200: contiguous 200-point bands)")
    ap.add_argument("--band-width", type=int, default=200)
    ap.add_argument("--skip-plies", type=int, default=10, help="opening plies left out (Maia's protocol)")
    ap.add_argument("--maia", default="1100,1500,1900", help="Maia-1 models to score (default 1100,1500,1900)")
    ap.add_argument("--weights", default=str(ROOT / "data" / "maia"), help="folder of maia-RATING.pb.gz")
    ap.add_argument("--lc0", help="lc0 binary (default: lc0 on PATH, then data/lc0/build/lc0)")
    ap.add_argument("--build", metavar="SRC", help="build lc0 from this source tree first (no download)")
    ap.add_argument("--jobs", type=int, default=2, help="ninja jobs for --build")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--guidance", type=float, default=0.0,
                    help="classifier-free guidance weight w for the chessdt models' top-1 (default 0: off)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "maia"), help="folder for maia.json and maia.md")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    lc0 = build_lc0(Path(args.build).resolve(), args.jobs) if args.build else find_lc0(args.lc0)
    weights = {int(r): Path(args.weights) / f"maia-{r.strip()}.pb.gz" for r in args.maia.split(",") if r.strip()}
    missing = [str(p) for p in weights.values() if not p.is_file()]
    if missing:
        sys.exit(f"missing Maia weights: {', '.join(missing)} (copy maia_weights/ of CSSLab/maia-chess there)")
    ratings = [int(r) for r in args.ratings.split(",") if r.strip()]
    games = load_games(args.games, args.n_games)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows: dict[str, list[dict[str, float]]] = {}
    notes: dict[str, str] = {}
    max_moves = None
    bands: tuple[str, ...] = ()
    for spec in args.checkpoints:
        label, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        policy = ModelPolicy.from_checkpoint(path)
        moves = policy.context - policy.prompt_len + 1
        if max_moves not in (None, moves):
            sys.exit("the chessdt models score different positions (contexts differ): compare them separately")
        max_moves = moves
        t0 = time.perf_counter()
        m: MatchingResult = move_matching(policy, games, ratings, band_width=args.band_width, skip_plies=args.skip_plies,
                                          guidance=args.guidance)
        bands = m.bands
        own = [cells(m.accuracy[ci][ci], m.n[ci][ci]) for ci in range(len(ratings))]
        rows[f"{label} (own prompt)"] = own
        best = [max(range(len(ratings)), key=lambda ri: (m.accuracy[ri][ci] if m.n[ri][ci] else -1.0))
                for ci in range(len(ratings))]
        rows[f"{label} (best prompt)"] = [cells(m.accuracy[best[ci]][ci], m.n[best[ci]][ci]) for ci in range(len(ratings))]
        strict = ", ".join("tie" if b is None else str(b) for b in m.best_prompt)  # as diagonal_peaks counts them
        notes[label] = (f"best prompt per band: {strict}; own prompt best in "
                        f"{m.diagonal_peaks} of {m.bands_with_data} bands; {time.perf_counter() - t0:.0f} s")
        json.dump({"label": label, "matching": {"accuracy": m.accuracy, "n": m.n, "prompted": m.prompted,
                                                "bands": m.bands}},
                  (out / f"matching-{label}.json").open("w"), indent=1)
    assert max_moves is not None
    for rating, path in weights.items():
        t0 = time.perf_counter()
        ref: ReferenceRow = reference_matching(maia_spec(lc0, path, rating), games, ratings, band_width=args.band_width,
                                               skip_plies=args.skip_plies, max_moves=max_moves, nodes=1, timeout_s=60.0)
        rows[f"Maia-{rating}"] = [cells(a, n) for a, n in zip(ref.accuracy, ref.n)]
        notes[f"Maia-{rating}"] = f"{ref.failed} positions failed; {time.perf_counter() - t0:.0f} s"

    def pooled(cs: list[dict[str, float]]) -> dict[str, float]:
        hits, n = sum(c["hits"] for c in cs), sum(c["n"] for c in cs)
        return cells(hits / n if n else math.nan, int(n))

    lines = [f"Top-1 move matching (%) on {len(games):,} held-out games of {args.games} (first {args.skip_plies} "
             f"plies left out; 95% Wilson intervals over positions); positions per band: "
             f"{', '.join(str(c['n']) for c in next(iter(rows.values())))}", "",
             "| model | " + " | ".join(bands) + " | all |", "|---|" + "---:|" * (len(bands) + 1)]
    for name, cs in rows.items():
        lines.append(f"| {name} | " + " | ".join(text(c) for c in cs) + f" | {text(pooled(cs))} |")
    lines += [""] + [f"- {k}: {v}" for k, v in notes.items()]
    table = "\n".join(lines)
    (out / "maia.md").write_text(table + "\n")
    json.dump({"rows": rows, "bands": bands, "games": len(games), "notes": notes, "lc0": str(lc0)},
              (out / "maia.json").open("w"), indent=1)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
