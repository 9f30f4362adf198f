"""Mechanisms that misbehave on purpose, for the hardening tests: one never returns, one returns NaN."""

import time

import torch

from models.attention import AttentionLayer, Capabilities, register_attention

_CAPS = dict(
    causal=True, padding_mask=True, needs_max_len=False, exact_softmax=False, family="test", time="-", memory="O(N d)"
)


@register_attention("never-returns")
class NeverReturns(AttentionLayer):
    capabilities = Capabilities(**_CAPS, reference="a cell that cannot finish")

    def attend(self, q, k, v, key_padding_mask):
        time.sleep(3600)
        return v


@register_attention("returns-nan")
class ReturnsNaN(AttentionLayer):
    capabilities = Capabilities(**_CAPS, reference="a mechanism whose output is NaN")

    def attend(self, q, k, v, key_padding_mask):
        return v * torch.tensor(float("nan"))
