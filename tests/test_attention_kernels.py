"""Kernels against direct dense transcriptions of the formulas (fp32, rtol 1e-4)."""

import dense_reference as dense
import pytest
import torch

import models.attention.kernels.causal  # noqa: F401  (patched below as kernels.causal)
from models.attention import functional as fn
from models.attention import kernels

B, H, N, D = 2, 2, 13, 8


def _inputs(dtype=torch.float32):
    q, k, v = (torch.randn(B, H, N, D, dtype=dtype) for _ in range(3))
    real = torch.ones(B, N, dtype=torch.bool)
    real[0, :4] = False  # left padding (SASRec style)
    real[1, -3:] = False  # right padding (RecBole / BERT4Rec style)
    return q, k, v, real


def _close(actual, expected, rtol=1e-4):
    scale = expected.abs().max().clamp_min(1e-6)
    err = ((actual - expected).abs().max() / scale).item()
    assert err < rtol, f"relative error {err:.2e} >= {rtol}"


PAIRS = {
    "softmax": (lambda q, k, v, c, m, cs: fn.softmax_attention(q, k, v, causal=c, key_padding_mask=m), dense.softmax),
    "sdpa": (lambda q, k, v, c, m, cs: fn.sdpa_attention(q, k, v, causal=c, key_padding_mask=m), dense.softmax),
    "linrec-paper": (
        lambda q, k, v, c, m, cs: fn.linrec_attention(q, k, v, causal=c, key_padding_mask=m, chunk_size=cs),
        dense.linrec_paper,
    ),
    "linrec-official": (
        lambda q, k, v, c, m, cs: fn.linrec_attention(
            q, k, v, causal=c, variant="official", key_padding_mask=m, chunk_size=cs
        ),
        dense.linrec_official,
    ),
    "linear": (
        lambda q, k, v, c, m, cs: fn.linear_attention(q, k, v, causal=c, key_padding_mask=m, chunk_size=cs),
        dense.linear,
    ),
    "efficient": (
        lambda q, k, v, c, m, cs: fn.efficient_attention(q, k, v, causal=c, key_padding_mask=m, chunk_size=cs),
        dense.efficient,
    ),
}


@pytest.mark.parametrize("chunk_size", [4, 64])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_kernel_matches_dense_reference(name, causal, padded, chunk_size):
    kernel, reference = PAIRS[name]
    q, k, v, real = _inputs()
    mask = real if padded else None
    _close(kernel(q, k, v, causal, mask, chunk_size), reference(q, k, v, causal, mask))


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


@pytest.mark.parametrize("padded", [False, True])
def test_linformer_kernel_matches_dense_reference(padded):
    q, k, v, real = _inputs()
    mask = real if padded else None
    e_proj, f_proj = torch.randn(5, 20), torch.randn(5, 20)
    _close(
        fn.linformer_attention(q, k, v, e_proj, f_proj, key_padding_mask=mask),
        dense.linformer(q, k, v, e_proj, f_proj, mask),
    )


def test_causal_paper_linrec_at_last_real_position_equals_bidirectional():
    q, k, v, real = _inputs()
    causal = fn.linrec_attention(q, k, v, causal=True, key_padding_mask=real, chunk_size=4)
    bidirectional = fn.linrec_attention(q, k, v, causal=False, key_padding_mask=real)
    last = [int(torch.nonzero(r).max()) for r in real]
    for b, i in enumerate(last):
        _close(causal[b, :, i], bidirectional[b, :, i])
    # ...and only there: at earlier positions the prefix statistics differ
    assert (causal[1, :, 2] - bidirectional[1, :, 2]).abs().max() > 1e-3


def test_paper_and_official_variants_differ():
    q, k, v, _ = _inputs()
    paper = fn.linrec_attention(q, k, v, variant="paper")
    official = fn.linrec_attention(q, k, v, variant="official")
    assert (paper - official).abs().max() > 1e-3


def test_dense_check_bites_on_a_wrong_formula():
    """The reference comparison must fail if the kernel drops LinRec's sqrt(N) column factor."""
    q, k, v, _ = _inputs()
    wrong = fn.linrec_attention(q, k, v) * N**0.5
    with pytest.raises(AssertionError):
        _close(wrong, dense.linrec_paper(q, k, v))


def test_causal_linear_core_matches_masked_product_across_many_chunks():
    q, k, v = (torch.randn(1, 1, 256, 16) for _ in range(3))
    out = fn.causal_linear_attention(q, k, v, chunk_size=64)
    full = torch.tril(q @ k.transpose(-1, -2)) @ v
    _close(out, full)


def test_bad_inputs_are_named():
    q, k, v, real = _inputs()
    with pytest.raises(ValueError, match="variant"):
        fn.linrec_attention(q, k, v, variant="nope")
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        fn.linrec_attention(q, k, v, key_padding_mask=real[:, :5])
    with pytest.raises(TypeError, match="bool"):
        fn.linrec_attention(q, k, v, key_padding_mask=real.float())
    with pytest.raises(ValueError, match=r"\(B, H, N, d\)"):
        fn.linrec_attention(q[0], k, v)


@pytest.mark.parametrize("padded", [False, True])
def test_efficient_causal_stays_exact_with_extreme_keys(padded):
    """Keys jumping by far more than exp() can hold take the stable intra-chunk path."""
    q, k, v, real = _inputs()
    k = k * 40
    mask = real if padded else None
    out = fn.efficient_attention(q, k, v, causal=True, key_padding_mask=mask, chunk_size=4)
    assert torch.isfinite(out).all()
    _close(out, dense.efficient(q, k, v, True, mask))


@pytest.mark.parametrize("name", ["linrec-paper", "linrec-official", "linear", "efficient"])
def test_float64_inputs_stay_float64(name):
    kernel, _ = PAIRS[name]
    q, k, v, real = _inputs(torch.float64)
    out = kernel(q, k, v, True, real, 4)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


@pytest.mark.parametrize("length", [1, 7, 12])
def test_causal_linear_core_hand_written_backward_passes_gradcheck(length):
    q, k, v = (torch.randn(2, 2, length, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: fn.causal_linear_attention(q, k, v, chunk_size=4), (q, k, v))


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("causal", [False, True])
def test_linrec_gradients_match_the_dense_reference(variant, causal):
    q, k, v, real = (t.double() if t.is_floating_point() else t for t in _inputs())
    for t in (q, k, v):
        t.requires_grad_(True)
    weights = torch.randn(B, H, N, D, dtype=torch.float64)
    got = torch.autograd.grad(
        (
            fn.linrec_attention(q, k, v, causal=causal, variant=variant, key_padding_mask=real, chunk_size=4) * weights
        ).sum(),
        (q, k, v),
    )
    reference = dense.linrec_paper if variant == "paper" else dense.linrec_official
    expected = torch.autograd.grad((reference(q, k, v, causal, real) * weights).sum(), (q, k, v))
    for g, e in zip(got, expected, strict=False):
        _close(g, e, rtol=1e-8)


@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("causal", [False, True])
def test_blockwise_recompute_gives_the_same_output_and_gradients(variant, causal):
    q, k, v, real = (t.double() if t.is_floating_point() else t for t in _inputs())
    grads = []
    for recompute in (None, 1):
        inputs = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = fn.linrec_attention(
            *inputs, causal=causal, variant=variant, key_padding_mask=real, chunk_size=4, recompute_heads=recompute
        )
        grads.append((out, *torch.autograd.grad((out * torch.arange(D, dtype=out.dtype)).sum(), inputs)))
    for plain, blockwise in zip(*grads, strict=False):
        _close(blockwise, plain, rtol=1e-10)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize(
    "block_bytes", [1, 2 * N * D * 4, 1 << 30], ids=["one-head-blocks", "two-head-blocks", "one-block"]
)
def test_linrec_inference_path_matches_the_autograd_path(monkeypatch, padded, block_bytes):
    """Without autograd, bidirectional LinRec runs a cache-blocked path; it must give the same numbers."""
    monkeypatch.setattr(kernels.common, "CACHE_BLOCK_BYTES", block_bytes)
    q, k, v, real = _inputs()
    q_strided = torch.randn(B, N, H, D).transpose(1, 2)  # (B, H, N, d) view, as split from a projection
    mask = real if padded else None
    for query in (q, q_strided):
        with torch.no_grad():
            fast = fn.linrec_attention(query, k, v, key_padding_mask=mask)
        tracked = fn.linrec_attention(query, k, v.clone().requires_grad_(True), key_padding_mask=mask)
        assert tracked.grad_fn is not None  # the general path really ran
        _close(fast, tracked.detach(), rtol=1e-5)
        _close(fast, dense.linrec_paper(query, k, v, False, mask))


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


def _stand_in_fla(calls: list):
    """A stand-in for flash-linear-attention's chunk_linear_attn, written from its documented
    contract: q, k, v (B, T, H, K); normalize=False gives o_t = sum_{s <= t} scale (q_t . k_s) v_s."""
    import types

    def chunk_linear_attn(q, k, v, scale=None, normalize=True, **_):
        calls.append({"shape": tuple(q.shape), "scale": scale, "normalize": normalize})
        length = q.shape[1]
        scores = torch.einsum("bthk,bshk->bhts", q, k) * scale
        scores = scores * torch.ones(length, length).tril()
        return torch.einsum("bhts,bshv->bthv", scores, v), None

    module = types.ModuleType("fla.ops.linear_attn")
    module.chunk_linear_attn = chunk_linear_attn
    return module


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_fla_backend_maps_causal_linrec_onto_chunk_linear_attn(monkeypatch, variant):
    """The real kernel needs CUDA (scripts/gpu_job.sh); here the mapping (layout, scale 1, no
    normalisation, rescaled queries) is checked against the torch backend with a stand-in."""
    import sys
    import types

    calls = []
    for name, module in (
        ("fla", types.ModuleType("fla")),
        ("fla.ops", types.ModuleType("fla.ops")),
        ("fla.ops.linear_attn", _stand_in_fla(calls)),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(kernels.causal, "_FLA_DEVICE_TYPES", ("cpu",))
    q, k, v, real = _inputs()
    got = fn.linrec_attention(q, k, v, causal=True, variant=variant, key_padding_mask=real, backend="fla")
    _close(got, fn.linrec_attention(q, k, v, causal=True, variant=variant, key_padding_mask=real))
    assert calls == [{"shape": (B, N, H, D), "scale": 1.0, "normalize": False}]


def test_fla_backend_refuses_cpu_tensors_and_unknown_backends():
    q, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="backend='fla' runs on cuda tensors only"):
        fn.linrec_attention(q, k, v, causal=True, backend="fla")
    with pytest.raises(ValueError, match="unknown backend 'triton'"):
        fn.linrec_attention(q, k, v, causal=True, backend="triton")


def _fla_on_cuda() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("fla") is not None


@pytest.mark.skipif(not _fla_on_cuda(), reason="needs CUDA and flash-linear-attention")
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_fla_backend_on_cuda_matches_the_torch_backend(variant):
    q, k, v, real = (t.cuda() for t in _inputs())
    got = fn.linrec_attention(q, k, v, causal=True, variant=variant, key_padding_mask=real, backend="fla")
    _close(got, fn.linrec_attention(q, k, v, causal=True, variant=variant, key_padding_mask=real), rtol=1e-3)
