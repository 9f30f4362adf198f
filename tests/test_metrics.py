import math

import pytest
import torch

from bench.training.metrics import metrics_from_ranks, pessimistic_ranks, rank_metrics


def test_hand_computed_case():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.1, 0.2, 0.3]])
    targets = torch.tensor([2, 0])  # ranks 2 and 1
    m = rank_metrics(scores, targets, ks=(1, 2))
    assert m["recall@1"] == pytest.approx(0.5) and m["hit@1"] == m["recall@1"]
    assert m["recall@2"] == pytest.approx(1.0)
    assert m["mrr@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert m["mrr@1"] == pytest.approx(0.5)


def test_ties_are_pessimistic():
    scores = torch.zeros(3, 10)  # a model that scores everything equal
    ranks = pessimistic_ranks(scores, torch.tensor([0, 4, 9]))
    assert ranks.tolist() == [10, 10, 10]
    assert rank_metrics(scores, torch.tensor([0, 4, 9]), ks=(5,))["recall@5"] == 0.0
    partial = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert pessimistic_ranks(partial, torch.tensor([1])).item() == 2  # tied with item 2: counted behind it


def test_bad_shapes_and_nan_are_refused():
    with pytest.raises(ValueError, match=r"\(U, I\)"):
        rank_metrics(torch.zeros(3), torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        rank_metrics(torch.tensor([[float("nan"), 1.0]]), torch.tensor([0]))


def test_ranks_of_batches_dealt_to_replicas_and_gathered_in_order_equal_one_shot():
    from bench.training.distributed import Replicas, mine

    torch.manual_seed(0)
    scores, targets = torch.randn(100, 50), torch.randint(0, 50, (100,))
    batches = [(scores[s : s + 17], targets[s : s + 17]) for s in range(0, 100, 17)]
    by_index = {}
    for rank in range(3):  # what each of 3 replicas computes; all_gather_object then merges the dicts
        by_index |= {i: pessimistic_ranks(*b) for i, b in enumerate(batches) if mine(i, Replicas(rank=rank, world=3))}
    ordered = torch.cat([by_index[i] for i in range(len(batches))])
    assert metrics_from_ranks(ordered) == rank_metrics(scores, targets)
