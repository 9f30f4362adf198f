"""What training and evaluation need from a sequential recommender, and a registry of them by name.

A recommender turns a list of chronological item sequences into training batches
(`epoch_examples`, `make_batch`), a batch into a loss (`training_loss`) and histories into
next-item scores over the whole catalogue (`score_next`). `train_options` names the training
settings (fields of bench.training.train.TrainConfig) its constructor takes, so the training loop
builds any registered recommender without knowing which it is.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from .attention import available_attentions

_RECOMMENDERS: dict[str, type[Recommender]] = {}


def batch_cutting(attention: str, split_batches: bool) -> tuple[bool, bool]:
    """Whether a left-padded batch may be cut to its longest sequence, and whether its training pass may run as
    groups of similar length, each cut to its longest (`Recommender.target_loss`).

    Cutting is exact: positions count from the right and padded keys are masked; not for mechanisms sized by one
    length (Linformer). NOTE: no groups for a mechanism whose training pass changes it (Performer's redraw count
    would run faster and could redraw between two groups of one batch): its batches stay whole."""
    capabilities = available_attentions()[attention]
    trim = not capabilities["needs_max_len"]
    return trim, split_batches and trim and not capabilities["stateful_training"]


def similar_length_groups(lengths: list[int], overhead: int) -> list[tuple[int, int]]:
    """Split ascending lengths into contiguous groups [start, end) that minimise the padded work:
    sum over groups of (rows x the group's longest length) + `overhead` per group (the fixed cost of one
    more encoder pass, in positions)."""
    best = [0.0] + [float("inf")] * len(lengths)  # best[j]: cheapest split of the first j lengths
    start_of = [0] * (len(lengths) + 1)
    for end in range(1, len(lengths) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * lengths[end - 1] + overhead
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    groups, end = [], len(lengths)
    while end > 0:
        groups.append((start_of[end], end))
        end = start_of[end]
    return groups[::-1]


class Recommender(nn.Module):
    train_options: tuple[str, ...] = ()
    trim_batches = split_batches = False  # set by batch_cutting in a subclass that supports them
    # the cost of one more encoder pass, in positions, when a batch is split by length: 256 came out fastest of
    # 256 / 1024 / 4096 in a rough, uncommitted timing of ML-1M batches at N = 800 (one CPU thread); the committed
    # epoch times (scripts/training_throughput.py) were measured with 256
    split_overhead = 256

    def epoch_examples(self, sequences: list[list[int]]) -> list[list[int]]:
        """One epoch's training examples from the users' training sequences (before shuffling)."""
        return [s for s in sequences if len(s) >= self.min_train_length()]

    def make_batch(self, sequences: list[list[int]], rng: random.Random, device=None) -> dict:
        raise NotImplementedError

    def training_loss(self, batch: dict) -> torch.Tensor:
        """Mean loss over the batch's targets (positions where batch["targets"] != 0)."""
        return self.target_loss(batch["items"], batch["targets"])

    def forward(self, batch: dict, weight: float = 1.0) -> torch.Tensor:
        """The training loss times `weight`: what the training loop calls, through DistributedDataParallel
        when there are replicas (calling training_loss directly would skip its gradient synchronisation)."""
        if not bool((batch["targets"] != 0).any()):  # a replica's share without targets: a zero loss that still
            return sum(p.sum() for p in self.parameters()) * 0.0  # reaches every parameter, so gradients sync
        loss = self.training_loss(batch)
        return loss if weight == 1.0 else loss * weight

    def score_next(self, histories: list[list[int]], device=None) -> torch.Tensor:
        """(B, I) scores of items 1..I as the next item after each history."""
        raise NotImplementedError

    def target_loss(self, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean item loss over the targets of a left-padded batch: items (B, N); targets (B, N) aligned with them,
        or (B, n) for the last n positions only; 0 = no target.

        With split_batches, a batch that mixes short and long sequences runs the encoder on groups of similar
        length, each cut to its longest, and takes one loss over all their targets: the same loss and gradients
        as the padded batch, with less padding to compute."""
        if not self.split_batches:
            states, kept = self._target_states(items, targets)
            return self.encoder.item_loss(states, kept)
        aligned = targets.shape[1] == items.shape[1]  # else: targets of the last columns only, kept whole
        lengths = (items != 0).sum(1)  # (B,) left-padded: a row's items are its last `length` columns
        order = torch.argsort(lengths)
        sorted_lengths = lengths[order].tolist()
        states, kept = [], []
        for start, end in similar_length_groups(sorted_lengths, self.split_overhead):
            rows, length = order[start:end], max(1, sorted_lengths[end - 1])
            group_targets = targets[rows, -length:] if aligned else targets[rows]
            group_states, group_targets = self._target_states(items[rows, -length:], group_targets)
            states.append(group_states)
            kept.append(group_targets)
        return self.encoder.item_loss(torch.cat(states), torch.cat(kept))  # the mean over every target, as unsplit

    def _target_states(self, items: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, hidden) encoder states at the positions with a target, and those (T,) targets."""
        states = self.encoder(items)[:, -targets.shape[1] :]  # (B, n, hidden): the columns targets cover
        real = targets != 0
        return states[real], targets[real]

    @staticmethod
    def min_train_length() -> int:
        return 2


def register_recommender(name: str):
    def decorator(cls: type[Recommender]) -> type[Recommender]:
        if name in _RECOMMENDERS:
            raise ValueError(f"recommender {name!r} is already registered by {_RECOMMENDERS[name].__name__}")
        _RECOMMENDERS[name] = cls
        return cls

    return decorator


def available_recommenders() -> list[str]:
    return sorted(_RECOMMENDERS)


def recommender_class(name: str) -> type[Recommender]:
    if name not in _RECOMMENDERS:
        raise ValueError(f"--model: unknown recommender {name!r}; registered: {', '.join(available_recommenders())}")
    return _RECOMMENDERS[name]
