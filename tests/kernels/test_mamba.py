"""The selective scan (kernels/mamba.py) against the closed form of its recurrence,
h_t = sum_{b <= t} (prod_{b < j <= t} exp(delta_j A)) delta_b B_b x_b: values and fp64 gradients, causal and
bidirectional, with padding on either side; the step stays positive and the state bounded."""

import sys

import pytest
import torch
from kernel_inputs import install_stand_in

from models.attention import build_attention
from models.attention.kernels.common import import_error
from models.attention.kernels.mamba import causal_depthwise_conv, mamba_parameters, selective_scan

B, N, E, S = 2, 11, 3, 4


def _closed_form(x, delta, a_log, b, c, mask, causal):
    """Every (t, b) pair spelt out: the decay between them as a product, no recurrence."""
    a = -torch.exp(a_log)  # (E, S)
    real = mask.to(x.dtype)
    y = torch.zeros_like(x)
    for row in range(x.shape[0]):
        for t in range(x.shape[1]):
            sources = range(x.shape[1]) if not causal else range(t + 1)
            for s in sources:
                between = range(s + 1, t + 1) if s <= t else range(t, s)  # steps the state decays over
                decay = torch.ones_like(a)
                for j in between:
                    if mask[row, j]:
                        decay = decay * torch.exp(delta[row, j, :, None] * a)
                drive = delta[row, s, :, None] * b[row, s] * x[row, s, :, None] * real[row, s]  # (E, S)
                y[row, t] = y[row, t] + (decay * drive) @ c[row, t]
    return y * real[..., None]


def _inputs():
    torch.manual_seed(0)
    x = torch.randn(B, N, E, dtype=torch.float64, requires_grad=True)
    delta = torch.nn.functional.softplus(torch.randn(B, N, E, dtype=torch.float64)).requires_grad_(True)
    a_log, _ = mamba_parameters(E, S, 1)
    a_log = a_log.double().requires_grad_(True)
    b = torch.randn(B, N, S, dtype=torch.float64, requires_grad=True)
    c = torch.randn(B, N, S, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, :3] = False  # left padding
    mask[1, -2:] = False  # right padding
    return x, delta, a_log, b, c, mask


@pytest.mark.parametrize("causal", [True, False])
def test_scan_equals_the_closed_form_in_values_and_gradients(causal):
    x, delta, a_log, b, c, mask = _inputs()
    got = selective_scan(x, delta, a_log, b, c, causal=causal, padding_mask=mask)
    want = _closed_form(x, delta, a_log, b, c, mask, causal)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    weights = torch.randn(B, N, E, dtype=torch.float64)
    inputs = (x, delta, a_log, b, c)
    for g, w in zip(torch.autograd.grad((got * weights).sum(), inputs),
                    torch.autograd.grad((want * weights).sum(), inputs), strict=True):  # fmt: skip
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_the_hand_written_backward_passes_gradcheck():
    """The scan's forward and backward are written by hand (no autograd inside): fp64 finite differences agree."""
    from models.attention.kernels.mamba import _SelectiveScan

    torch.manual_seed(1)
    dx, delta = torch.randn(2, 5, 3, dtype=torch.float64), torch.rand(2, 5, 3, dtype=torch.float64)
    delta[0, 1] = 0.0  # a padded position's zero step
    a = -torch.rand(3, 4, dtype=torch.float64) - 0.1
    b, c = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 4, dtype=torch.float64)
    inputs = tuple(t.requires_grad_(True) for t in (dx, delta, a, b, c))
    assert torch.autograd.gradcheck(_SelectiveScan.apply, inputs)


def test_a_strong_decay_over_a_long_chunk_stays_finite():
    """A decay of exp(-200) per position: the state forgets at once, nothing overflows or turns NaN."""
    x = torch.ones(1, 64, 2)
    delta = torch.full((1, 64, 2), 50.0)
    a_log, _ = mamba_parameters(2, 4, 1)
    b = c = torch.ones(1, 64, 4)
    y = selective_scan(x, delta, a_log, b, c)
    assert torch.isfinite(y).all() and torch.allclose(y, torch.full_like(y, 4 * 50.0))  # only the current drive


def test_the_convolution_sees_only_the_past():
    x = torch.randn(1, 9, 2)
    weight, bias = torch.randn(2, 1, 4), torch.zeros(2)
    changed = x.clone()
    changed[:, 5:] += 1.0
    before = causal_depthwise_conv(x, weight, bias)
    after = causal_depthwise_conv(changed, weight, bias)
    torch.testing.assert_close(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_the_step_starts_in_range_and_a_long_input_keeps_a_bounded_state():
    a_log, dt_bias = mamba_parameters(512, 16, 4)
    step = torch.nn.functional.softplus(dt_bias)
    assert step.min() >= 1e-3 * 0.99 and step.max() <= 0.1 * 1.01
    torch.testing.assert_close(-torch.exp(a_log[0]), -torch.arange(1.0, 17.0))  # S4D-real: A = -(1..S)
    layer = build_attention("mamba", 32, 2, causal=True)
    with torch.no_grad():
        out = layer(torch.ones(1, 4096, 32))
    assert torch.isfinite(out).all() and out.abs().max() < 1e3


def _stand_in_selective_scan_fn(calls: list):
    """mamba-ssm's selective_scan_fn from its documented contract: u, delta (B, E, L), A (E, S), B and C (B, S, L);
    with no D, z, delta_bias or softplus, h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t and out_t = C_t . h_t,
    returned as (B, E, L)."""

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **_):
        calls.append({"u": tuple(u.shape), "B": tuple(B.shape), "extras": (D, z, delta_bias, delta_softplus)})
        state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (B, E, S)
        out = []
        for t in range(u.shape[2]):
            drive = (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]  # (B, E, S)
            state = torch.exp(delta[:, :, t, None] * A) * state + drive
            out.append((state * C[:, None, :, t]).sum(-1))  # (B, E)
        return torch.stack(out, dim=-1)  # (B, E, L)

    return selective_scan_fn


@pytest.fixture
def mamba_ssm_on_cpu(monkeypatch):
    """The mamba-ssm path runnable here: a stand-in module, CPU tensors accepted, the import probe re-asked."""
    from models.attention.kernels import mamba as kernel

    calls = []
    install_stand_in(monkeypatch, "mamba_ssm.ops.selective_scan_interface",
                     selective_scan_fn=_stand_in_selective_scan_fn(calls))  # fmt: skip
    monkeypatch.setattr(kernel.MAMBA_SSM, "device_types", ("cpu",))
    import_error.cache_clear()
    yield calls
    import_error.cache_clear()


@pytest.mark.parametrize("causal", [True, False])
def test_the_mamba_ssm_backend_computes_the_same_scan(mamba_ssm_on_cpu, causal):
    """The real kernel needs CUDA; the mapping (layout, padding as a zero step, the bidirectional sum) is checked
    against the closed form with a stand-in, in values and gradients."""
    x, delta, a_log, b, c, mask = _inputs()
    got = selective_scan(x, delta, a_log, b, c, causal=causal, padding_mask=mask, backend="mamba-ssm")
    want = _closed_form(x, delta, a_log, b, c, mask, causal)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    weights = torch.randn(B, N, E, dtype=torch.float64)
    inputs = (x, delta, a_log, b, c)
    for g, w in zip(torch.autograd.grad((got * weights).sum(), inputs),
                    torch.autograd.grad((want * weights).sum(), inputs), strict=True):  # fmt: skip
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)
    assert mamba_ssm_on_cpu[0] == {"u": (B, E, N), "B": (B, S, N), "extras": (None, None, None, False)}
    assert len(mamba_ssm_on_cpu) == (1 if causal else 2)


def test_auto_takes_mamba_ssm_where_it_imports_and_the_layer_records_it(mamba_ssm_on_cpu):
    layer = build_attention("mamba", 16, 2, causal=True)
    assert type(layer).backend_for({}, "cpu") == "mamba-ssm"
    assert type(layer).backend_for({"backend": "torch"}, "cpu") == "torch"
    x, mask = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    mask[0, :2] = False
    fused = layer(x, mask)
    layer.backend = "torch"
    torch.testing.assert_close(fused, layer(x, mask), rtol=1e-5, atol=1e-6)


def test_auto_stays_on_torch_without_the_package_and_the_named_backend_says_why(monkeypatch):
    from models.attention.kernels import mamba as kernel

    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # import fails, as where it is not installed
    monkeypatch.setattr(kernel.MAMBA_SSM, "device_types", ("cpu",))
    import_error.cache_clear()
    try:
        x, delta, a_log, b, c, _ = _inputs()
        from models.attention.kernels.scan_cpp import extension_error

        assert kernel.resolve_mamba_backend("auto", x) == ("cpp" if extension_error() is None else "torch")
        assert kernel.resolve_mamba_backend("auto", x.to("meta")) == "torch"  # neither package nor a CPU tensor
        with pytest.raises(ImportError, match="pip install mamba-ssm"):
            selective_scan(x, delta, a_log, b, c, backend="mamba-ssm")
    finally:
        import_error.cache_clear()


def test_the_mamba_ssm_backend_refuses_cpu_tensors_and_unknown_backends():
    x, delta, a_log, b, c, _ = _inputs()
    with pytest.raises(ValueError, match="backend='mamba-ssm' runs on cuda tensors only"):
        selective_scan(x, delta, a_log, b, c, backend="mamba-ssm")
    with pytest.raises(ValueError, match="unknown backend 'triton'"):
        selective_scan(x, delta, a_log, b, c, backend="triton")
    with pytest.raises(ValueError, match="unknown backend 'triton'"):
        build_attention("mamba", 16, 2, backend="triton")


def _mamba_ssm_on_cuda() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("mamba_ssm") is not None


@pytest.mark.skipif(not _mamba_ssm_on_cuda(), reason="needs CUDA and mamba-ssm")
@pytest.mark.parametrize("causal", [True, False])
def test_mamba_ssm_on_cuda_matches_the_torch_scan(causal):
    x, delta, a_log, b, c, mask = (t.detach().float().cuda() for t in _inputs())
    got = selective_scan(x, delta, a_log, b, c, causal=causal, padding_mask=mask, backend="mamba-ssm")
    want = selective_scan(x, delta, a_log, b, c, causal=causal, padding_mask=mask, backend="torch")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
