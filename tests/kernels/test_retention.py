"""Retention (kernels/retention.py) against the plain step-by-step recurrence S_i = gamma S_{i-1} + k_i v_i^T, values
and fp64 gradients; bidirectional against the dense gamma^|i - j| form."""

import pytest
import torch

from models.attention.kernels.retention import retention_attention, retention_decays

B, H, N, D = 2, 3, 13, 4


def _recurrence(q, k, v, gamma, mask):
    """The causal form one position at a time: a d x e state per head, decayed then added to."""
    out = torch.zeros_like(v)
    real = mask[:, None, :, None].to(q.dtype)
    k, v = k * real, v * real
    state = q.new_zeros(q.shape[0], q.shape[1], q.shape[-1], v.shape[-1])  # (B, H, d, e)
    weight = q.new_zeros(q.shape[0], q.shape[1], 1, 1)  # (B, H, 1, 1): sum of decays over real keys so far
    g = gamma[None, :, None, None].to(q.dtype)
    for i in range(q.shape[2]):
        state = g * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        weight = g * weight + real[:, :, i, None]
        read = (q[:, :, i, None, :] * q.shape[-1] ** -0.5) @ state  # (B, H, 1, e)
        out[:, :, i] = (read / weight.clamp_min(1.0).sqrt())[:, :, 0] * real[:, :, i]
    return out


def _dense_bidirectional(q, k, v, gamma, mask):
    index = torch.arange(q.shape[2])
    decay = gamma[:, None, None].double() ** (index[:, None] - index[None, :]).abs()  # (H, N, N)
    allowed = (mask[:, None, None, :] & mask[:, None, :, None]).double()  # (B, 1, N, N)
    weights = decay * allowed  # (B, H, N, N)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 * weights
    return (scores @ v) / weights.sum(-1, keepdim=True).clamp_min(1.0).sqrt()


def _inputs():
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, :4] = False  # left padding
    mask[1, -3:] = False  # right padding
    return q, k, v, mask


@pytest.mark.parametrize("chunk", [1, 4, 5, 32])
def test_chunks_equal_the_recurrence_in_values_and_gradients(chunk):
    q, k, v, mask = _inputs()
    gamma = retention_decays(H)
    got = retention_attention(q, k, v, gamma=gamma, causal=True, key_padding_mask=mask, chunk_size=chunk)
    want = _recurrence(q, k, v, gamma, mask)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, (q, k, v), grad)
    want_grads = torch.autograd.grad(want, (q, k, v), grad)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [4, 32])
def test_bidirectional_equals_the_dense_symmetric_decay(chunk):
    q, k, v, mask = _inputs()
    gamma = retention_decays(H)
    got = retention_attention(q, k, v, gamma=gamma, causal=False, key_padding_mask=mask, chunk_size=chunk)
    want = _dense_bidirectional(q, k, v, gamma, mask) * mask[:, None, :, None]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_gradcheck_in_fp64():
    q, k, v, mask = _inputs()
    gamma = retention_decays(H)
    for causal in (True, False):
        assert torch.autograd.gradcheck(
            lambda a, b, c, causal=causal: retention_attention(
                a, b, c, gamma=gamma, causal=causal, key_padding_mask=mask, chunk_size=4
            ),
            (q, k, v),
        )


def test_decays_span_short_to_long_memory():
    gamma = retention_decays(8)
    assert gamma[0].item() == pytest.approx(1 - 1 / 32) and gamma[-1].item() == pytest.approx(1 - 1 / 4096)
    assert (gamma[1:] > gamma[:-1]).all() and retention_decays(1).item() == pytest.approx(1 - 1 / 32)
