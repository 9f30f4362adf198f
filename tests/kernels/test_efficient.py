"""Efficient Attention kernels (models/attention/kernels/efficient.py)."""

import dense_reference as dense
import pytest
import torch
from kernel_inputs import _close, _inputs

import models.attention.kernels.causal  # noqa: F401  (patched as kernels.causal)
from models.attention import functional as fn


@pytest.mark.parametrize("padded", [False, True])
def test_efficient_causal_stays_exact_with_extreme_keys(padded):
    """Keys jumping by far more than exp() can hold take the stable intra-chunk path."""
    q, k, v, real = _inputs()
    k = k * 40
    mask = real if padded else None
    out = fn.efficient_attention(q, k, v, causal=True, key_padding_mask=mask, chunk_size=4)
    assert torch.isfinite(out).all()
    _close(out, dense.efficient(q, k, v, True, mask))
