"""The fused C++ LinRec (kernels/linrec_cpp.py) against the dense reference and the PyTorch path."""

import dense_reference as dense
import pytest
import torch
from kernel_inputs import B, D, H, N, _close, _inputs

from models.attention import build_attention
from models.attention import functional as fn
from models.attention.base import UnsupportedAttentionConfig
from models.attention.kernels.linrec_cpp import extension_error


@pytest.fixture(scope="module", autouse=True)
def _built():
    error = extension_error()  # the first call compiles (a minute or two); later ones reuse the build
    if error:
        pytest.skip(f"the C++ extension cannot be built here: {error}")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("head_dims", [(D, D), (16, 16), (32, 32), (5, 7)], ids=lambda d: f"d{d[0]}e{d[1]}")
def test_values_and_fp64_gradients_match_the_dense_reference(causal, head_dims):
    """Sizes compiled in (8, 16, 32) and the runtime-size fallback (5 x 7)."""
    d, e = head_dims
    torch.manual_seed(d + e)
    q, k = (torch.randn(B, H, N, d, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(B, H, N, e, dtype=torch.float64, requires_grad=True)
    real = _inputs()[3]
    weights = torch.randn(B, H, N, e, dtype=torch.float64)
    out = fn.linrec_attention(q, k, v, causal=causal, key_padding_mask=real, backend="cpp")
    expected = dense.linrec_paper(q, k, v, causal, real)
    _close(out, expected, rtol=1e-10)
    got = torch.autograd.grad((out * weights).sum(), (q, k, v))
    wanted = torch.autograd.grad((expected * weights).sum(), (q, k, v))
    for g, e in zip(got, wanted, strict=True):
        _close(g, e, rtol=1e-8)


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_with_padding(causal):
    q, k, v = (torch.randn(2, 2, 9, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    real = torch.ones(2, 9, dtype=torch.bool)
    real[0, :3] = False
    assert torch.autograd.gradcheck(
        lambda a, b, c: fn.linrec_attention(a, b, c, causal=causal, key_padding_mask=real, backend="cpp"), (q, k, v)
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("head_dim", [D, 16, 20, 32], ids=lambda d: f"d{d}")
def test_float32_matches_the_pytorch_path(causal, head_dim):
    """float32 packs 16 columns per vector in the bidirectional blocks: 8 (no full vector), 16, 20 (one and a
    remainder) and 32; N = 13 is one full block of 8 positions and a partial one."""
    torch.manual_seed(head_dim)
    real = _inputs()[3]
    q, k, v = (torch.randn(B, H, N, head_dim, requires_grad=True) for _ in range(3))
    outs = [fn.linrec_attention(q, k, v, causal=causal, key_padding_mask=real, backend=b) for b in ("torch", "cpp")]
    _close(outs[1], outs[0], rtol=1e-5)
    grads = [torch.autograd.grad(out.sum(), (q, k, v)) for out in outs]
    for g, e in zip(grads[1], grads[0], strict=True):
        _close(g, e, rtol=1e-4)


def test_the_bidirectional_forward_keeps_its_key_state_for_the_backward_only():
    """The backward reads the forward's key state (B, H, d*e + d) instead of walking the keys again; a forward
    without gradients keeps nothing, and one input wanting a gradient is enough to keep it."""
    torch.manual_seed(3)
    real = _inputs()[3]
    q, k = (torch.randn(B, H, N, D, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, H, N, D, dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        out = fn.linrec_attention(q, k, v, causal=False, key_padding_mask=real, backend="cpp")
    assert (B, H, D * D + D) in saved
    with torch.no_grad():
        _close(fn.linrec_attention(q, k, v, causal=False, key_padding_mask=real, backend="cpp"), out, rtol=1e-12)
    (got,) = torch.autograd.grad(out.sum(), v)
    expected = fn.linrec_attention(q, k, v, causal=False, key_padding_mask=real, backend="torch")
    (wanted,) = torch.autograd.grad(expected.sum(), v)
    _close(got, wanted, rtol=1e-10)


def test_the_layer_is_causal_and_ignores_padding_content():
    torch.manual_seed(0)
    layer = build_attention("linrec", 16, 2, causal=True, backend="cpp").eval()
    x = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :5] = False
    changed = x.clone()
    changed[:, 8:] += 3.0  # the future
    changed[0, :5] = float("nan")  # what padding holds
    with torch.no_grad():
        a, b = layer(x, mask), layer(changed, mask)
    assert torch.allclose(a[:, :8][mask[:, :8]], b[:, :8][mask[:, :8]], atol=1e-6)
    assert torch.isfinite(b).all()


def test_the_bidirectional_layer_ignores_padding_content():
    torch.manual_seed(0)
    layer = build_attention("linrec", 16, 2, backend="cpp").eval()
    x = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, :5] = False
    changed = x.clone()
    changed[0, :5] = float("nan")
    with torch.no_grad():
        assert torch.allclose(layer(x, mask)[mask], layer(changed, mask)[mask], atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_the_packed_layer_path_matches_the_pytorch_layer(causal):
    """The layer hands its packed projection (B, N, 3, H, d) to the kernel and gets one packed gradient back."""
    torch.manual_seed(0)
    layers = [build_attention("linrec", 32, 2, causal=causal, backend=b).double() for b in ("torch", "cpp")]
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(3, 11, 32, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[0, :4] = False
    weights = torch.randn(3, 11, 32, dtype=torch.float64)
    outs, grads = [], []
    for layer in layers:
        out = layer(x, mask)
        outs.append(out)
        grads.append(torch.autograd.grad((out * weights).sum(), (x, *layer.parameters())))
    _close(outs[1], outs[0], rtol=1e-10)
    for got, want in zip(grads[1], grads[0], strict=True):
        _close(got, want, rtol=1e-8)


def test_auto_picks_the_fused_kernel_only_where_it_applies():
    q = torch.randn(2, 2, 5, 8)
    assert fn.resolve_linrec_backend("auto", q) == "cpp"
    assert fn.resolve_linrec_backend("auto", q.double()) == "cpp"
    assert fn.resolve_linrec_backend("auto", q.half()) == "torch"
    assert fn.resolve_linrec_backend("auto", q, variant="official") == "torch"
    assert fn.resolve_linrec_backend("auto", q, recompute_heads=1) == "torch"
    assert fn.resolve_linrec_backend("torch", q) == "torch"
    assert build_attention("linrec", 16, 2, compile=True).backend == "torch"  # what torch.compile traces


def test_what_it_does_not_implement_is_refused_clearly():
    with pytest.raises(UnsupportedAttentionConfig, match="paper form only"):
        build_attention("linrec", 16, 2, causal=True, recompute_heads=1, backend="cpp")
    with pytest.raises(UnsupportedAttentionConfig, match="paper form only"):
        build_attention("linrec", 16, 2, causal=True, variant="official", backend="cpp")
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="float32/float64"):
        fn.linrec_attention(q.half(), k.half(), v.half(), causal=True, backend="cpp")


def test_an_installed_build_is_used_only_when_it_matches_the_source(monkeypatch):
    """setup.py stamps the source's digest into the extension it compiles at install time: a build of this source
    is loaded instead of compiling one, a stale build (older source) is left alone."""
    import sys
    import types

    from models.attention.kernels import linrec_cpp

    installed = types.ModuleType("models.attention.kernels._linrec_cpu")
    monkeypatch.setitem(sys.modules, installed.__name__, installed)
    try:
        installed.source_digest = linrec_cpp.source_digest()
        kernel = linrec_cpp.KERNEL
        kernel.build.cache_clear()
        assert kernel.build() is installed
        installed.source_digest = "0" * 12
        kernel.build.cache_clear()
        assert kernel.build() is not installed and extension_error() is None  # built (or cached) from source
    finally:
        linrec_cpp.KERNEL.build.cache_clear()
