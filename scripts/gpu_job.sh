#!/usr/bin/env bash
# The prepared job for a lent GPU machine (docs/usage.md, "GPUs"). From the repository root on the GPU box:
#   bash scripts/gpu_job.sh OUT_DIR [MINUTES]
# A lent machine returns a handful of files, so the work goes to a scratch folder and OUT_DIR receives two: the
# archive gpu_job.tar.gz (rows, per-user test ranks, logs; no checkpoints) and summary.txt (what each step printed).
# In order of what this project's CPUs cannot finish:
#   1. the CUDA correctness tests of the mechanisms (90 s at most);
#   2. side by side on the card, the training cells the open verdicts wait for:
#      - long histories, round 2 (--preset longrange-round2): the learning-rate grid at k = 64, then each
#        mechanism's seeds at k = 64, 256, 1024 and 4096 with its chosen rate. The preset chooses a rate from the
#        grid rows in results/sweeps/longrange-round2-*.jsonl, so this job writes its rows there (in the box's copy
#        of the tree) and starts the driver again while a run adds cells;
#      - the seeds preset (ML-1M N = 200 and Beauty N = 50), when both files were copied beforehand into
#        ./device_data (git-ignored, never committed): ml-1m/ml-1m_sasrec.txt.gz, amazon-beauty/Beauty.txt.gz.
#      Every cell finished in a committed CPU results file is skipped (--skip-done-in). Cells still training when
#      time is up get a snapshot row (status partial: best epoch so far, tested);
#   3. the gpu timing preset (layer level) with the time left.
# Back home, unpack the archive into results/sweeps/ (longrange-round2-cuda.jsonl, accuracy-seeds-cuda.jsonl and
# their .ranks folders: the committed reports read them beside the CPU rows, each row naming its device) and
# regenerate the reports with `python -m bench report --committed`.
set -uo pipefail
OUT=${1:?usage: gpu_job.sh OUT_DIR [MINUTES]}
MINUTES=${2:-9}
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
SEEDS_DONE=$(done_in results/sweeps/accuracy-seeds-cpu.jsonl results/sweeps/accuracy-paper-cpu.jsonl \
  results/sweeps/accuracy-mixers-cpu.jsonl)
ROUND2_DONE=$(done_in results/sweeps/longrange-round2-cpu.jsonl)
ROUND2_OUT=results/sweeps/longrange-round2-cuda.jsonl
TRAIN_END=$(( $(date +%s) + $(left) * 7 / 10 ))
until_end() { echo $(( TRAIN_END - $(date +%s) )); }

round2() {  # each run trains the cells the preset lists now: a mechanism's seed cells appear once its grid is done
  local run=0
  while [ "$(until_end)" -gt 30 ]; do
    run=$((run + 1))
    timeout "$(until_end)" python3 -m bench accuracy --preset longrange-round2 --device "$DEVICE" \
      --jobs "${ROUND2_CELLS:-10}" --threads 1 --work-dir "$WORK/round2-runs" --out "$ROUND2_OUT" \
      ${ROUND2_DONE:+--skip-done-in "$ROUND2_DONE"} > "$WORK/round2-$run.log" 2>&1
    tail -n 1 "$WORK/round2-$run.log"
    grep -q "new training cell" "$WORK/round2-$run.log" || break  # nothing new (or stopped): the preset is done
  done
}
round2 &
PIDS=($!)
if [ -f device_data/ml-1m/ml-1m_sasrec.txt.gz ] && [ -f device_data/amazon-beauty/Beauty.txt.gz ]; then
  timeout "$(until_end)" python3 -m bench accuracy --preset seeds --device "$DEVICE" --data-dir device_data \
    --jobs "${SEEDS_CELLS:-4}" --threads 1 --work-dir "$WORK/seeds-runs" --out "$WORK/accuracy-seeds-cuda.jsonl" \
    ${SEEDS_DONE:+--skip-done-in "$SEEDS_DONE"} > "$WORK/seeds.log" 2>&1 &
  PIDS+=($!)
fi
wait "${PIDS[@]}"
tail -n 2 "$WORK/seeds.log" 2>/dev/null
python3 -m bench accuracy --preset longrange-round2 --device "$DEVICE" --work-dir "$WORK/round2-runs" \
  --out "$ROUND2_OUT" ${ROUND2_DONE:+--skip-done-in "$ROUND2_DONE"} --snapshot --threads 4 2>&1 | tail -n 1
if [ -f "$WORK/seeds.log" ]; then
  python3 -m bench accuracy --preset seeds --device "$DEVICE" --data-dir device_data --work-dir "$WORK/seeds-runs" \
    --out "$WORK/accuracy-seeds-cuda.jsonl" ${SEEDS_DONE:+--skip-done-in "$SEEDS_DONE"} --snapshot --threads 4 2>&1 |
    tail -n 1
fi
cp -r "$ROUND2_OUT" "${ROUND2_OUT%.jsonl}".ranks "$WORK/" 2>/dev/null

SWEEP_S=$(( $(left) - 45 ))
if [ "$SWEEP_S" -gt 30 ]; then
  timeout "$SWEEP_S" python3 -m bench sweep --preset gpu --device "$DEVICE" --max-cell-s 20 --no-progress \
    --out "$WORK/gpu-sweep.jsonl" 2>&1 | tail -n 3
fi

wc -l "$WORK"/*.jsonl
tar czf "$OUT/gpu_job.tar.gz" -C "$WORK" --exclude='*.pt' --exclude='*.lock' .
ls -l "$OUT"
