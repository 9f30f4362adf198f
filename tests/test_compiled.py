"""The opt-in torch.compile path passes the same checks as the eager kernel.

Compiling takes tens of seconds on a small CPU, so the cases share one compiled function
and one input shape.
"""

import dense_reference as dense
import pytest
import torch
from attention_properties import causality_violation, padded_content_violation

from models.attention import build_attention
from models.attention.functional import compiled_linrec_attention, linrec_attention

B, H, N, D = 2, 2, 12, 8


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, dtype=torch.float64) for _ in range(3))
    real = torch.ones(B, N, dtype=torch.bool)
    real[0, :4] = False
    return q, k, v, real


@pytest.mark.parametrize("causal", [False, True])
def test_compiled_matches_dense_reference_and_eager_gradients(inputs, causal):
    q, k, v, real = inputs
    compiled = compiled_linrec_attention()
    results = []
    for kernel in (compiled, linrec_attention):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = kernel(*leaves, causal=causal, key_padding_mask=real, chunk_size=4)
        results.append((out, *torch.autograd.grad(out.square().sum(), leaves)))
    expected = dense.linrec_paper(q, k, v, causal, real)
    assert torch.allclose(results[0][0], expected, rtol=1e-8, atol=1e-10)
    for a, b in zip(*results, strict=False):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_compiled_layer_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    layer = build_attention("linrec", 16, 2, causal=True, chunk_size=4, compile=True).eval()
    x = torch.randn(2, N, 16)
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[0, :5] = False
    assert causality_violation(layer, x, mask) < 1e-5
    assert padded_content_violation(layer, x, mask) < 1e-5
