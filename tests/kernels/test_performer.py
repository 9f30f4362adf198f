"""Performer kernels (models/attention/kernels/performer.py)."""

import dense_reference as dense
import pytest
import torch
from kernel_inputs import D, _close, _inputs

import models.attention.kernels.causal  # noqa: F401  (patched as kernels.causal)
from models.attention import functional as fn


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_performer_kernel_matches_dense_reference(causal, padded):
    q, k, v, real = _inputs()
    mask = real if padded else None
    projection = fn.orthogonal_random_features(32, D)
    out = fn.performer_attention(q, k, v, projection, causal=causal, key_padding_mask=mask, chunk_size=4)
    _close(out, dense.performer(q, k, v, projection, causal, mask))


@pytest.mark.parametrize("causal", [False, True])
def test_performer_approximates_softmax_with_many_features(causal):
    q, k, v, _ = _inputs()
    q, k = 0.5 * q, 0.5 * k
    projection = fn.orthogonal_random_features(8192, D)
    approx = fn.performer_attention(q, k, v, projection, causal=causal)
    exact = dense.softmax(q, k, v, causal)
    assert (approx - exact).abs().mean() < 0.05 * exact.abs().mean()


def test_orthogonal_features_blocks_are_orthogonal():
    w = fn.orthogonal_random_features(2 * D, D)
    block = w[:D] / w[:D].norm(dim=1, keepdim=True)
    assert torch.allclose(block @ block.T, torch.eye(D), atol=1e-5)
