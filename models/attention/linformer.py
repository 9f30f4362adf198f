"""Linformer: low-rank projection of keys and values along the sequence.

Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020,
https://arxiv.org/abs/2006.04768
Bidirectional only (a projection over positions mixes the future in), and sized by
max_len. NOTE: the projections are per layer and shared by all heads (the paper's
"headwise sharing"); padded keys/values are zeroed before projecting.
"""

import math

import torch
from torch import nn

from .base import AttentionLayer, Capabilities, register_attention
from .functional import linformer_attention


@register_attention("linformer", configs={"linformer": {"k": 256}})
class LinformerAttention(AttentionLayer):
    capabilities = Capabilities(
        causal=False,
        padding_mask=True,
        needs_max_len=True,
        exact_softmax=False,
        family="approximate softmax, low-rank",
        time="O(N k d)",
        memory="O(N k)",
        reference="Wang et al., 2020 (arXiv:2006.04768)",
    )

    def __init__(self, dim, heads, *, causal=False, max_len=None, dropout=0.0, k: int = 256, share_kv: bool = False):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        if k < 1:
            raise ValueError(f"linformer: k must be >= 1, got {k}")
        self.k, self.share_kv = k, share_kv
        std = 1.0 / math.sqrt(k)
        self.key_projection = nn.Parameter(torch.randn(k, max_len) * std)  # E: (k, N_max)
        self.value_projection = self.key_projection if share_kv else nn.Parameter(torch.randn(k, max_len) * std)  # F

    def attend(self, q, k, v, key_padding_mask):
        return linformer_attention(
            q,
            k,
            v,
            self.key_projection,
            self.value_projection,
            key_padding_mask=key_padding_mask,
            dropout_p=self.dropout,
            training=self.training,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", k={self.k}, share_kv={self.share_kv}"
