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


def test_causal_linear_core_keeps_gradients_exact_after_a_huge_one():
    """One early query's gradient is 1e12 times the others (a query whose normaliser is tiny, as Performer's can
    be): the later chunks' key and value gradients, of order 1, must not carry its rounding (a reverse prefix
    written as total minus cumsum subtracted it back out, leaving ~1e-4 of error in each)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 32, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, 1, 32, 4, dtype=torch.float64)
    grad[..., 1, :] *= 1e12
    want = torch.autograd.grad(torch.tril(q @ k.transpose(-1, -2)) @ v, (q, k, v), grad)
    got = torch.autograd.grad(fn.causal_linear_attention(q, k, v, chunk_size=4), (q, k, v), grad)
    for name, a, b in zip("qkv", got, want, strict=True):
        later = slice(4, 32)  # the chunks after the huge gradient's
        torch.testing.assert_close(a[..., later, :], b[..., later, :], rtol=1e-10, atol=1e-10, msg=name)
