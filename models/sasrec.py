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
from .recommender import Recommender, batch_cutting, register_recommender

OBJECTIVES = ("all_positions", "last_position")
TRAIN_WINDOWS = ("last", "all")


def history_windows(sequence: list[int], seq_len: int) -> list[list[int]]:
    """Windows of seq_len + 1 items from the end, each sharing one item with the next older one,
    so every item after the first is a training target exactly once (inputs of seq_len items)."""
    windows, end = [], len(sequence)
    while end > 1:
        windows.append(sequence[max(0, end - seq_len - 1) : end])
        end -= seq_len
    return windows


def scored_targets(sequence: list[int]) -> list[int]:
    """The next-item targets of a training sequence: every item after the first, or, when the sequence carries
    `scored` (one bool per item, as generated tasks mark where they planted a dependency), those items only
    (0: no target at that position)."""
    scored = getattr(sequence, "scored", None)
    if scored is None:
        return sequence[1:]
    return [item if keep else 0 for item, keep in zip(sequence[1:], scored[1:], strict=True)]


@register_recommender("sasrec")
class SASRec(Recommender):
    train_options = ("objective", "causal", "prefixes_per_user", "train_windows", "split_batches")

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
        self.trim_batches, self.split_batches = batch_cutting(config.attention, split_batches)
        self.encoder = SequenceEncoder(config, causal=causal)

    # -- training batches ---------------------------------------------------------

    def epoch_examples(self, sequences: list[list[int]]) -> list[list[int]]:
        """all_positions: each user's last N + 1 items, or (train_windows="all") windows covering the whole
        history; last_position: each user prefixes_per_user times (a prefix is drawn per batch)."""
        sequences = super().epoch_examples(sequences)
        if self.objective == "last_position":
            return sequences * self.prefixes_per_user
        if self.train_windows == "all":
            return [w for s in sequences for w in history_windows(s, self.config.seq_len) if len(w) >= 2]
        return sequences

    def make_batch(self, sequences: list[list[int]], rng: random.Random, device=None) -> dict:
        """Training tensors for a list of training sequences (items chronological)."""
        n = self.config.seq_len
        if self.trim_batches:
            n = min(n, max(len(s) for s in sequences) - 1)
        if self.objective == "all_positions":
            inputs = left_pad([s[:-1] for s in sequences], n, device)
            targets = left_pad([scored_targets(s) for s in sequences], n, device)
            return {"items": inputs, "targets": targets}
        histories, targets = [], []
        for seq in sequences:
            cut = rng.randint(1, len(seq) - 1)  # predict seq[cut] from seq[:cut]
            histories.append(seq[:cut])
            targets.append(seq[cut])
        return {"items": left_pad(histories, n, device), "targets": torch.tensor(targets, device=device)[:, None]}

    # -- inference ----------------------------------------------------------------

    def score_next(self, histories: list[list[int]], device=None) -> torch.Tensor:
        """(B, I) scores of items 1..I as the next item after each history."""
        n = self.config.seq_len
        if self.trim_batches:
            n = max(1, min(n, max(len(h) for h in histories)))
        states = self.encoder(left_pad(histories, n, device))  # (B, n, hidden)
        return self.encoder.item_scores(states[:, -1])

    @staticmethod
    def min_train_length() -> int:
        return 2
