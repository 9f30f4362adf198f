#!/usr/bin/env bash
# Training runs behind the README's accuracy section (CPU, one thread each; background).
#   bash scripts/cpu_training_evidence.sh [MINUTES_ML1M] [--resume]
# ML-1M: SASRec, every-position training, N=200, sdpa vs causal LinRec (paper form),
# same seed and budget. ML-100K: BERT4Rec and SASRec last_position with two mechanisms each.
# Results (results.json, checkpoints for --resume) go to results/ml-1m and results/ml-100k.
set -uo pipefail
MINUTES=${1:-65}
RESUME=${2:-}
PY=${PYTHON:-python}
common=(--max-len 200 --hidden 64 --heads 2 --layers 2 --inner 256 --dropout 0.2 --batch-size 128 --lr 1e-3
        --epochs 200 --patience 10 --seed 2000 --threads 1 --no-progress)
for attention in sdpa linrec; do
  $PY -m bench train --dataset ml-1m --model sasrec --attention "$attention" "${common[@]}" --max-minutes "$MINUTES" $RESUME \
      --out "results/ml-1m/sasrec-all-$attention" > "results/ml-1m/sasrec-all-$attention.log" 2>&1 &
done
small=(--dataset ml-100k --max-len 100 --hidden 64 --heads 2 --layers 2 --inner 256 --dropout 0.2 --batch-size 128 --lr 1e-3
       --epochs 60 --patience 8 --seed 2000 --threads 1 --no-progress --max-minutes 6)
(
  for attention in linrec sdpa; do
    $PY -m bench train "${small[@]}" --model bert4rec --attention "$attention" $RESUME --out "results/ml-100k/bert4rec-$attention" \
        > "results/ml-100k/bert4rec-$attention.log" 2>&1
  done
  $PY -m bench train "${small[@]}" --model sasrec --objective last_position --attention linrec --variant official $RESUME \
      --out results/ml-100k/sasrec-last-linrec-official > results/ml-100k/sasrec-last-linrec-official.log 2>&1
  $PY -m bench train "${small[@]}" --model sasrec --objective last_position --attention linformer --option k=32 $RESUME \
      --out results/ml-100k/sasrec-last-linformer > results/ml-100k/sasrec-last-linformer.log 2>&1
) &
wait
