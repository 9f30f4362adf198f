"""SASRec: self-attentive sequential recommendation.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018,
https://arxiv.org/abs/1808.09781
Two objectives:
  all_positions  every real position predicts the next item (cross-entropy over all
                 items); needs a causal attention, otherwise the future leaks.
  last_position  the input excludes the target and only the last position is scored
                 (the RecBole way the LinRec authors trained); any attention is
                 leak-free. Prefixes of each training sequence are sampled per epoch.
NOTE: cross-entropy over all items replaces the paper's one sampled negative (BCE),
as in RecBole and the LinRec authors' settings.
"""

from __future__ import annotations

import random

import torch

from .attention import available_attentions
from .encoder import EncoderConfig, SequenceEncoder, left_pad
from .recommender import Recommender, register_recommender

OBJECTIVES = ("all_positions", "last_position")
TRAIN_WINDOWS = ("last", "all")


def history_windows(sequence: list[int], max_len: int) -> list[list[int]]:
    """Windows of max_len + 1 items from the end, each sharing one item with the next older one,
    so every item after the first is a training target exactly once (inputs of max_len items)."""
    windows, end = [], len(sequence)
    while end > 1:
        windows.append(sequence[max(0, end - max_len - 1) : end])
        end -= max_len
    return windows


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


@register_recommender("sasrec")
class SASRec(Recommender):
    train_options = ("objective", "causal", "prefixes_per_user", "train_windows", "split_batches")
    # the cost of one more encoder pass, in positions, when a batch is split by length: 256 ran an ML-1M batch
    # (N = 800, one CPU thread) faster than 1024 or 4096 (scripts/training_throughput.py measures epochs)
    split_overhead = 256

    def __init__(
        self,
        config: EncoderConfig,
        objective: str = "all_positions",
        causal: bool | None = None,
        prefixes_per_user: int = 4,
        train_windows: str = "last",
        split_batches: bool = True,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if causal is None:
            causal = objective == "all_positions"
        if objective == "all_positions" and not causal:
            raise ValueError(
                "SASRec objective='all_positions' needs causal attention: without it every position sees the item "
                "it must predict"
            )
        if causal and not available_attentions()[config.attention]["causal"]:
            raise ValueError(
                f"SASRec objective={objective!r} with causal attention: {config.attention!r} has no causal form; "
                "use objective='last_position' (any attention) or a causal-capable mechanism"
            )
        if train_windows not in TRAIN_WINDOWS:
            raise ValueError(f"train_windows must be one of {TRAIN_WINDOWS}, got {train_windows!r}")
        self.config, self.objective, self.causal = config, objective, causal
        self.prefixes_per_user, self.train_windows = prefixes_per_user, train_windows
        # a batch shorter than max_len is cut to its longest sequence: exact, since positions are counted
        # from the right and padded keys are masked; not for mechanisms tied to one length (Linformer)
        capabilities = available_attentions()[config.attention]
        self.trim_batches = not capabilities["needs_max_len"]
        # a random batch mixes short and long histories: the encoder runs on groups of similar length, each cut
        # to its longest, and one loss is taken over all their targets (the same loss; less padding to compute).
        # NOTE: not for a mechanism whose training pass changes it (Performer's redraw count would run faster
        # and could redraw between two groups of one batch): its batches stay whole.
        self.split_batches = split_batches and self.trim_batches and not capabilities["stateful_training"]
        self.encoder = SequenceEncoder(config, causal=causal)

    # -- training batches ---------------------------------------------------------

    def epoch_examples(self, sequences: list[list[int]]) -> list[list[int]]:
        """all_positions: each user's last N + 1 items, or (train_windows="all") windows covering the whole
        history; last_position: each user prefixes_per_user times (a prefix is drawn per batch)."""
        sequences = super().epoch_examples(sequences)
        if self.objective == "last_position":
            return sequences * self.prefixes_per_user
        if self.train_windows == "all":
            return [w for s in sequences for w in history_windows(s, self.config.max_len) if len(w) >= 2]
        return sequences

    def make_batch(self, sequences: list[list[int]], rng: random.Random, device=None) -> dict:
        """Training tensors for a list of training sequences (items chronological)."""
        n = self.config.max_len
        if self.trim_batches:
            n = min(n, max(len(s) for s in sequences) - 1)
        if self.objective == "all_positions":
            inputs = left_pad([s[:-1] for s in sequences], n, device)
            targets = left_pad([s[1:] for s in sequences], n, device)
            return {"items": inputs, "targets": targets}
        histories, targets = [], []
        for seq in sequences:
            cut = rng.randint(1, len(seq) - 1)  # predict seq[cut] from seq[:cut]
            histories.append(seq[:cut])
            targets.append(seq[cut])
        return {"items": left_pad(histories, n, device), "targets": torch.tensor(targets, device=device)[:, None]}

    def training_loss(self, batch: dict) -> torch.Tensor:
        items, targets = batch["items"], batch["targets"]  # (B, N); targets (B, N) or (B, 1), 0 = no target
        if not self.split_batches:
            states, targets = self._target_states(items, targets)
            return self.encoder.item_loss(states, targets)
        lengths = (items != 0).sum(1)  # (B,) left-padded: a row's items are its last `length` columns
        order = torch.argsort(lengths)
        sorted_lengths = lengths[order].tolist()
        states, kept = [], []
        for start, end in similar_length_groups(sorted_lengths, self.split_overhead):
            rows, length = order[start:end], max(1, sorted_lengths[end - 1])
            group_targets = targets[rows] if self.objective == "last_position" else targets[rows, -length:]
            group_states, group_targets = self._target_states(items[rows, -length:], group_targets)
            states.append(group_states)
            kept.append(group_targets)
        return self.encoder.item_loss(torch.cat(states), torch.cat(kept))  # the mean over every target, as unsplit

    def _target_states(self, items: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, hidden) encoder states at the positions with a target, and those (T,) targets."""
        states = self.encoder(items)  # (B, n, hidden)
        if self.objective == "last_position":
            states = states[:, -1:]  # (B, 1, hidden)
        real = targets != 0
        return states[real], targets[real]

    # -- inference ----------------------------------------------------------------

    def score_next(self, histories: list[list[int]], device=None) -> torch.Tensor:
        """(B, I) scores of items 1..I as the next item after each history."""
        n = self.config.max_len
        if self.trim_batches:
            n = max(1, min(n, max(len(h) for h in histories)))
        states = self.encoder(left_pad(histories, n, device))  # (B, n, hidden)
        return self.encoder.item_scores(states[:, -1])

    @staticmethod
    def min_train_length() -> int:
        return 2
