"""Ranking metrics with one target per user, pessimistic ties.

rank = 1 + number of other items scoring >= the target (an item tying with the
target counts as ranked above it, so a constant scorer gets the worst rank).
Recall@K = Hit@K = [rank <= K]; MRR@K = 1/rank; NDCG@K = 1/log2(rank + 1) (0 past K).
"""

from __future__ import annotations

import math

import torch


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores (U, I), targets (U,) column indices -> ranks (U,) counted from 1."""
    if scores.dim() != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(
            f"scores must be (U, I) and targets (U,); got {tuple(scores.shape)} and {tuple(targets.shape)}"
        )
    target_scores = scores.gather(1, targets[:, None].long())
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return (scores >= target_scores).sum(dim=1)  # includes the target itself


def metrics_from_ranks(ranks: torch.Tensor, ks=(5, 10, 20)) -> dict[str, float]:
    ranks = ranks.double()
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"recall@{k}"] = hit.double().mean().item()
        out[f"hit@{k}"] = out[f"recall@{k}"]
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / ranks, 0.0).mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1), 0.0).mean().item()
    return out


def rank_metrics(scores: torch.Tensor, targets: torch.Tensor, ks=(5, 10, 20)) -> dict[str, float]:
    """Recall/Hit/MRR/NDCG@K averaged over users; scores (U, I), targets (U,) item columns."""
    return metrics_from_ranks(pessimistic_ranks(scores, targets), ks)


def exclude_seen(scores: torch.Tensor, histories: list[list[int]], targets: torch.Tensor) -> torch.Tensor:
    """A copy of scores (U, I) with every item of each user's history set to -inf, except the target.

    Items are ids 1..I (column = id - 1). The target stays rankable even when it also appears in
    the history (a repeat consumption), as in the published SASRec+/gSASRec evaluation code.
    """
    excluded = scores.clone()
    lengths = torch.tensor([len(h) for h in histories])
    rows = torch.repeat_interleave(torch.arange(len(histories)), lengths)  # (total history items,)
    columns = torch.tensor([item for history in histories for item in history], dtype=torch.long) - 1
    excluded[rows, columns] = -math.inf
    users = torch.arange(len(histories))
    excluded[users, targets] = scores[users, targets]
    return excluded
