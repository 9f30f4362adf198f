"""LinRec kernels (models/attention/kernels/linrec.py): variants, gradients, recompute, inference path, fla backend."""

import dense_reference as dense
import pytest
import torch
from kernel_inputs import B, D, H, N, _close, _inputs, install_stand_in

import models.attention.kernels.causal  # noqa: F401  (patched as kernels.causal)
from models.attention import functional as fn
from models.attention import kernels


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


def _stand_in_chunk_linear_attn(calls: list):
    """flash-linear-attention's chunk_linear_attn from its documented contract: q, k, v (B, T, H, K);
    normalize=False gives o_t = sum_{s <= t} scale (q_t . k_s) v_s."""

    def chunk_linear_attn(q, k, v, scale=None, normalize=True, **_):
        calls.append({"shape": tuple(q.shape), "scale": scale, "normalize": normalize})
        length = q.shape[1]
        scores = torch.einsum("bthk,bshk->bhts", q, k) * scale
        scores = scores * torch.ones(length, length).tril()
        return torch.einsum("bhts,bshv->bthv", scores, v), None

    return chunk_linear_attn


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_fla_backend_maps_causal_linrec_onto_chunk_linear_attn(monkeypatch, variant):
    """The real kernel needs CUDA (scripts/gpu_job.sh); here the mapping (layout, scale 1, no
    normalisation, rescaled queries) is checked against the torch backend with a stand-in."""
    calls = []
    install_stand_in(monkeypatch, "fla.ops.linear_attn", chunk_linear_attn=_stand_in_chunk_linear_attn(calls))
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
