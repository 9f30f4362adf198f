"""Synthetic sequences with learnable structure, for tests and efficiency sweeps.

Items are split into clusters; inside a cluster each item has a few fixed successors
(a sparse Markov chain), and each user has a preferred cluster to jump to. So the next
item is predictable from the last ones (a sequence model can learn it), while item
popularity alone is a weak predictor.
"""

from __future__ import annotations

import torch

from .dataset import SequenceDataset


def synthetic_dataset(
    num_users: int = 500,
    num_items: int = 200,
    *,
    num_clusters: int = 10,
    min_len: int = 20,
    max_len: int = 60,
    successors: int = 3,
    stay: float = 0.85,
    seed: int = 0,
) -> SequenceDataset:
    if num_items < num_clusters * successors:
        raise ValueError(f"num_items ({num_items}) must be >= num_clusters * successors ({num_clusters * successors})")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    g = torch.Generator().manual_seed(seed)
    cluster_of = torch.arange(num_items) % num_clusters  # item index 0..I-1
    members = [torch.nonzero(cluster_of == c).flatten() for c in range(num_clusters)]
    next_items = torch.stack(
        [
            members[cluster_of[i]][torch.randint(len(members[cluster_of[i]]), (successors,), generator=g)]
            for i in range(num_items)
        ]
    )
    sequences = []
    for _ in range(num_users):
        favourite = int(torch.randint(num_clusters, (1,), generator=g))
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        item = int(members[favourite][torch.randint(len(members[favourite]), (1,), generator=g)])
        seq = [item]
        for _ in range(length - 1):
            if float(torch.rand(1, generator=g)) < stay:
                item = int(next_items[item][torch.randint(successors, (1,), generator=g)])
            else:
                item = int(members[favourite][torch.randint(len(members[favourite]), (1,), generator=g)])
            seq.append(item)
        sequences.append([i + 1 for i in seq])  # 0 is padding
    return SequenceDataset(
        f"synthetic-u{num_users}-i{num_items}",
        sequences,
        num_items,
        [str(u) for u in range(num_users)],
        source=f"synthetic seed={seed}",
    )
