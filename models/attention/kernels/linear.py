"""Linear Transformer (Katharopoulos et al., ICML 2020): elu(x) + 1 features, normalised."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .causal import normalised_linear_attention
from .common import DEFAULT_CHUNK_SIZE, check_qkv, real_positions, zero_padded_rows
from .scan_cpp import causal_linear_cpp, resolve_walk_backend


def resolve_linear_backend(backend: str, like: torch.Tensor, causal: bool) -> str:
    """ "auto": the causal form's fused C++ walk (kernels/scan_cpp.py) on a CPU where it builds, else "torch"."""
    return resolve_walk_backend("linear", backend, like, causal)


def linear_attention(
    q,
    k,
    v,
    *,
    causal: bool = False,
    key_padding_mask=None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    eps: float = 1e-6,
    backend: str = "torch",
):
    """Linear Transformer (Katharopoulos et al., ICML 2020): phi = elu + 1.

    backend: "torch" (chunked products, kernels/causal.py), "cpp" (the causal form as one fused C++ walk, tested
    against it) or "auto" (cpp where it applies)."""
    check_qkv(q, k, v)
    real = real_positions(key_padding_mask, q)
    if causal and resolve_linear_backend(backend, q, causal) == "cpp":
        return causal_linear_cpp(q, k, v, key_padding_mask, eps)  # the features inside the walk; padded rows come out 0
    fq, fk = F.elu(q) + 1.0, F.elu(k) + 1.0
    if real is not None:
        fk = fk * real
    return zero_padded_rows(normalised_linear_attention(fq, fk, v, causal, chunk_size, eps), real)
