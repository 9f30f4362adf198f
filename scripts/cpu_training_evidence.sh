#!/usr/bin/env bash
# Training runs behind the README's accuracy section (CPU, one thread each; background).
#   PYTHON=.venv/bin/python bash scripts/cpu_training_evidence.sh [MINUTES_ML1M] [--resume]
# ML-1M: SASRec, every-position training, N=200, sdpa vs causal LinRec (paper form), same seed and
# budget, at two batch sizes: 128 sequences (47 steps per epoch; the first budget) and 16 sequences
# (~2,600 next-item targets per step, close to the authors' 2,048, 378 steps per epoch).
# ML-100K: BERT4Rec (10 masked copies of each user per epoch) and SASRec last_position, two
# mechanisms each. Results (results.json, checkpoints for --resume) go to results/runs/ml-1m and results/runs/ml-100k.
set -uo pipefail
MINUTES=${1:-200}
RESUME=${2:-}
PY=${PYTHON:-python}
common=(--dataset ml-1m --model sasrec --seq-len 200 --hidden 64 --heads 2 --layers 2 --inner 256 --dropout 0.2 --lr 1e-3
        --epochs 200 --patience 10 --seed 2000 --threads 1 --no-progress --max-minutes "$MINUTES" $RESUME)
for attention in sdpa linrec; do
  $PY -m bench train "${common[@]}" --attention "$attention" --batch-size 128 \
      --out "results/runs/ml-1m/sasrec-all-$attention" >> "results/runs/ml-1m/sasrec-all-$attention.log" 2>&1 &
  $PY -m bench train "${common[@]}" --attention "$attention" --batch-size 16 \
      --out "results/runs/ml-1m/sasrec-all-$attention-b16" >> "results/runs/ml-1m/sasrec-all-$attention-b16.log" 2>&1 &
done
small=(--dataset ml-100k --seq-len 100 --hidden 64 --heads 2 --layers 2 --inner 256 --dropout 0.2 --batch-size 128 --lr 1e-3
       --seed 2000 --threads 1 --no-progress $RESUME)
for attention in sdpa linrec; do
  $PY -m bench train "${small[@]}" --model bert4rec --masks-per-user 10 --epochs 60 --patience 15 --max-minutes 60 \
      --attention "$attention" --out "results/runs/ml-100k/bert4rec-$attention" >> "results/runs/ml-100k/bert4rec-$attention.log" 2>&1 &
done
(
  $PY -m bench train "${small[@]}" --epochs 60 --patience 8 --max-minutes 6 --model sasrec --objective last_position \
      --attention linrec --variant official --out results/runs/ml-100k/sasrec-last-linrec-official > results/runs/ml-100k/sasrec-last-linrec-official.log 2>&1
  $PY -m bench train "${small[@]}" --epochs 60 --patience 8 --max-minutes 6 --model sasrec --objective last_position \
      --attention linformer --option k=32 --out results/runs/ml-100k/sasrec-last-linformer > results/runs/ml-100k/sasrec-last-linformer.log 2>&1
) &
wait
