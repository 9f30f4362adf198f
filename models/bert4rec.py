"""BERT4Rec: bidirectional Transformer trained with the Cloze task.

Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019, https://arxiv.org/abs/1904.06690
Training masks a fraction (`mask_ratio`, default 0.2 as the LinRec authors) of the
real items with [MASK] and predicts them over all items; inference appends [MASK]
after the (last N-1 items of the) history and scores that position.
NOTE: no output projection layer before the tied embeddings (as SASRec here), and at
least one item per sequence is always masked.
"""

from __future__ import annotations

import dataclasses
import random

import torch

from .encoder import EncoderConfig, SequenceEncoder, left_pad
from .recommender import Recommender, batch_cutting, register_recommender


@register_recommender("bert4rec")
class BERT4Rec(Recommender):
    train_options = ("mask_ratio", "masks_per_user", "split_batches")

    def __init__(
        self, config: EncoderConfig, mask_ratio: float = 0.2, masks_per_user: int = 1, split_batches: bool = True
    ):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        config = dataclasses.replace(config, extra_tokens=max(config.extra_tokens, 1))  # [MASK]; the caller's stays
        self.config, self.mask_ratio, self.causal = config, mask_ratio, False
        self.masks_per_user = masks_per_user
        self.mask_token = config.num_items + 1
        self.trim_batches, self.split_batches = batch_cutting(config.attention, split_batches)
        self.encoder = SequenceEncoder(config, causal=False)

    def epoch_examples(self, sequences: list[list[int]]) -> list[list[int]]:
        """Each user masks_per_user times, each copy masked afresh (the original's dupe factor)."""
        return super().epoch_examples(sequences) * self.masks_per_user

    def make_batch(self, sequences: list[list[int]], rng: random.Random, device=None) -> dict:
        items = left_pad(sequences, self.config.seq_len)
        real = items != 0
        draws = torch.tensor([[rng.random() for _ in range(items.shape[1])] for _ in range(items.shape[0])])
        masked = real & (draws < self.mask_ratio)
        nothing_masked = ~masked.any(dim=1) & real[:, -1]
        masked[nothing_masked, -1] = True  # left padding: the most recent item is the last column
        targets = torch.where(masked, items, 0)
        inputs = torch.where(masked, self.mask_token, items)
        if self.trim_batches:  # masks drawn at full width, so the random stream does not depend on the cut
            longest = int(real.sum(1).max())
            inputs, targets = inputs[:, -longest:], targets[:, -longest:]  # (B, longest)
        return {"items": inputs.to(device), "targets": targets.to(device)}

    def score_next(self, histories: list[list[int]], device=None) -> torch.Tensor:
        n = self.config.seq_len
        with_mask = [list(h[-(n - 1) :]) + [self.mask_token] for h in histories]
        if self.trim_batches:
            n = max(len(h) for h in with_mask)
        states = self.encoder(left_pad(with_mask, n, device))
        return self.encoder.item_scores(states[:, -1])

    @staticmethod
    def min_train_length() -> int:
        return 1
