#!/usr/bin/env bash
# The CPU performance evidence behind the README's performance section, in one quiet run
# (stop every other CPU job first: timings share the machine).
#   PYTHON=.venv/bin/python bash scripts/cpu_perf_evidence.sh
# 1. peers: ours vs performer-pytorch / lucidrains' Linformer / sdpa, interleaved, N = 256 ... 8192
# 2. limits: LinRec forward vs copy bandwidth and matmul rate (eager and torch.compile), same run
# 3. short sequences: every mechanism vs sdpa at N = 200 and 256 (the crossover target)
# 4. the CI gate's baseline, re-measured on this machine
# 5. notes on LinRec's CPU kernels: ELU cost, profile of the blocked forward, fused causal backward A/B
set -euo pipefail
PY=${PYTHON:-python}
$PY -m bench peers --seq-len 256,1024,4096,8192 --rounds 5 --out results/peers/peers-cpu.jsonl
$PY -c "
from bench.timing.peers import measure_limits
from pathlib import Path
from bench.results import append_row
row = measure_limits(compiled=True)
append_row(Path('results/peers/limits.jsonl'), row)
print({k: round(v, 3) for k, v in row.items() if k.endswith(('_ms', '_fraction_of_copy', 'GBps'))})
"
$PY -m bench sweep --attention sdpa,linrec,linrec:variant=official,linear,efficient,performer:nb_features=64,linformer:k=64 \
    --seq-len 200,256 --batch-size 8 --dim 128 --heads 8 --mode fwd_bwd,infer --causal false,true --level attention \
    --no-progress --out results/sweeps/short-n-cpu.jsonl
$PY -m bench report results/sweeps/short-n-cpu.jsonl --out results/reports/short-n-cpu
$PY -m bench gate --update-baseline
PYTHONPATH=. $PY scripts/linrec_kernel_notes.py > results/peers/linrec-kernel-notes.txt
