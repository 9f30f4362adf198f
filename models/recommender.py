"""What training and evaluation need from a sequential recommender, and a registry of them by name.

A recommender turns a list of chronological item sequences into training batches
(`epoch_examples`, `make_batch`), a batch into a loss (`training_loss`) and histories into
next-item scores over the whole catalogue (`score_next`). `train_options` names the training
settings (fields of bench.train.TrainConfig) its constructor takes, so the training loop
builds any registered recommender without knowing which it is.
"""

from __future__ import annotations

import random

import torch
from torch import nn

_RECOMMENDERS: dict[str, type[Recommender]] = {}


class Recommender(nn.Module):
    train_options: tuple[str, ...] = ()

    def epoch_examples(self, sequences: list[list[int]]) -> list[list[int]]:
        """One epoch's training examples from the users' training sequences (before shuffling)."""
        return [s for s in sequences if len(s) >= self.min_train_length()]

    def make_batch(self, sequences: list[list[int]], rng: random.Random, device=None) -> dict:
        raise NotImplementedError

    def training_loss(self, batch: dict) -> torch.Tensor:
        """Mean loss over the batch's targets (positions where batch["targets"] != 0)."""
        raise NotImplementedError

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
