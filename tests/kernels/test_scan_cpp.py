"""The fused C++ scans and the causal attention walks (kernels/scan_cpp.py: Efficient Attention, linear attention,
Performer, retention) against the PyTorch paths they replace on a CPU: values and fp64 gradients, causal and
bidirectional, padding on either side and inside, lengths across the kept-state chunks, every channel block; and the
layers record which scan ran."""

import pytest
import torch

from models.attention import build_attention
from models.attention.kernels import scan_cpp
from models.attention.kernels.lru import lru_parameters, lru_scan
from models.attention.kernels.mamba import _SelectiveScan, mamba_parameters, selective_scan

pytestmark = pytest.mark.skipif(scan_cpp.extension_error() is not None, reason="the C++ scans could not be built here")


def _close(got, want, tol):
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def _grads(out, inputs, seed=0):
    torch.manual_seed(seed)
    grad = torch.randn(out.shape, dtype=out.dtype)  # not randn_like: a walk's output is a (B, N, H, e) tensor's view
    return torch.autograd.grad(out, inputs, grad)


def _lru_inputs(batch=3, length=70, channels=70):
    torch.manual_seed(0)
    u = torch.randn(batch, length, channels, dtype=torch.complex128, requires_grad=True)
    nu_log, theta_log = (t.double().requires_grad_() for t in lru_parameters(channels))
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, :9] = False  # left padding
    mask[1, -5:] = False  # right padding
    return u, nu_log, theta_log, mask


@pytest.mark.parametrize("causal", [True, False])
def test_lru_scan_equals_the_chunked_scan_in_values_and_fp64_gradients(causal):
    u, nu_log, theta_log, mask = _lru_inputs()
    kwargs = {"causal": causal, "padding_mask": mask}
    got = lru_scan(u, nu_log, theta_log, backend="cpp", **kwargs)
    want = lru_scan(u, nu_log, theta_log, backend="torch", chunk_size=16, **kwargs)
    _close(got, want, 1e-10)
    inputs = (u, nu_log, theta_log)
    for a, b in zip(_grads(got.real + got.imag, inputs), _grads(want.real + want.imag, inputs), strict=True):
        _close(a, b, 1e-9)


def test_lru_scan_passes_gradcheck():
    u, nu_log, theta_log, _ = _lru_inputs(batch=2, length=9, channels=3)
    lam = torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log))).detach().requires_grad_()
    assert torch.autograd.gradcheck(scan_cpp.lru_scan_cpp, (u, lam))


def test_lru_scan_in_fp32_matches_fp64():
    u, nu_log, theta_log, mask = _lru_inputs(length=500)
    want = lru_scan(u, nu_log, theta_log, padding_mask=mask, backend="cpp")
    got = lru_scan(u.detach().to(torch.complex64), nu_log.float(), theta_log.float(), padding_mask=mask, backend="cpp")
    _close(got.to(torch.complex128), want.detach(), 1e-4)


def _mamba_inputs(batch=2, length=150, channels=19, states=5, dtype=torch.float64):
    torch.manual_seed(1)
    dx = torch.randn(batch, length, channels, dtype=dtype, requires_grad=True)
    delta = (torch.rand(batch, length, channels, dtype=dtype) * 0.5).requires_grad_()
    a_log, _ = mamba_parameters(channels, states, 2)
    a = (-torch.exp(a_log.to(dtype))).requires_grad_()
    b, c = (torch.randn(batch, length, states, dtype=dtype, requires_grad=True) for _ in range(2))
    return dx, delta, a, b, c


@pytest.mark.parametrize("length", [1, 63, 64, 65, 150])
def test_selective_scan_equals_the_step_by_step_scan_in_values_and_fp64_gradients(length):
    """Lengths on both sides of the 64-position chunks whose entering states the forward keeps."""
    inputs = _mamba_inputs(length=length)
    got, want = scan_cpp.selective_scan_cpp(*inputs), _SelectiveScan.apply(*inputs)
    _close(got, want, 1e-10)
    for a, b in zip(_grads(got, inputs), _grads(want, inputs), strict=True):
        _close(a, b, 1e-9)


def test_selective_scan_passes_gradcheck():
    inputs = _mamba_inputs(batch=2, length=7, channels=3, states=2)
    assert torch.autograd.gradcheck(scan_cpp.selective_scan_cpp, inputs)


def test_a_strong_decay_over_a_long_sequence_stays_finite_in_fp32():
    """exp(delta A) far below float's range (the kernel's own exp returns 0 there) and the float path's accuracy."""
    dx, delta, a, b, c = _mamba_inputs(length=300, dtype=torch.float64)
    delta = delta.detach() * 200  # decays down to exp(-1600)
    want = _SelectiveScan.apply(dx.detach(), delta, a.detach(), b.detach(), c.detach())
    got = scan_cpp.selective_scan_cpp(*(t.detach().float() for t in (dx, delta, a, b, c)))
    assert torch.isfinite(got).all()
    _close(got.double(), want, 1e-4)


@pytest.mark.parametrize("causal", [True, False])
def test_selective_scan_with_padding_matches_the_torch_backend(causal):
    torch.manual_seed(2)
    x, delta = torch.randn(2, 40, 6, dtype=torch.float64), torch.rand(2, 40, 6, dtype=torch.float64)
    a_log, _ = mamba_parameters(6, 4, 1)
    b, c = torch.randn(2, 40, 4, dtype=torch.float64), torch.randn(2, 40, 4, dtype=torch.float64)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[0, :7], mask[1, -3:] = False, False
    args = (x, delta, a_log.double(), b, c)
    got = selective_scan(*args, causal=causal, padding_mask=mask, backend="cpp")
    _close(got, selective_scan(*args, causal=causal, padding_mask=mask, backend="torch"), 1e-10)


@pytest.mark.parametrize("name", ["lru", "mamba"])
def test_layers_take_the_fused_scan_on_cpu_and_equal_the_torch_path(name):
    torch.manual_seed(3)
    layer = build_attention(name, 32, 2, causal=True)
    assert type(layer).backend_for({}, "cpu") == "cpp"
    assert type(layer).backend_for({"backend": "torch"}, "cpu") == "torch"
    x = torch.randn(2, 30, 32)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[0, :5] = False
    fused = layer(x, mask)
    layer.backend = "torch"
    _close(fused, layer(x, mask), 1e-5)


def test_a_named_cpp_scan_on_another_device_is_refused_in_one_line():
    with pytest.raises(ValueError, match="backend='cpp' runs on CPU float32/float64"):
        scan_cpp.resolve_scan_backend("lru", "cpp", torch.empty(0, device="meta"))
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        build_attention("lru", 32, 2, causal=True, backend="cuda")


def _walk_inputs(batch=3, heads=2, length=70, width=5, scale=3.0, dtype=torch.float64):
    torch.manual_seed(4)
    q, k = (torch.randn(batch, heads, length, width, dtype=dtype) * scale for _ in range(2))
    v = torch.randn(batch, heads, length, width + 2, dtype=dtype)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, :9] = False  # left padding
    mask[1, -5:] = False  # right padding
    mask[2, 20:23] = False  # a hole
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), mask


def _walk(name):
    """(the functional with its backend argument, the C++ walk on raw q, k, v and a mask) of a causal mechanism"""
    from models.attention.functional import efficient_attention, linear_attention, performer_attention
    from models.attention.kernels.retention import retention_attention

    if name == "efficient":
        return efficient_attention, lambda q, k, v, mask: scan_cpp.causal_efficient_cpp(q, k, v, mask)
    if name == "performer":

        def projection(like):  # (m, d): m != d, as the layer's 64 features of d = 32
            generator = torch.Generator().manual_seed(8)
            return torch.randn(7, like.shape[-1], dtype=torch.float64, generator=generator).to(like.dtype)

        def performer_walk(q, k, v, mask):
            return scan_cpp.causal_performer_cpp(q, k, v, mask, projection(q), 1e-15)

        return lambda q, k, v, **kw: performer_attention(q, k, v, projection(q), **kw), performer_walk
    if name == "retention":
        gamma = torch.tensor([0.9, 0.5], dtype=torch.float64)  # fast decays: the early keys' weights vanish in 70 steps

        def retention(q, k, v, **kw):
            return retention_attention(q, k, v, gamma=gamma[: q.shape[1]], **kw)

        return retention, lambda q, k, v, mask: scan_cpp.causal_retention_cpp(q, k, v, mask, gamma[: q.shape[1]])
    return linear_attention, lambda q, k, v, mask: scan_cpp.causal_linear_cpp(q, k, v, mask, 1e-6)


WALKS = ["efficient", "linear", "performer", "retention"]


@pytest.mark.parametrize("name", WALKS)
@pytest.mark.parametrize(("length", "scale"), [(1, 3.0), (70, 3.0), (70, 40.0)])
def test_causal_walks_equal_the_chunked_paths_in_values_and_fp64_gradients(name, length, scale):
    """Padding on either side and a hole; inputs 40x wider than exp's float range (the efficient walk's exponents are
    <= 0; linear attention's features e^x vanish there, and its normaliser meets the eps clamp)."""
    functional, _ = _walk(name)
    q, k, v, mask = _walk_inputs(length=length, scale=scale)
    kwargs = {"causal": True, "key_padding_mask": mask if length > 23 else None}
    got = functional(q, k, v, backend="cpp", **kwargs)
    want = functional(q, k, v, backend="torch", chunk_size=8, **kwargs)
    _close(got, want, 1e-10)
    for a, b in zip(_grads(got, (q, k, v)), _grads(want, (q, k, v)), strict=True):
        _close(a, b, 1e-9)


@pytest.mark.parametrize("name", WALKS)
def test_causal_walks_pass_gradcheck_and_give_padded_rows_zero(name):
    _, walk = _walk(name)
    q, k, v, mask = _walk_inputs(batch=3, heads=1, length=8, width=2)
    mask[2] = False  # a row with no real position
    assert torch.autograd.gradcheck(lambda q, k, v: walk(q, k, v, mask), (q, k, v))
    out = walk(q, k, v, mask)
    assert (out[2] == 0).all() and (out[0][:, ~mask[0]] == 0).all()


@pytest.mark.parametrize("name", WALKS)
def test_causal_walks_in_fp32_match_fp64_over_a_long_sequence(name):
    _, walk = _walk(name)
    q, k, v, mask = (t.detach() for t in _walk_inputs(length=600, scale=10.0))
    want = walk(q, k, v, mask)
    got = walk(q.float(), k.float(), v.float(), mask)
    size = want.abs().amax()  # retention's rows are not normalised: its errors scale with its outputs (~1e2 here)
    _close(got.double() / size, want / size, 1e-5)


@pytest.mark.parametrize("name", WALKS)
def test_causal_walks_read_views_of_a_packed_projection_as_they_read_contiguous_tensors(name):
    _, walk = _walk(name)
    torch.manual_seed(6)
    packed = torch.randn(2, 25, 3, 2, 4, dtype=torch.float64)  # (B, N, 3, H, d): what a layer's projection gives
    views = [part.transpose(1, 2).requires_grad_() for part in packed.unbind(2)]  # (B, H, N, d), strided leaves
    assert not any(t.is_contiguous() for t in views)
    copies = [t.detach().contiguous().requires_grad_() for t in views]
    mask = torch.ones(2, 25, dtype=torch.bool)
    mask[1, :6] = False
    got, want = walk(*views, mask), walk(*copies, mask)
    _close(got, want, 1e-12)
    grad = torch.randn(2, 25, 2, 4, dtype=torch.float64).transpose(1, 2)  # a strided gradient too
    for x, y in zip(torch.autograd.grad(got, views, grad), torch.autograd.grad(want, copies, grad), strict=True):
        _close(x, y, 1e-12)


@pytest.mark.parametrize("name", WALKS)
def test_layers_hand_the_walk_their_packed_projection_and_get_its_gradient_packed(name):
    """The layer's walk reads the (B, N, 3, H, d) projection and writes its gradient as one tensor of that layout:
    output and every fp64 gradient (input, projections) equal the chunked per-head path's, padding included."""
    torch.manual_seed(9)
    fused = build_attention(name, 16, 2, causal=True, backend="cpp").double().eval()  # eval: no feature redraw
    chunked = build_attention(name, 16, 2, causal=True, backend="torch").double().eval()
    chunked.load_state_dict(fused.state_dict())
    x = torch.randn(3, 40, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[0, :7], mask[2, 30:] = False, False
    qkv = fused.qkv(x).view(3, 40, 3, 2, 8)  # (B, N, 3, H, d)
    packed = fused.walk_packed(qkv, mask)
    assert packed is not None and packed.transpose(1, 2).is_contiguous()  # (B, N, H, d) as the output projection reads
    outputs = [layer(x, mask) for layer in (fused, chunked)]
    _close(*outputs, 1e-12)
    grad = torch.randn(3, 40, 16, dtype=torch.float64)
    got, want = (
        torch.autograd.grad(out, [x, *layer.parameters()], grad)
        for out, layer in zip(outputs, (fused, chunked), strict=True)
    )
    for a, b in zip(got, want, strict=True):
        _close(a, b, 1e-10)


@pytest.mark.parametrize("name", WALKS)
def test_layers_take_the_walk_for_their_causal_form_only(name):
    torch.manual_seed(5)
    causal, bidirectional = (build_attention(name, 32, 2, causal=c) for c in (True, False))
    assert causal.backend_in_use == "cpp" and bidirectional.backend_in_use == "torch"
    x, mask = torch.randn(2, 30, 32), torch.ones(2, 30, dtype=torch.bool)
    mask[0, :5] = False
    fused = causal(x, mask)
    causal.backend = "torch"
    _close(fused, causal(x, mask), 1e-5)
    with pytest.raises(ValueError, match="backend='cpp' is the causal form's walk"):
        build_attention(name, 32, 2, causal=False, backend="cpp")
    with pytest.raises(ValueError, match="unknown backend 'walk'; expected one of auto, torch, cpp"):
        build_attention(name, 32, 2, causal=True, backend="walk")


def test_without_the_extension_auto_falls_back_and_names_the_scan_or_walk(monkeypatch):
    monkeypatch.setattr(scan_cpp, "extension_error", lambda: "no C++ compiler")
    with pytest.warns(UserWarning, match=r"^linear: the fused C\+\+ walk is unavailable \(no C\+\+ compiler\)"):
        assert scan_cpp.resolve_walk_backend("linear", "auto", torch.empty(0), causal=True) == "torch"
    with pytest.warns(UserWarning, match=r"^lru: the fused C\+\+ scan is unavailable"):
        assert scan_cpp.resolve_scan_backend("lru", "auto", torch.empty(0)) == "torch"
    with pytest.raises(RuntimeError, match="retention: backend='cpp' is unavailable here"):
        build_attention("retention", 32, 2, causal=True, backend="cpp")
