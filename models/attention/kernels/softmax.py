"""Softmax attention: materialised (the dense reference) and torch's fused scaled_dot_product_attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import check_qkv, real_positions, zero_padded_rows


def softmax_attention(
    q, k, v, *, causal: bool = False, key_padding_mask=None, dropout_p: float = 0.0, training: bool = False
):
    """Materialised softmax(q k^T / sqrt(d) + masks) v: the dense reference (O(N^2) memory)."""
    check_qkv(q, k, v)
    length, dim = q.shape[-2], q.shape[-1]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dim)  # (B, H, N, N)
    allowed = _allowed_pairs(key_padding_mask, causal, length, q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0 and training:
        probs = F.dropout(probs, dropout_p)
    return zero_padded_rows(probs @ v, real_positions(key_padding_mask, q))


def _allowed_pairs(key_padding_mask, causal: bool, length: int, device) -> torch.Tensor | None:
    """Bool (B or 1, 1, N, N): may query i look at key j? Every row keeps its diagonal,
    so a padded query row is never empty (its output is zeroed afterwards): no NaN."""
    if key_padding_mask is None and not causal:
        return None
    allowed = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril()
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)
    return allowed


def sdpa_attention(
    q, k, v, *, causal: bool = False, key_padding_mask=None, dropout_p: float = 0.0, training: bool = False
):
    """The same maths through torch's fused scaled_dot_product_attention.

    Without padding it passes is_causal and no mask, so the flash kernels stay eligible;
    with padding it passes a boolean mask (flash refuses explicit masks: the
    memory-efficient or math kernel runs instead).
    """
    check_qkv(q, k, v)
    dropout_p = dropout_p if training else 0.0
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout_p)
    allowed = _allowed_pairs(key_padding_mask, causal, q.shape[-2], q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    return zero_padded_rows(out, real_positions(key_padding_mask, q))
