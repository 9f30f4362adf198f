#!/usr/bin/env bash
# The prepared job for a lent GPU machine (see README, "Running on a GPU").
# Usage on the GPU box, from the repository root:
#   bash scripts/gpu_job.sh OUT_DIR [MINUTES]
# It (1) runs the CUDA correctness tests, torchrun (and Ray, when installed) on the card, (2) runs `--preset gpu`
# of the sweep, resumable,
# (3) the long-range level's k = 1024 and 4096 cells for sdpa, LinRec and Mamba (hours each on a CPU), (4) if the
# standard ML-1M file is in ./device_data (copied there beforehand; never committed), the accuracy sweep's gpu
# preset (SASRec at the authors' width) within the time left.
# Everything lands in OUT_DIR: sweep JSONL, training results, logs.
set -uo pipefail
OUT=${1:?usage: gpu_job.sh OUT_DIR [MINUTES]}
MINUTES=${2:-9}
mkdir -p "$OUT"
START=$(date +%s)
left() { echo $(( MINUTES * 60 - ($(date +%s) - START) )); }

python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
python -m pip install --quiet --disable-pip-version-check pandas matplotlib psutil tqdm pytest pytest-benchmark 2>&1 | tail -1

timeout 120 python -m pytest -q tests/test_attention_layers.py tests/kernels/ -k "cuda or fla or mamba_ssm" 2>&1 | tail -3 | tee "$OUT/cuda_tests.txt"
# flash-linear-attention or mamba-ssm present: our LinRec on fla vs fla's own kernel, Mamba / retention on theirs
if python -c "import fla" 2>/dev/null || python -c "import mamba_ssm" 2>/dev/null; then
  timeout 120 python -m bench peers --device cuda --seq-len 4096,16384 --mode fwd_bwd --only linrec,fla,mamba,retention --out "$OUT/peers-fla.jsonl" 2>&1 | tail -8
fi

# beyond one machine, on the card: torchrun (nccl, one process per GPU) and, when Ray is installed, the Ray executor
timeout 90 torchrun --standalone --nproc-per-node "$(python -c 'import torch; print(torch.cuda.device_count())')" \
  -m bench train --dataset synthetic --epochs 3 --device cuda --no-progress --out "$OUT/torchrun-synthetic" 2>&1 | tail -3
if python -c "import ray" 2>/dev/null; then
  timeout 120 python -m bench sweep --executor ray --gpus-per-task 1 --device cuda --attention sdpa,linrec \
    --seq-len 1024,4096 --batch-size 8 --causal true --no-progress --out "$OUT/ray-gpu.jsonl" 2>&1 | tail -2
fi

SWEEP_S=$(( $(left) * 5 / 10 ))
timeout "$SWEEP_S" python -m bench sweep --preset gpu --device cuda --max-cell-s 20 --no-progress \
    --out "$OUT/gpu-sweep.jsonl" 2>&1 | tail -3

# the long-range level's longest cells, which cost a CPU hours each (sdpa at k = 4096 first): the CPU preset's
# cells, so their rows sit beside the CPU rows in the report (device recorded per row)
LONG_S=$(( $(left) * 4 / 10 ))
timeout "$LONG_S" python -m bench accuracy --preset longrange --only k4096,k1024 --attention sdpa,linrec,mamba \
    --device cuda --jobs 3 --threads 2 --work-dir "$OUT/longrange-runs" --out "$OUT/longrange-cuda.jsonl" \
    > "$OUT/longrange.log" 2>&1
tail -3 "$OUT/longrange.log"

if [ -f device_data/ml-1m/ml-1m_sasrec.txt.gz ]; then
  # the accuracy sweep's gpu preset (the paper preset at the authors' width, 128 x 8 heads), several cells side by
  # side on the card (small models leave it idle otherwise); checkpoints in OUT, so a later lent session resumes
  # them (copy OUT/accuracy-runs back and pass it as --work-dir); cells still training when time is up get a
  # snapshot row (status partial: the best epoch so far, tested)
  ACC=(--preset gpu --device cuda --data-dir device_data --work-dir "$OUT/accuracy-runs" --out "$OUT/accuracy-gpu-cuda.jsonl")
  timeout "$(( $(left) - 60 ))" python -m bench accuracy "${ACC[@]}" --jobs "${GPU_CELLS:-8}" --threads 2 \
    > "$OUT/accuracy.log" 2>&1
  tail -4 "$OUT/accuracy.log"
  python -m bench accuracy "${ACC[@]}" --snapshot --threads 4 2>&1 | tail -1
fi
python -m bench report "$OUT/gpu-sweep.jsonl" --out "$OUT/report" 2>&1 | tail -1
