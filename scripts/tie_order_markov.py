"""How much the order of equal-timestamp ratings is worth to a next-item model, with no training.

    python scripts/tie_order_markov.py --out results/tie-order/markov-ml-1m-u2999.json

ML-1M users rate many films within one second, so which of them comes "next" is decided by how a
file breaks timestamp ties. `ml-1m-u2999` (ml-1m.txt's order) and `ml-1m-ratings-u2999` (ratings.dat's
line order within a second, which SASRec-style preprocessing keeps with a stable sort) hold the same
ratings of the same 2,999 users (tests/test_data.py checks it). A first-order Markov model — the
next item ranked by how often it followed the user's last item in the training sequences, popularity
breaking ties — is scored on each with the suite's leave-one-out split and metrics (test item, full
ranking, both protocols). The gap between the orders is signal a sequential model can learn from one
file and not from the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data import SequenceDataset, leave_one_out, load_dataset  # noqa: E402
from bench.environment import environment  # noqa: E402
from bench.metrics import exclude_seen, rank_metrics  # noqa: E402


def markov_scores(dataset: SequenceDataset) -> dict[str, dict[str, float]]:
    """Test metrics of the first-order Markov model, seen items excluded and all items ranked."""
    split = leave_one_out(dataset)
    items = dataset.num_items
    follows = torch.zeros(items + 1, items + 1)  # (previous id, next id), 0 = padding
    popularity = torch.zeros(items + 1)
    for history, _ in split.test:  # the test history = training items + the validation item
        sequence = torch.tensor(history)
        follows.index_put_((sequence[:-1], sequence[1:]), torch.ones(len(sequence) - 1), accumulate=True)
        popularity.index_put_((sequence,), torch.ones(len(sequence)), accumulate=True)
    histories = [history for history, _ in split.test]
    last = torch.tensor([history[-1] for history in histories])
    scores = follows[last, 1:] + 1e-3 * popularity[1:] / popularity.max()  # (U, I): columns are ids 1..I
    targets = torch.tensor([target for _, target in split.test]) - 1
    return {
        "seen_excluded": rank_metrics(exclude_seen(scores, histories, targets), targets),
        "all": rank_metrics(scores, targets),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding the datasets (else $LINREC_DATA)")
    parser.add_argument("--min-count", type=int, default=5, help="k-core filtering, as the accuracy recipes")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()
    rows = []
    for name in ("ml-1m-u2999", "ml-1m-ratings-u2999"):
        dataset = load_dataset(name, args.data_dir, min_count=args.min_count)
        metrics = markov_scores(dataset)
        rows.append({"dataset": name, "stats": dataset.stats(), "test": metrics})
        excluded, every = metrics["seen_excluded"]["ndcg@10"], metrics["all"]["ndcg@10"]
        print(f"{name:22s} test NDCG@10 seen-excluded {excluded:.4f}  all items {every:.4f}")
    record = {
        "script": "scripts/tie_order_markov.py",
        "model": "first-order Markov, popularity tie-break",
        "min_count": args.min_count,
        "rows": rows,
        **environment("cpu"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
