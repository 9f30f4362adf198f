"""scripts/tie_order_markov.py: the tie statistics and the Markov baseline on hand-made files."""

import gzip
import importlib.util
from pathlib import Path

import pytest

from bench.data import build_dataset

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tie_order_markov.py"
_spec = importlib.util.spec_from_file_location("tie_order_markov", _SCRIPT)
tie_order = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tie_order)

# user -> (MovieID, timestamp) in ratings.dat's line order
RATINGS = {
    "1": [("30", 100), ("10", 200), ("20", 200)],  # last two tied; line order ascends
    "2": [("20", 50), ("30", 60), ("10", 70)],  # no ties
}


def _write_ratings(path):
    lines = [f"{user}::{movie}::5::{stamp}\n" for user, rows in RATINGS.items() for movie, stamp in rows]
    with gzip.open(path, "wt") as handle:
        handle.writelines(lines)
    return path


def test_tie_statistics_count_the_split_decided_by_ties(tmp_path):
    raw = build_dataset("raw", {u: [m for m, _ in rows] for u, rows in RATINGS.items()})
    # the other file breaks user 1's tie the other way round: its test and validation items swap
    ours = build_dataset("ours", {"1": ["30", "20", "10"], "2": ["20", "30", "10"]})
    times = tie_order.rating_times(_write_ratings(tmp_path / "ratings.dat.gz"))
    assert times[("1", "20")] == 200
    stats = tie_order.tie_statistics(ours, raw, times)
    assert stats["users"] == 2
    assert stats["last_two_tied"] == pytest.approx(0.5)
    assert stats["test_item_differs"] == pytest.approx(0.5)
    assert stats["validation_item_differs"] == pytest.approx(0.5)
    assert stats["tied_neighbour_pairs"] == 1
    assert stats["tied_neighbours_ascending"] == {"ours": 0.0, "raw": 1.0}


def test_markov_scores_rank_the_item_that_followed_the_last_one():
    # user 0 ends on item 1, which was followed by 3 three times and by 2 once: the target 3 ranks first.
    # Nothing followed user 1's last item 4, so popularity ranks: 5 was never seen, last of five items,
    # second of the two its history leaves (the target 3 of user 0 is in its history and stays rankable).
    dataset = build_dataset("toy", {"0": ["1", "3", "1", "3", "1", "2", "1", "3"], "1": ["1", "3", "4", "5"]})
    scores = tie_order.markov_scores(dataset)
    assert scores["all"]["mrr@5"] == pytest.approx((1 + 1 / 5) / 2)
    assert scores["seen_excluded"]["mrr@5"] == pytest.approx((1 + 1 / 2) / 2)
