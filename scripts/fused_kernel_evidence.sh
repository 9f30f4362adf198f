#!/usr/bin/env bash
# Issue 10's evidence for the fused C++ LinRec kernel (the default CPU path): LinRec's default path against sdpa
# and against the PyTorch path, interleaved per shape, every row left-padded by a third (as SASRec batches are),
# with one thread (results/sweeps/fused-cpu.jsonl) and two (fused-cpu-2threads.jsonl: the thread count is not
# part of a cell's identity, so each count has its own file). Stop every other CPU job first.
#   PYTHON=.venv/bin/python bash scripts/fused_kernel_evidence.sh
set -euo pipefail
PY=${PYTHON:-python}
MECHANISMS=sdpa,linrec,linrec:backend=torch
for threads in 1 2; do
  out=results/sweeps/fused-cpu.jsonl lengths=50,200,1024
  [ "$threads" = 2 ] && out=results/sweeps/fused-cpu-2threads.jsonl lengths=50,200
  for shape in "64 2" "128 8"; do
    set -- $shape
    $PY -m bench sweep --attention $MECHANISMS --level attention --seq-len $lengths --batch-size 128 --dim "$1" \
        --heads "$2" --causal true,false --padding 0.33 --threads $threads --no-progress --out $out
  done
done
# attention dropout as an axis: layer (padded; dropout 0 is the run above) and whole SASRec step at N = 200
$PY -m bench sweep --attention sdpa,linrec --level attention --seq-len 200 --batch-size 128 --dim 128 --heads 8 \
    --causal true --padding 0.33 --attention-dropout 0.2 --threads 1 --no-progress --out results/sweeps/fused-cpu.jsonl
$PY -m bench sweep --attention sdpa,linrec --level model --seq-len 200 --batch-size 32 --dim 128 --heads 8 \
    --causal true --attention-dropout 0,0.2 --threads 1 --no-progress --out results/sweeps/fused-cpu.jsonl
# kernel level, the long-sequence shape: B = 8, 8 heads x 16, N = 4096, no padding
$PY -m bench sweep --attention $MECHANISMS --level kernel --seq-len 4096 --batch-size 8 --dim 128 --heads 8 \
    --causal true,false --threads 1 --no-progress --out results/sweeps/fused-cpu.jsonl
$PY -m bench report --committed
