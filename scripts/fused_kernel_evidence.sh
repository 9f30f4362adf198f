#!/usr/bin/env bash
# Issue 10's evidence for the fused C++ LinRec kernel (the default CPU path): LinRec's default path against sdpa
# and against the PyTorch path, interleaved per shape, every row left-padded by a third (as SASRec batches are).
# Stop every other CPU job first (timings share the machine); the rows go to results/sweeps/fused-cpu.jsonl.
#   PYTHON=.venv/bin/python bash scripts/fused_kernel_evidence.sh
set -euo pipefail
PY=${PYTHON:-python}
OUT=results/sweeps/fused-cpu.jsonl
MECHANISMS=sdpa,linrec,linrec:backend=torch
for threads in 1 2; do
  for shape in "64 2" "128 8"; do
    set -- $shape
    lengths=50,200,1024
    [ "$threads" = 2 ] && lengths=50,200
    $PY -m bench sweep --attention $MECHANISMS --level attention --seq-len $lengths --batch-size 128 --dim "$1" \
        --heads "$2" --causal true,false --padding 0.33 --threads $threads --no-progress --out $OUT
  done
done
# kernel level, the long-sequence shape: B = 8, 8 heads x 16, N = 4096, no padding
$PY -m bench sweep --attention $MECHANISMS --level kernel --seq-len 4096 --batch-size 8 --dim 128 --heads 8 \
    --causal true,false --threads 1 --no-progress --out $OUT
$PY -m bench report $OUT --out results/reports/fused-cpu
