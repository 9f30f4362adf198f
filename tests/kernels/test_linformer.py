"""Linformer kernels (models/attention/kernels/linformer.py)."""

import dense_reference as dense
import pytest
import torch
from kernel_inputs import B, D, H, N, _close, _inputs

import models.attention.kernels.causal  # noqa: F401  (patched as kernels.causal)
from models.attention import functional as fn
from models.attention import kernels


@pytest.mark.parametrize("padded", [False, True])
def test_linformer_kernel_matches_dense_reference(padded):
    q, k, v, real = _inputs()
    mask = real if padded else None
    e_proj, f_proj = torch.randn(5, 20), torch.randn(5, 20)
    _close(
        fn.linformer_attention(q, k, v, e_proj, f_proj, key_padding_mask=mask),
        dense.linformer(q, k, v, e_proj, f_proj, mask),
    )


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("block_bytes", [1, 1 << 30], ids=["one-head-blocks", "one-block"])
def test_linformer_blockwise_gradients_match_the_dense_reference(monkeypatch, padded, block_bytes):
    """The blockwise Linformer recomputes its probabilities in the backward; gradients must be exact."""
    monkeypatch.setattr(kernels.common, "CACHE_BLOCK_BYTES", block_bytes)
    q, k, v, real = (t.double() if t.is_floating_point() else t for t in _inputs())
    e_proj, f_proj = torch.randn(5, 20, dtype=torch.float64), torch.randn(5, 20, dtype=torch.float64)
    inputs = [t.requires_grad_(True) for t in (q, k, v, e_proj, f_proj)]
    mask = real if padded else None
    weights = torch.randn(B, H, N, D, dtype=torch.float64)
    got = torch.autograd.grad(
        (fn.linformer_attention(q, k, v, e_proj, f_proj, key_padding_mask=mask) * weights).sum(), inputs
    )
    expected = torch.autograd.grad((dense.linformer(q, k, v, e_proj, f_proj, mask) * weights).sum(), inputs)
    for g, e in zip(got, expected, strict=False):
        _close(g, e, rtol=1e-9)


def test_linformer_dropout_path_drops_and_keeps_the_expectation():
    q, k, v, _ = _inputs()
    e_proj, f_proj = torch.randn(5, 20), torch.randn(5, 20)
    plain = fn.linformer_attention(q, k, v, e_proj, f_proj)
    torch.manual_seed(0)
    dropped = torch.stack(
        [fn.linformer_attention(q, k, v, e_proj, f_proj, dropout_p=0.5, training=True) for _ in range(400)]
    )
    assert not torch.allclose(dropped[0], plain)
    assert (dropped.mean(0) - plain).abs().mean() < 0.1 * plain.abs().mean()
