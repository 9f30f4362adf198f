"""Every kernel family against a direct dense transcription of its formula (fp32, rtol 1e-4)."""

import dense_reference as dense
import pytest
import torch
from kernel_inputs import N, _close, _inputs

import models.attention.kernels.causal  # noqa: F401  (patched as kernels.causal)
from models.attention import functional as fn

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


def test_dense_check_bites_on_a_wrong_formula():
    """The reference comparison must fail if the kernel drops LinRec's sqrt(N) column factor."""
    q, k, v, _ = _inputs()
    wrong = fn.linrec_attention(q, k, v) * N**0.5
    with pytest.raises(AssertionError):
        _close(wrong, dense.linrec_paper(q, k, v))


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


@pytest.mark.parametrize("name", ["linrec-paper", "linrec-official", "linear", "efficient"])
def test_float64_inputs_stay_float64(name):
    kernel, _ = PAIRS[name]
    q, k, v, real = _inputs(torch.float64)
    out = kernel(q, k, v, True, real, 4)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
