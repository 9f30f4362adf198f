"""Attention mechanisms behind one interface.

    from models.attention import build_attention, available_attentions
    layer = build_attention("linrec", 128, 8, causal=True)   # (B, N, 128) -> (B, N, 128)
    y = layer(x, padding_mask)                                # padding_mask: (B, N) bool, True = real

Kernels for your own model: `models.attention.functional` (q, k, v as (B, H, N, d)).
"""

from . import softmax  # noqa: F401, I001  (registers sdpa and softmax first: the baselines lead every list)
from . import efficient, functional, linear, linformer, linrec, lru, mamba, performer, retention  # noqa: F401  (registers)
from .base import (
    AttentionLayer,
    Capabilities,
    UnsupportedAttentionConfig,
    attention_class,
    available_attentions,
    build_attention,
    list_attentions,
    register_attention,
)

__all__ = [
    "AttentionLayer",
    "Capabilities",
    "UnsupportedAttentionConfig",
    "attention_class",
    "available_attentions",
    "build_attention",
    "functional",
    "list_attentions",
    "register_attention",
]
