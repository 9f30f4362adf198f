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


@pytest.mark.parametrize("chunk_size", [3, 4, 16])
def test_the_chunked_prefix_log_normaliser_is_logcumsumexp_at_real_positions(chunk_size):
    """Left padding over whole chunks, right padding, a hole inside a chunk; values and fp64 gradients."""
    from models.attention.kernels.common import split_chunks
    from models.attention.kernels.efficient import _VERY_NEGATIVE, _prefix_log_normaliser

    q, k, v, real = _inputs(torch.float64)
    real[0, :9] = False  # whole chunks of padding ahead of the first real key
    real[1, 5] = False  # a padded position between real ones
    real_keys = real[:, None, :, None].expand(-1, k.shape[1], -1, -1)  # (B, H, N, 1)
    realc = split_chunks(real_keys.double(), chunk_size).bool()  # (B, H, n, C, 1)

    def normaliser(keys):
        keys = torch.where(real_keys, keys, _VERY_NEGATIVE)
        chunked = _prefix_log_normaliser(split_chunks(keys, chunk_size, fill=_VERY_NEGATIVE), realc)
        return chunked.reshape(*keys.shape[:2], -1, keys.shape[-1])[:, :, : keys.shape[2]]  # (B, H, N, d)

    got, want = normaliser(k), torch.logcumsumexp(torch.where(real_keys, k, _VERY_NEGATIVE), dim=-2)
    assert torch.isfinite(got).all()
    assert torch.allclose(got[real_keys.expand_as(got)], want[real_keys.expand_as(want)], rtol=1e-12, atol=1e-12)
    keys = k.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: normaliser(x)[real_keys.expand_as(x)], (keys,))


def test_the_chunked_normaliser_gives_way_to_the_scan_when_keys_jump_within_a_chunk():
    from models.attention.kernels.common import split_chunks
    from models.attention.kernels.efficient import _prefix_log_normaliser

    q, k, v, real = _inputs()
    realc = split_chunks(torch.ones_like(k[..., :1]), 4).bool()
    assert _prefix_log_normaliser(split_chunks(k, 4), realc) is not None  # ordinary keys: the chunked form
    assert _prefix_log_normaliser(split_chunks(k * 40, 4), realc) is None  # far apart: the caller's scan
