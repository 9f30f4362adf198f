"""Efficient Attention (Shen et al., WACV 2021): softmax over query features and over key positions."""

from __future__ import annotations

import torch

from .common import (
    DEFAULT_CHUNK_SIZE,
    at_least_fp32,
    check_qkv,
    merge_chunks,
    real_positions,
    split_chunks,
    zero_padded_rows,
)
from .scan_cpp import causal_efficient_cpp, resolve_walk_backend

# Largest exponent the chunked causal Efficient Attention lets a key factor reach.
_EFFICIENT_MAX_EXPONENT = 30.0
_VERY_NEGATIVE = -1e30  # a padded key: finite, so no inf - inf in gradients


def _prefix_log_normaliser(kc: torch.Tensor, realc: torch.Tensor) -> torch.Tensor:
    """logZ_i = log sum_{j <= i} exp(k_j) per feature, chunk by chunk: (B, H, n, C, d) keys (padded: very negative)
    and (B, H, n, C, 1) real flags -> (B, H, n, C, d); at padded positions only finite, not meaningful.

    Relative to a reference r per chunk, the larger of the earlier chunks' log-mass and the key at the chunk's first
    real position (known to every real position of the chunk: nothing depends on a later one),
        logZ_i = r + log(exp(L_before - r) + cumsum_{j in chunk, j <= i} exp(k_j - r)):
    one exp, one cumsum and one log, where torch.logcumsumexp costs a log1p and an exp per element and two more
    scans in its backward. None when a key would sit more than _EFFICIENT_MAX_EXPONENT above its reference (the
    caller then takes torch.logcumsumexp)."""
    chunk_mass = kc.logsumexp(dim=-2)  # (B, H, n, d)
    before = torch.cat(  # log-mass of every earlier chunk: (B, H, n, d)
        [torch.full_like(chunk_mass[:, :, :1], _VERY_NEGATIVE), chunk_mass.logcumsumexp(dim=-2)[:, :, :-1]], dim=2
    )
    has_real = realc.any(dim=-2)  # (B, H, n, 1)
    first_real = realc.to(torch.uint8).argmax(dim=-2, keepdim=True)  # (B, H, n, 1, 1): first True
    first_key = kc.gather(-2, first_real.expand(-1, -1, -1, -1, kc.shape[-1])).squeeze(-2)  # (B, H, n, d)
    with torch.no_grad():  # r cancels exactly: a stabiliser, no gradient needed
        ref = torch.where(has_real, torch.maximum(before, first_key), before)  # (B, H, n, d)
        if (kc - ref[:, :, :, None]).max() > _EFFICIENT_MAX_EXPONENT:
            return None
    sums = (before - ref).exp()[:, :, :, None] + (kc - ref[:, :, :, None]).exp().cumsum(dim=-2)  # (B, H, n, C, d)
    # a padded position ahead of its chunk's first real key can sum to 0: kept finite (its output is dropped)
    return ref[:, :, :, None] + sums.clamp_min(torch.finfo(sums.dtype).tiny).log()


def resolve_efficient_backend(backend: str, like: torch.Tensor, causal: bool) -> str:
    """ "auto": the causal form's fused C++ walk (kernels/scan_cpp.py) on a CPU where it builds, else "torch"."""
    return resolve_walk_backend("efficient", backend, at_least_fp32(like), causal)  # it computes in float32 at least


def efficient_attention(
    q,
    k,
    v,
    *,
    causal: bool = False,
    key_padding_mask=None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: str = "torch",
):
    """Efficient Attention (Shen et al., WACV 2021): softmax_row(Q) (softmax_col(K)^T V).

    backend: "torch" (below), "cpp" (the causal form as one fused C++ walk: an online softmax per feature, every
    exponent <= 0; tested against this path) or "auto" (cpp where it applies).

    Causal: the column softmax runs over the prefix j <= i. Computed in float32 with
    the prefix log-normaliser logZ_i = logcumsumexp_{j<=i} k_j (chunk by chunk:
    _prefix_log_normaliser) and, per chunk, a
    reference r = logZ at the chunk's first real position, so that
        out_i = sum_c a_ic [S_c + sum_{j in chunk, j<=i} b_jc v_j],
        a_ic = softmax(q_i)_c exp(r_c - logZ_ic) <= 1,   b_jc = exp(k_jc - r_c),
    S_c = sum_{j before the chunk} exp(k_jc - r_c) v_j, carried from chunk to chunk by
    exp(r_prev - r) <= 1 (every exponent <= 0). Nothing depends on a
    future position. b > 1 when a key exceeds the prefix mass at the chunk start; if
    some b would exceed exp(30) (overflow risk), the intra-chunk part is computed
    instead from exp(k_j - logZ_i) <= 1 directly, a (C, C, d) tensor per chunk.
    """
    check_qkv(q, k, v)
    real = real_positions(key_padding_mask, q)
    dtype = q.dtype
    q, k, v = at_least_fp32(q), at_least_fp32(k), at_least_fp32(v)
    if causal and resolve_efficient_backend(backend, q, causal) == "cpp":
        return causal_efficient_cpp(q, k, v, key_padding_mask).to(dtype)  # softmax(q) in the walk; padded rows 0
    q_soft = q.softmax(dim=-1)
    if real is not None:
        k = torch.where(real.bool(), k, _VERY_NEGATIVE)
    if not causal:
        k_soft = k.softmax(dim=-2)  # over positions
        if real is not None:
            k_soft = k_soft * real  # a fully padded row softmaxes to uniform: drop it
        out = q_soft @ (k_soft.transpose(-1, -2) @ v)
        return zero_padded_rows(out, real).to(dtype)

    length = q.shape[2]
    real_bool = real.bool() if real is not None else torch.ones_like(k[..., :1], dtype=torch.bool)
    qc = split_chunks(q_soft, chunk_size)  # (B, H, n, C, d)
    kc = split_chunks(k, chunk_size, fill=_VERY_NEGATIVE)
    vc = split_chunks(v, chunk_size)  # (B, H, n, C, e)
    realc = split_chunks(real_bool.expand(-1, q.shape[1], -1, -1).float(), chunk_size).bool()  # (B, H, n, C, 1)
    log_zc = _prefix_log_normaliser(kc, realc)  # (B, H, n, C, d)
    if log_zc is None:  # keys far apart inside a chunk: the scan, which needs no reference
        log_zc = split_chunks(torch.logcumsumexp(k, dim=-2), chunk_size, fill=0.0)

    with torch.no_grad():  # r cancels exactly between a and b: a stabiliser, no gradient needed
        first_real = torch.where(realc, log_zc, torch.inf).amin(dim=-2, keepdim=True)  # (B, H, n, 1, d)
        ref = torch.where(realc.any(dim=-2, keepdim=True), first_real, log_zc[..., :1, :])
        decay = (ref[:, :, :-1] - ref[:, :, 1:]).exp().transpose(-1, -2)  # (B, H, n-1, d, 1)
    a = qc * torch.where(realc, ref - log_zc, _VERY_NEGATIVE).exp()  # (B, H, n, C, d); padded queries -> 0
    # chunk t's keys enter the state of chunk t+1, relative to its reference: exponents <= 0
    chunk_states = (kc[:, :, :-1] - ref[:, :, 1:]).exp().transpose(-1, -2) @ vc[:, :, :-1]  # (B, H, n-1, d, e)
    states = [vc.new_zeros(*chunk_states.shape[:2], chunk_states.shape[-2], vc.shape[-1])]
    for t in range(chunk_states.shape[2]):
        states.append(decay[:, :, t] * states[-1] + chunk_states[:, :, t])
    prefix_states = torch.stack(states, dim=2)  # (B, H, n, d, e)
    key_exponent = kc - ref  # (B, H, n, C, d)
    b = key_exponent.clamp_max(_EFFICIENT_MAX_EXPONENT).exp()
    if key_exponent.max() <= _EFFICIENT_MAX_EXPONENT:
        intra = torch.tril(a @ b.transpose(-1, -2)) @ vc  # (B, H, n, C, e)
    else:
        causal_pairs = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()[
            ..., None
        ]  # (C, C, 1)
        pair_exponent = kc[:, :, :, None, :, :] - log_zc[:, :, :, :, None, :]  # (B, H, n, C_i, C_j, d): k_j - logZ_i
        weights = torch.where(causal_pairs, pair_exponent, _VERY_NEGATIVE).exp()  # <= 1 where j <= i
        intra = torch.einsum("bhnid,bhnijd,bhnje->bhnie", qc, weights, vc)
    out = a @ prefix_states + intra  # (B, H, n, C, e)
    return zero_padded_rows(merge_chunks(out, length), real).to(dtype)
