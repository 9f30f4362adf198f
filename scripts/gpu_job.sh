#!/usr/bin/env bash
# The prepared job for a lent GPU machine (see README, "Running on a GPU").
# Usage on the GPU box, from the repository root:
#   bash scripts/gpu_job.sh OUT_DIR [MINUTES]
# It (1) runs the CUDA correctness tests, torchrun (and Ray, when installed) on the card, (2) runs `--preset gpu`
# of the sweep, resumable,
# (3) if ML-1M is in ./device_data (copied there beforehand; never committed), trains SASRec
# with sdpa and causal LinRec at the authors' settings within the time left.
# Everything lands in OUT_DIR: sweep JSONL, training results, logs.
set -uo pipefail
OUT=${1:?usage: gpu_job.sh OUT_DIR [MINUTES]}
MINUTES=${2:-9}
mkdir -p "$OUT"
START=$(date +%s)
left() { echo $(( MINUTES * 60 - ($(date +%s) - START) )); }

python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
python -m pip install --quiet --disable-pip-version-check pandas matplotlib psutil tqdm pytest pytest-benchmark 2>&1 | tail -1

timeout 120 python -m pytest -q tests/test_attention_layers.py tests/kernels/ -k "cuda or fla" 2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"
if python -c "import fla" 2>/dev/null; then  # flash-linear-attention present: our LinRec on it vs its own kernel
  timeout 120 python -m bench peers --device cuda --seq-len 4096,16384 --mode fwd_bwd --only linrec,fla --out "$OUT/peers-fla.jsonl" 2>&1 | tail -8
fi

# beyond one machine, on the card: torchrun (nccl, one process per GPU) and, when Ray is installed, the Ray executor
timeout 90 torchrun --standalone --nproc-per-node "$(python -c 'import torch; print(torch.cuda.device_count())')" \
  -m bench train --dataset synthetic --epochs 3 --device cuda --no-progress --out "$OUT/torchrun-synthetic" 2>&1 | tail -3
if python -c "import ray" 2>/dev/null; then
  timeout 120 python -m bench sweep --executor ray --gpus-per-task 1 --device cuda --attention sdpa,linrec \
    --seq-len 1024,4096 --batch-size 8 --causal true --no-progress --out "$OUT/ray-gpu.jsonl" 2>&1 | tail -2
fi

SWEEP_S=$(( $(left) * 6 / 10 ))
timeout "$SWEEP_S" python -m bench sweep --preset gpu --device cuda --max-cell-s 20 --no-progress \
    --out "$OUT/gpu-sweep.jsonl" 2>&1 | tail -3

if [ -f device_data/ml-1m/ml-1m.txt.gz ]; then
  TRAIN_S=$(( $(left) / 2 - 15 ))
  for attention in sdpa linrec; do
    timeout "$TRAIN_S" python -m bench train --dataset ml-1m --data-dir device_data --model sasrec --attention "$attention" \
      --max-len 200 --hidden 128 --heads 8 --layers 2 --inner 256 --dropout 0.2 --batch-size 2048 --lr 1e-3 \
      --epochs 100 --patience 10 --seed 2000 --device cuda --max-minutes $(( TRAIN_S / 60 - 1 )) --no-progress \
      --out "$OUT/ml-1m-sasrec-$attention" > "$OUT/ml-1m-sasrec-$attention.log" 2>&1
    tail -2 "$OUT/ml-1m-sasrec-$attention.log"
  done
fi
python -m bench report "$OUT/gpu-sweep.jsonl" --out "$OUT/report" 2>&1 | tail -1
