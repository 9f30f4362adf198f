"""Evaluation: every user's target ranked against all items (both full-ranking protocols from one scoring pass)
or against 100 sampled negatives, in batches, optionally split across torchrun ranks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from ..data import SequenceDataset
from . import distributed
from .config import FULL_RANKING, TrainConfig
from .metrics import exclude_seen, metrics_from_ranks, pessimistic_ranks


@torch.no_grad()
def evaluate(
    model,
    examples: list[tuple[list[int], int]],
    num_items: int,
    config: TrainConfig,
    *,
    item_popularity: torch.Tensor | None = None,
    seed: int = 0,
    ks=(5, 10, 20),
    device: str | None = None,
    replicas: distributed.Replicas | None = None,
    ranks_out: dict | None = None,
) -> dict[str, dict]:
    """Metrics per protocol over (history, target) pairs, scored in batches of eval_batch_size users.

    Full ranking: {"all": ..., "seen_excluded": ...} from the same scores; sampled: {protocol: ...}.
    With replicas, batches are dealt round robin and their ranks gathered back in order: every
    rank returns the same metrics, equal to one process's. `ranks_out`, when given, receives each
    protocol's rank of every example, in the order of `examples` (for paired tests between runs).
    """
    model.eval()
    device = device or config.device
    replicas = replicas or distributed.Replicas()
    full = config.protocol == "full"
    order = list(range(len(examples)))
    if full:  # similar lengths together: batches are cut to their longest history (metrics are means, order-free)
        order.sort(key=lambda position: len(examples[position][0]))
        examples = [examples[position] for position in order]
    chunks = [
        examples[start : start + config.eval_batch_size] for start in range(0, len(examples), config.eval_batch_size)
    ]
    ranks_by_chunk = {}
    for index, chunk in enumerate(chunks):
        if not distributed.mine(index, replicas):
            continue
        histories = [h for h, _ in chunk]
        targets = torch.tensor([t - 1 for _, t in chunk])  # item id -> score column
        scores = model.score_next(histories, device).float().cpu()  # (b, I)
        if full:
            ranks_by_chunk[index] = {
                "all": pessimistic_ranks(scores, targets),
                "seen_excluded": pessimistic_ranks(exclude_seen(scores, histories, targets), targets),
            }
        else:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + index)  # per batch: the same on any rank
            candidates = _sampled_candidates(
                histories, targets, num_items, config.protocol, item_popularity, generator
            )  # (b, 101), target first
            ranks_by_chunk[index] = {
                config.protocol: pessimistic_ranks(
                    scores.gather(1, candidates), torch.zeros(len(chunk), dtype=torch.long)
                )
            }
    ordered = distributed.gather_in_order(ranks_by_chunk, len(chunks), replicas)
    names = FULL_RANKING if full else (config.protocol,)
    all_ranks = {
        name: torch.cat([ranks[name] for ranks in ordered]) if ordered else torch.empty(0, dtype=torch.long)
        for name in names
    }
    if ranks_out is not None:
        for name, ranks in all_ranks.items():
            in_input_order = torch.empty_like(ranks)
            in_input_order[torch.tensor(order, dtype=torch.long)] = ranks
            ranks_out[name] = in_input_order.tolist()
    return {name: metrics_from_ranks(ranks, ks) for name, ranks in all_ranks.items()}


@torch.no_grad()
def evaluate_probes(model, probes: list, device: str, tokens_per_batch: int = 16384, ks=(5, 10, 20)) -> dict:
    """Full-ranking metrics (every item ranked, pessimistic ties) at every marked position of whole sequences,
    pooled over positions: `probes` are sequences with a `scored` mask (long-range tasks: the positions whose
    evidence lies exactly k back). A causal next-item model scores them all in one pass per batch of users."""
    model.eval()
    ranks = []
    length = max(len(sequence) for sequence in probes)
    users_per_batch = max(1, tokens_per_batch // length)
    for start in range(0, len(probes), users_per_batch):
        chunk = probes[start : start + users_per_batch]
        items = torch.tensor([list(sequence) for sequence in chunk], device=device)  # (b, L): equal lengths
        marked = torch.tensor([sequence.scored for sequence in chunk], device=device)[:, 1:]  # (b, L - 1)
        states = model.encoder(items[:, :-1])  # (b, L - 1, hidden): position t predicts item t + 1
        scores = model.encoder.item_scores(states[marked]).float().cpu()  # (T, I)
        ranks.append(pessimistic_ranks(scores, items[:, 1:][marked].cpu() - 1))
    return {**metrics_from_ranks(torch.cat(ranks), ks), "positions": sum(len(r) for r in ranks)}


def _sampled_candidates(histories, targets, num_items, protocol, popularity, generator, negatives=100):
    weights = popularity.double() if protocol == "pop100" else torch.ones(num_items, dtype=torch.float64)
    rows = []
    for history, target in zip(histories, targets.tolist(), strict=False):
        w = weights.clone()
        w[torch.tensor(sorted(set(history))) - 1] = 0
        w[target] = 0
        if int((w > 0).sum()) < negatives:
            raise ValueError(
                f"--protocol {protocol}: a user has fewer than {negatives} items left to sample as negatives "
                f"({num_items} items in all)"
            )
        picked = torch.multinomial(w, negatives, replacement=False, generator=generator)
        rows.append(torch.cat([torch.tensor([target]), picked]))
    return torch.stack(rows)


TEST_RANKS_FILE = "test_ranks.json.gz"


def write_test_ranks(path: Path, dataset: SequenceDataset, split, ranks: dict[str, list[int]]) -> None:
    """Each test user's rank of their target, per protocol: what a paired test between two runs reads.

    Users are named by their raw ids (the split's test users), so runs on the same file pair up user by user; the
    file's sha256 says which file that was. About 40 KB gzipped for ML-1M."""
    user_ids = dataset.user_ids or [str(index) for index in range(dataset.num_users)]
    tested = [user_ids[index] for index in split.test_users]
    payload = {
        "dataset": dataset.name,
        "file_sha256": dataset.file_sha256,
        "users": tested,
        "ranks": ranks,
        # items before each test target: reports read accuracy by history length from it
        "history_lengths": [len(history) for history, _ in split.test],
    }
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as handle:
        json.dump(payload, handle, separators=(",", ":"))
    tmp.replace(path)
