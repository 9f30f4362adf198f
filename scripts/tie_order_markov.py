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

It also counts how often ties decide the split, from ratings.dat's timestamps (`tie_statistics`): users
whose last two ratings share a second, users whose validation or test item differs between the orders, and
the share of tied neighbours in ascending MovieID in each order (a random order gives about half).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data import SequenceDataset, leave_one_out, load_dataset, locate  # noqa: E402
from bench.environment import environment  # noqa: E402
from bench.training.metrics import exclude_seen, rank_metrics  # noqa: E402


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


def rating_times(path: Path) -> dict[tuple[str, str], int]:
    """(user, MovieID) -> timestamp from a ratings.dat-style file (`user::movie::rating::timestamp`)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="latin-1") as handle:
        return {(user, movie): int(stamp) for user, movie, _, stamp in (line.strip().split("::") for line in handle)}


def tie_statistics(ours: SequenceDataset, raw: SequenceDataset, times: dict[tuple[str, str], int]) -> dict:
    """How often equal timestamps decide the leave-one-out split. Both datasets number MovieIDs in the same
    ascending order (tests/test_data.py), so one id -> MovieID table serves both."""
    assert ours.user_ids == raw.user_ids and ours.num_items == raw.num_items

    def stamp(user, item):
        return times[(user, raw.item_ids[item - 1])]

    def ascending_share(sequences):  # among neighbours rated in the same second
        pairs = [
            (a, b)
            for user, sequence in zip(raw.user_ids, sequences, strict=True)
            for a, b in zip(sequence[:-1], sequence[1:], strict=True)
            if stamp(user, a) == stamp(user, b)
        ]
        return sum(a < b for a, b in pairs) / len(pairs), len(pairs)

    users = raw.num_users
    tied_last_two = sum(stamp(u, s[-1]) == stamp(u, s[-2]) for u, s in zip(raw.user_ids, raw.sequences, strict=True))
    test_differs = sum(a[-1] != b[-1] for a, b in zip(ours.sequences, raw.sequences, strict=True))
    valid_differs = sum(a[-2] != b[-2] for a, b in zip(ours.sequences, raw.sequences, strict=True))
    raw_ascending, tied_pairs = ascending_share(raw.sequences)
    ours_ascending, _ = ascending_share(ours.sequences)
    return {
        "users": users,
        "last_two_tied": tied_last_two / users,  # in ratings.dat's order (the same second in either order)
        "test_item_differs": test_differs / users,
        "validation_item_differs": valid_differs / users,
        "tied_neighbour_pairs": tied_pairs,
        "tied_neighbours_ascending": {ours.name: ours_ascending, raw.name: raw_ascending},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder holding the datasets (else $LINREC_DATA)")
    parser.add_argument("--min-count", type=int, default=5, help="k-core filtering, as the accuracy recipes")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()
    rows, datasets = [], []
    for name in ("ml-1m-u2999", "ml-1m-ratings-u2999"):
        dataset = load_dataset(name, args.data_dir, min_count=args.min_count)
        datasets.append(dataset)
        metrics = markov_scores(dataset)
        rows.append({"dataset": name, "stats": dataset.stats(), "test": metrics})
        excluded, every = metrics["seen_excluded"]["ndcg@10"], metrics["all"]["ndcg@10"]
        print(f"{name:22s} test NDCG@10 seen-excluded {excluded:.4f}  all items {every:.4f}")
    ties = tie_statistics(*datasets, rating_times(locate("ml-1m-ratings-u2999", args.data_dir)[0]))
    print(json.dumps(ties, indent=1))
    record = {
        "script": "scripts/tie_order_markov.py",
        "model": "first-order Markov, popularity tie-break",
        "min_count": args.min_count,
        "rows": rows,
        "ties": ties,
        **environment("cpu"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
