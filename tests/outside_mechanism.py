"""A mechanism written outside the package, as a user of the suite would: one module, one decorator.

ReLU-kernel attention, dense and masked (causality and padding honoured): out_i =
sum_j relu(q_i).relu(k_j) v_j / (sum_j relu(q_i).relu(k_j) + eps) over the allowed keys j.
Loaded by tests/conftest.py, so the property tests, the presets and the gate see it too.
"""

import torch

from models.attention import AttentionLayer, Capabilities, register_attention


@register_attention("outside-relu")
class OutsideReluAttention(AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="linear, ReLU features (test plugin)",
        time="O(N^2 d)",
        memory="O(N^2)",
        reference="a test of the plugin path",
    )

    def attend(self, q, k, v, key_padding_mask):
        weights = torch.relu(q) @ torch.relu(k).transpose(-1, -2)  # (B, H, N, N)
        n = q.shape[-2]
        allowed = torch.ones(n, n, dtype=torch.bool, device=q.device)
        if self.causal:
            allowed = allowed.tril()
        if key_padding_mask is not None:
            allowed = allowed & key_padding_mask[:, None, None, :]  # (B, 1, N, N)
        weights = weights.masked_fill(~allowed, 0.0)
        return (weights @ v) / (weights.sum(-1, keepdim=True) + 1e-6)
