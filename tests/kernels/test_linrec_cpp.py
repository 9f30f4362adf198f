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
def test_values_and_fp64_gradients_match_the_dense_reference(causal):
    q, k, v, real = (t.double() if t.is_floating_point() else t for t in _inputs())
    for t in (q, k, v):
        t.requires_grad_(True)
    weights = torch.randn(B, H, N, D, dtype=torch.float64)
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
def test_float32_matches_the_pytorch_path(causal):
    q, k, v, real = _inputs()
    for t in (q, k, v):
        t.requires_grad_(True)
    outs = [fn.linrec_attention(q, k, v, causal=causal, key_padding_mask=real, backend=b) for b in ("torch", "cpp")]
    _close(outs[1], outs[0], rtol=1e-5)
    grads = [torch.autograd.grad(out.sum(), (q, k, v)) for out in outs]
    for g, e in zip(grads[1], grads[0], strict=True):
        _close(g, e, rtol=1e-4)


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


def test_what_it_does_not_implement_is_refused_clearly():
    with pytest.raises(UnsupportedAttentionConfig, match="paper form only"):
        build_attention("linrec", 16, 2, causal=True, recompute_heads=1, backend="cpp")
    with pytest.raises(UnsupportedAttentionConfig, match="paper form only"):
        build_attention("linrec", 16, 2, causal=True, variant="official", backend="cpp")
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="float32/float64"):
        fn.linrec_attention(q.half(), k.half(), v.half(), causal=True, backend="cpp")
