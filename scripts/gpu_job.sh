#!/usr/bin/env bash
# The prepared job for a lent GPU machine (docs/usage.md, "GPUs"). From the repository root on the GPU box:
#   bash scripts/gpu_job.sh OUT_DIR [MINUTES]
# A lent machine returns a handful of files, so the work goes to a scratch folder and OUT_DIR receives two: the
# archive gpu_job.tar.gz (rows, per-user test ranks, logs; no checkpoints) and summary.txt (what each step printed).
# In order of what this project's CPUs cannot finish:
#   1. the CUDA correctness tests of the mechanisms (a minute at most);
#   2. side by side on the card, the training cells the CPU presets have not finished: the paper preset's ML-1M
#      cells (when the standard file was copied to ./device_data/ml-1m beforehand; never committed) and the
#      long-range level's k = 1024 and 4096 cells for the six attention mechanisms. Every cell finished in a
#      committed CPU results file is skipped (--skip-done-in); the files here hold only rows written here.
#      Cells still training when time is up get a snapshot row (status partial: best epoch so far, tested);
#   3. the gpu timing preset (layer level) with the time left.
# Back home, unpack the archive into results/sweeps/ (accuracy-paper-cuda.jsonl and longrange-cuda.jsonl with their
# .ranks folders: the committed reports read them beside the CPU rows, each row naming its device) and regenerate the
# reports with `python -m bench report --committed`.
set -uo pipefail
OUT=${1:?usage: gpu_job.sh OUT_DIR [MINUTES]}
MINUTES=${2:-8}
WORK=${GPU_JOB_WORK:-/tmp/gpu_job}
DEVICE=${GPU_JOB_DEVICE:-cuda}  # cpu: a dry run of the whole job on a laptop (GPU_JOB_DEVICE=cpu, MINUTES=1)
mkdir -p "$OUT" "$WORK"
START=$(date +%s)
left() { echo $(( MINUTES * 60 - ($(date +%s) - START) )); }
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/summary.txt") 2>&1

python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else \"no GPU\")" | tee "$WORK/device.txt"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_attention_layers.py tests/kernels/ \
  -k "cuda or fla or mamba_ssm" 2>&1 | tail -3

# cells finished on a CPU are skipped: the committed results files of each preset (their parts are read too)
done_in() { ls "$@" 2>/dev/null | paste -sd, -; }
PAPER_DONE=$(done_in results/sweeps/accuracy-paper-cpu.jsonl results/sweeps/accuracy-mixers-cpu.jsonl)
LONG_DONE=$(done_in results/sweeps/longrange-cpu.jsonl)

TRAIN_S=$(( $(left) * 7 / 10 ))
PIDS=()
if [ -f device_data/ml-1m/ml-1m_sasrec.txt.gz ]; then
  # 14 cells at once: small models leave the card idle otherwise; the length sweep and N = 200 cells come first
  timeout "$TRAIN_S" python3 -m bench accuracy --preset paper --device "$DEVICE" --data-dir device_data \
    --jobs "${GPU_CELLS:-14}" --threads 1 --work-dir "$WORK/accuracy-runs" --out "$WORK/accuracy-paper-cuda.jsonl" \
    ${PAPER_DONE:+--skip-done-in "$PAPER_DONE"} > "$WORK/accuracy.log" 2>&1 &
  PIDS+=($!)
fi
timeout "$TRAIN_S" python3 -m bench accuracy --preset longrange --only k1024,k4096 \
  --attention sdpa,linrec,linrec-official,linear,efficient,performer --device "$DEVICE" --jobs "${LONG_CELLS:-6}" --threads 1 \
  --work-dir "$WORK/longrange-runs" --out "$WORK/longrange-cuda.jsonl" ${LONG_DONE:+--skip-done-in "$LONG_DONE"} \
  > "$WORK/longrange.log" 2>&1 &
PIDS+=($!)
wait "${PIDS[@]}"
tail -n 4 "$WORK/accuracy.log" "$WORK/longrange.log" 2>/dev/null
if [ -f device_data/ml-1m/ml-1m_sasrec.txt.gz ]; then
  python3 -m bench accuracy --preset paper --device "$DEVICE" --data-dir device_data --work-dir "$WORK/accuracy-runs" \
    --out "$WORK/accuracy-paper-cuda.jsonl" ${PAPER_DONE:+--skip-done-in "$PAPER_DONE"} --snapshot --threads 4 2>&1 |
    tail -n 1
fi
python3 -m bench accuracy --preset longrange --only k1024,k4096 --device "$DEVICE" --work-dir "$WORK/longrange-runs" \
  --out "$WORK/longrange-cuda.jsonl" ${LONG_DONE:+--skip-done-in "$LONG_DONE"} --snapshot --threads 4 2>&1 | tail -n 1

SWEEP_S=$(( $(left) - 45 ))
if [ "$SWEEP_S" -gt 30 ]; then
  timeout "$SWEEP_S" python3 -m bench sweep --preset gpu --device "$DEVICE" --max-cell-s 20 --no-progress \
    --out "$WORK/gpu-sweep.jsonl" 2>&1 | tail -n 3
fi

wc -l "$WORK"/*.jsonl
tar czf "$OUT/gpu_job.tar.gz" -C "$WORK" --exclude='*.pt' .
ls -l "$OUT"
