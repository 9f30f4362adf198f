"""Retention (kernels/retention.py) against the plain step-by-step recurrence S_i = gamma S_{i-1} + k_i v_i^T, values
and fp64 gradients; bidirectional against the dense gamma^|i - j| form."""

import pytest
import torch
from kernel_inputs import install_stand_in

from models.attention.kernels.common import import_error
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


def _stand_in_chunk_simple_gla(calls: list):
    """flash-linear-attention's chunk_simple_gla from its documented contract: q, k, v (B, T, H, K), g (B, T, H) a
    log decay per position and head; o_t = scale sum_{s <= t} exp(G_t - G_s) (q_t . k_s) v_s, G = cumsum(g)."""

    def chunk_simple_gla(q, k, v, g=None, scale=None, **_):
        calls.append({"shape": tuple(q.shape), "gate": tuple(g.shape), "scale": scale})
        total = g.cumsum(1)  # (B, T, H)
        decay = torch.exp(total[:, :, None, :] - total[:, None, :, :])  # (B, t, s, H)
        decay = decay * torch.ones(q.shape[1], q.shape[1], dtype=q.dtype).tril()[None, :, :, None]
        scores = torch.einsum("bthk,bshk->btsh", q, k) * scale * decay
        return torch.einsum("btsh,bshv->bthv", scores, v), None

    return chunk_simple_gla


@pytest.mark.parametrize("causal", [True, False])
def test_the_fla_backend_computes_the_same_retention(monkeypatch, causal):
    """The real kernel needs CUDA; the mapping (layout, the decay as a constant gate, scale 1) is checked against
    the torch path with a stand-in, padding on either side."""
    from models.attention.kernels import retention as kernel

    calls = []
    install_stand_in(monkeypatch, "fla.ops.simple_gla", chunk_simple_gla=_stand_in_chunk_simple_gla(calls))
    monkeypatch.setattr(kernel.FLA_SIMPLE_GLA, "device_types", ("cpu",))
    import_error.cache_clear()
    try:
        q, k, v, mask = _inputs()
        gamma = retention_decays(H)
        got = retention_attention(q, k, v, gamma=gamma, causal=causal, key_padding_mask=mask, backend="auto")
        want = retention_attention(q, k, v, gamma=gamma, causal=causal, key_padding_mask=mask, backend="torch")
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        assert calls[0] == {"shape": (B, N, H, D), "gate": (B, N, H), "scale": 1.0}
        assert len(calls) == (1 if causal else 2)
    finally:
        import_error.cache_clear()


def test_the_fla_backend_refuses_cpu_tensors_and_unknown_backends():
    q, k, v, _ = _inputs()
    gamma = retention_decays(H)
    with pytest.raises(ValueError, match="backend='fla' runs on cuda tensors only"):
        retention_attention(q, k, v, gamma=gamma, backend="fla")
    with pytest.raises(ValueError, match="unknown backend 'triton'"):
        retention_attention(q, k, v, gamma=gamma, backend="triton")


def _fla_on_cuda() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("fla") is not None


@pytest.mark.skipif(not _fla_on_cuda(), reason="needs CUDA and flash-linear-attention")
@pytest.mark.parametrize("causal", [True, False])
def test_fla_retention_on_cuda_matches_the_torch_path(causal):
    q, k, v, mask = (t.detach().float().cuda() for t in _inputs())
    gamma = retention_decays(H, device="cuda")
    got = retention_attention(q, k, v, gamma=gamma, causal=causal, key_padding_mask=mask, backend="fla")
    want = retention_attention(q, k, v, gamma=gamma, causal=causal, key_padding_mask=mask, backend="torch")
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)


def test_padding_inside_a_sequence_takes_the_general_normaliser():
    """A gap inside the real positions: the closed-form normaliser does not apply; the decayed pass gives r_i."""
    q, k, v, mask = _inputs()
    mask[0, 7:9] = False  # left padding and a gap
    gamma = retention_decays(H)
    got = retention_attention(q, k, v, gamma=gamma, causal=True, key_padding_mask=mask, chunk_size=4)
    torch.testing.assert_close(got, _recurrence(q, k, v, gamma, mask), rtol=1e-10, atol=1e-10)
    both = retention_attention(q, k, v, gamma=gamma, causal=False, key_padding_mask=mask, chunk_size=4)
    want = _dense_bidirectional(q, k, v, gamma, mask) * mask[:, None, :, None]
    torch.testing.assert_close(both, want, rtol=1e-10, atol=1e-10)


def test_a_long_sequence_stays_finite_and_exact_in_fp32():
    """Thousands of positions (hundreds of chunks): the states' decayed prefix must neither overflow nor drift."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 3000, 8) for _ in range(3))
    gamma = torch.tensor([0.5, 0.999])
    got = retention_attention(q, k, v, gamma=gamma, causal=True, chunk_size=16)
    ones = torch.ones(1, 3000, dtype=torch.bool)
    want = _recurrence(q.double(), k.double(), v.double(), gamma.double(), ones)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_the_decayed_prefix_equals_the_running_sum():
    from models.attention.kernels.retention import _decayed_prefix

    states = torch.randn(2, 3, 11, 2, 2, dtype=torch.float64)
    decay = torch.tensor([0.1, 0.7, 1.0], dtype=torch.float64)
    running, want = torch.zeros_like(states[:, :, 0]), []
    for t in range(11):
        running = decay[None, :, None, None] * running + states[:, :, t]
        want.append(running)
    torch.testing.assert_close(_decayed_prefix(states, decay), torch.stack(want, 2))
