"""The chunked causal linear core (models/attention/kernels/causal.py)."""

import pytest
import torch
from kernel_inputs import _close

import models.attention.kernels.causal  # noqa: F401  (patched as kernels.causal)
from models.attention import functional as fn


def test_causal_linear_core_matches_masked_product_across_many_chunks():
    q, k, v = (torch.randn(1, 1, 256, 16) for _ in range(3))
    out = fn.causal_linear_attention(q, k, v, chunk_size=64)
    full = torch.tril(q @ k.transpose(-1, -2)) @ v
    _close(out, full)


@pytest.mark.parametrize("length", [1, 7, 12])
def test_causal_linear_core_hand_written_backward_passes_gradcheck(length):
    q, k, v = (torch.randn(2, 2, length, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: fn.causal_linear_attention(q, k, v, chunk_size=4), (q, k, v))
