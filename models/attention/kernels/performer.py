"""Performer (Choromanski et al., ICLR 2021): FAVOR+ positive orthogonal random features."""

from __future__ import annotations

import math

import torch

from .causal import normalised_linear_attention
from .common import DEFAULT_CHUNK_SIZE, at_least_fp32, check_qkv, real_positions, zero_padded_rows
from .scan_cpp import causal_performer_cpp, resolve_walk_backend

PERFORMER_EPS = 1e-15  # the normaliser's floor: FAVOR+ features are positive, so it only guards an underflow


def orthogonal_random_features(
    nb_features: int, dim: int, *, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """(m, d) Gaussian projection with orthogonal blocks, rows rescaled to chi(d) norms (FAVOR+)."""
    blocks = []
    for _ in range(math.ceil(nb_features / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, device=device)
        orthonormal, _ = torch.linalg.qr(gaussian)
        blocks.append(orthonormal.T)
    directions = torch.cat(blocks, dim=0)[:nb_features]  # (m, d)
    norms = torch.randn(nb_features, dim, generator=generator, device=device).norm(dim=1)
    return directions * norms[:, None]


def performer_features(x: torch.Tensor, projection: torch.Tensor, *, is_query: bool) -> torch.Tensor:
    """FAVOR+ positive random features, up to factors that cancel in the attention normaliser.

    The paper's map is phi(x) = exp(w_r.x - |x|^2 / 2) / sqrt(m) with x scaled by d^-1/4.
    Since w.x - |x|^2/2 - |w|^2/2 = -|w - x|^2/2 <= 0, keys take exp of exactly that
    (bounded by 1, data-independent shift, so causal mode cannot leak through it) and
    queries carry the exp(|w_r|^2/2) factor back. A query's own factor exp(-|x|^2/2), any
    per-query constant and the 1/sqrt(m) all cancel between numerator and normaliser, so
    queries are softmax_r(w_r.x + |w_r|^2/2): stable and one fused pass.
    NOTE: feature r of a key is the paper's times sqrt(m) exp(-|w_r|^2/2), of a query the
    paper's times c(q) sqrt(m) exp(|w_r|^2/2): every product phi(q).phi(k) is the paper's
    times m c(q), so the attention output phi(q) S / phi(q) z is the paper's exactly.
    """
    dim = x.shape[-1]
    half_sq_w = 0.5 * projection.square().sum(dim=-1)  # (m,): |w_r|^2 / 2
    rows = x.reshape(-1, dim)  # (B*H*N, d)
    ones = torch.ones_like(rows[:, :1])
    # Every term of the exponent is one input column times one weight row, so a single
    # matmul writes the logits: no bias copy, no extra pass over (B*H*N, m).
    if is_query:
        inputs = torch.cat([rows, ones], dim=-1)  # (B*H*N, d + 1)
        weights = torch.cat([projection.T * dim**-0.25, half_sq_w[None]], dim=0)  # (d + 1, m)
        return (inputs @ weights).softmax(dim=-1).view(*x.shape[:-1], -1)
    inputs = torch.cat([rows, rows.square().sum(dim=-1, keepdim=True), ones], dim=-1)  # (B*H*N, d + 2)
    weights = torch.cat(
        [projection.T * dim**-0.25, torch.full_like(half_sq_w, -0.5 * dim**-0.5)[None], -half_sq_w[None]], dim=0
    )  # (d + 2, m)
    return (inputs @ weights).exp_().view(*x.shape[:-1], -1)


def resolve_performer_backend(backend: str, like: torch.Tensor, causal: bool) -> str:
    """ "auto": the causal form's fused C++ walk (kernels/scan_cpp.py) on a CPU where it builds, else "torch"."""
    return resolve_walk_backend("performer", backend, at_least_fp32(like), causal)  # features in float32 at least


def performer_attention(
    q,
    k,
    v,
    projection: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask=None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    eps: float = PERFORMER_EPS,
    backend: str = "torch",
):
    """Performer FAVOR+ (Choromanski et al., ICLR 2021) with fixed projection (m, d).

    backend: "torch" (chunked products, kernels/causal.py), "cpp" (the causal form's (m, e) state walked by the
    linear-attention walk, the features made inside it) or "auto" (cpp where it applies)."""
    check_qkv(q, k, v)
    real = real_positions(key_padding_mask, q)
    dtype = q.dtype
    q, k, v = at_least_fp32(q), at_least_fp32(k), at_least_fp32(v)
    if causal and resolve_performer_backend(backend, q, causal) == "cpp":
        return causal_performer_cpp(q, k, v, key_padding_mask, projection, eps).to(dtype)  # padded rows come out 0
    fq = performer_features(q, projection.to(q.dtype), is_query=True)  # (B, H, N, m)
    fk = performer_features(k, projection.to(q.dtype), is_query=False)  # (B, H, N, m)
    if real is not None:
        fk = fk * real.to(fk.dtype)
    out = normalised_linear_attention(fq, fk, v, causal, chunk_size, eps)
    return zero_padded_rows(out, real).to(dtype)
