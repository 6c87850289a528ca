#!/usr/bin/env bash
# Train experiments/gpu-25m.toml for a few minutes on one NVIDIA GPU and report tokens/s,
# bf16 model FLOPs utilization, peak memory and the device name.
#
#   benchmarks/gpu.sh [MINUTES]        (default 4; run from anywhere, needs the venv's python)
#
# Data: data/human-all if prepared; else it is prepared from $CHESSDT_PGN (PGN files/dirs) or the
# shared human games if present; else from the committed games/ladder.pgn.zst.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-4}"
PY="${PYTHON:-python}"
DATA=data/human-all
if [ ! -f "$DATA/meta.json" ]; then
  if [ -n "${CHESSDT_PGN:-}" ]; then INPUTS=($CHESSDT_PGN)
  elif ls ../shared/data/*.pgn.zst >/dev/null 2>&1; then INPUTS=(../shared/data/*.pgn.zst)
  else INPUTS=(games/ladder.pgn.zst); fi
  "$PY" -m chessdt prepare "${INPUTS[@]}" --out "$DATA" --label elo -q --force
fi
RUN="runs/gpu-bench-$(date +%s)"
"$PY" -m chessdt train experiments/gpu-25m.toml -q --device cuda \
  --set "data.prepared=$PWD/$DATA" --set "run_dir=$PWD/$RUN" \
  --set "train.max_minutes=$MINUTES" --set train.eval_every=1000000 --set train.save_every=1000000 \
  --set train.log_every=20
"$PY" - "$RUN" <<'PYEOF'
import json, sys
from pathlib import Path
import torch
from chessdt.config import config_from_dict
from chessdt.model import GPT
from chessdt.tokenizer import Vocab

run = Path(sys.argv[1])
cfg = config_from_dict(json.loads((run / "config.json").read_text()))
lines = [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]
steady = lines[len(lines) // 4:] or lines  # skip compilation and warm-up
tokens = steady[-1]["tokens"] - steady[0]["tokens"]
seconds = steady[-1]["time_s"] - steady[0]["time_s"]
tps = tokens / seconds if seconds > 0 else float("nan")
m = cfg.model
model = GPT(m, Vocab(rating_bucket=cfg.data.rating_bucket).size)
n_params = model.num_params() - model.pos_emb.weight.numel()
# 6 N per token for matmuls (forward + backward) + causal attention 6 * L * d * T_avg (12 L d T / 2);
# batches are length-bucketed, so take the mean input length as T.
t_avg = m.context / 2
flops_per_token = 6 * n_params + 6 * m.n_layer * m.d_model * t_avg
name = torch.cuda.get_device_name(0)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "4090": 165e12, "3090": 71e12, "V100": 125e12, "T4": 65e12}
peak = next((v for k, v in PEAK_BF16.items() if k in name), float("nan"))
if "H100" in name and "PCIe" in name:
    peak = 756e12
print(f"device      : {name}")
print(f"model       : {model.num_params() / 1e6:.1f}M params, {m.n_layer} layers x {m.d_model}, context {m.context}")
print(f"steps       : {lines[-1]['step']} ({lines[-1]['tokens']:,} tokens, last loss {lines[-1]['loss']:.3f})")
print(f"tokens/s    : {tps:,.0f}")
print(f"MFU (bf16)  : {tps * flops_per_token / peak:.1%} of {peak / 1e12:.0f} TFLOP/s")
print(f"peak memory : {max(x.get('peak_mem_gb', 0) for x in lines):.2f} GiB")
PYEOF
