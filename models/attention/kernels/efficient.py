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

# Largest exponent the chunked causal Efficient Attention lets a key factor reach.
_EFFICIENT_MAX_EXPONENT = 30.0


def efficient_attention(q, k, v, *, causal: bool = False, key_padding_mask=None, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Efficient Attention (Shen et al., WACV 2021): softmax_row(Q) (softmax_col(K)^T V).

    Causal: the column softmax runs over the prefix j <= i. Computed in float32 with
    the prefix log-normaliser logZ_i = logcumsumexp_{j<=i} k_j and, per chunk, a
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
    q_soft = q.softmax(dim=-1)
    very_negative = -1e30  # finite, so no inf - inf in gradients
    if real is not None:
        k = torch.where(real.bool(), k, very_negative)
    if not causal:
        k_soft = k.softmax(dim=-2)  # over positions
        if real is not None:
            k_soft = k_soft * real  # a fully padded row softmaxes to uniform: drop it
        out = q_soft @ (k_soft.transpose(-1, -2) @ v)
        return zero_padded_rows(out, real).to(dtype)

    length = q.shape[2]
    log_z = torch.logcumsumexp(k, dim=-2)  # (B, H, N, d)
    real_bool = real.bool() if real is not None else torch.ones_like(k[..., :1], dtype=torch.bool)
    qc = split_chunks(q_soft, chunk_size)  # (B, H, n, C, d)
    kc = split_chunks(k, chunk_size, fill=very_negative)
    vc = split_chunks(v, chunk_size)  # (B, H, n, C, e)
    log_zc = split_chunks(log_z, chunk_size, fill=0.0)
    realc = split_chunks(real_bool.expand(-1, q.shape[1], -1, -1).float(), chunk_size).bool()  # (B, H, n, C, 1)

    with torch.no_grad():  # r cancels exactly between a and b: a stabiliser, no gradient needed
        first_real = torch.where(realc, log_zc, torch.inf).amin(dim=-2, keepdim=True)  # (B, H, n, 1, d)
        ref = torch.where(realc.any(dim=-2, keepdim=True), first_real, log_zc[..., :1, :])
        decay = (ref[:, :, :-1] - ref[:, :, 1:]).exp().transpose(-1, -2)  # (B, H, n-1, d, 1)
    a = qc * torch.where(realc, ref - log_zc, very_negative).exp()  # (B, H, n, C, d); padded queries -> 0
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
        weights = torch.where(causal_pairs, pair_exponent, very_negative).exp()  # <= 1 where j <= i
        intra = torch.einsum("bhnid,bhnijd,bhnje->bhnie", qc, weights, vc)
    out = a @ prefix_states + intra  # (B, H, n, C, e)
    return zero_padded_rows(merge_chunks(out, length), real).to(dtype)
