"""Linear Transformer (Katharopoulos et al., ICML 2020): elu(x) + 1 features, normalised."""

from __future__ import annotations

import torch.nn.functional as F

from .causal import normalised_linear_attention
from .common import DEFAULT_CHUNK_SIZE, check_qkv, real_positions, zero_padded_rows


def linear_attention(
    q, k, v, *, causal: bool = False, key_padding_mask=None, chunk_size: int = DEFAULT_CHUNK_SIZE, eps: float = 1e-6
):
    """Linear Transformer (Katharopoulos et al., ICML 2020): phi = elu + 1."""
    check_qkv(q, k, v)
    real = real_positions(key_padding_mask, q)
    fq, fk = F.elu(q) + 1.0, F.elu(k) + 1.0
    if real is not None:
        fk = fk * real
    return zero_padded_rows(normalised_linear_attention(fq, fk, v, causal, chunk_size, eps), real)
