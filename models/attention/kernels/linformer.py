"""Linformer (Wang et al., 2020): keys and values projected to k positions; blockwise low-rank softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import common
from .common import check_qkv, real_positions, zero_padded_rows


def _project_positions(projection: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(k_proj, N) @ x over positions, all heads in one matmul per batch element -> (B, H, k_proj, d).

    x split from a fused projection, (B, N, H, d) in memory, is already an (N, H*d) matrix
    per batch element, so no head gets copied out on its own.
    """
    batch, heads, length, dim = x.shape
    by_position = x.transpose(1, 2).reshape(batch, length, heads * dim)  # (B, N, H*d): a view for layer inputs
    return (projection @ by_position).view(batch, -1, heads, dim).transpose(1, 2)  # (B, H, k_proj, d)


def linformer_attention(
    q,
    k,
    v,
    key_projection: torch.Tensor,
    value_projection: torch.Tensor,
    *,
    key_padding_mask=None,
    dropout_p: float = 0.0,
    training: bool = False,
):
    """Linformer (Wang et al., 2020): softmax(q (E k)^T / sqrt(d)) (F v), E, F (k_proj, N_max).

    Padded keys and values are zeroed before the projection; the projection is
    indexed by absolute position, so results depend on where the real items sit.
    """
    check_qkv(q, k, v)
    length, dim = q.shape[2], q.shape[-1]
    if length > key_projection.shape[1]:
        raise ValueError(f"linformer: sequence length {length} exceeds max_len {key_projection.shape[1]}")
    real = real_positions(key_padding_mask, q)
    if real is not None:
        k, v = k * real, v * real
    k_proj = _project_positions(key_projection[:, :length], k)  # (B, H, k_proj, d)
    v_proj = _project_positions(value_projection[:, :length], v)  # (B, H, k_proj, e)
    # 1/sqrt(d) scales the (N, d) queries rather than the (N, k_proj) scores: one pass fewer over the large tensor
    q = q * dim**-0.5
    # The plain path: with dropout (a recompute would redraw the dropped probabilities) and off
    # the CPU (on a GPU the blockwise loop would only add kernel launches).
    if (dropout_p > 0.0 and training) or q.device.type != "cpu":
        probs = (q @ k_proj.transpose(-1, -2)).softmax(dim=-1)  # (B, H, N, k_proj)
        if dropout_p > 0.0 and training:
            probs = F.dropout(probs, dropout_p)
        return zero_padded_rows(probs @ v_proj, real)
    batch, heads = q.shape[:2]
    out = _BlockwiseLowRankSoftmax.apply(
        *(x.reshape(batch * heads, *x.shape[2:]) for x in (q, k_proj, v_proj))
    )  # (B*H, N, e)
    return zero_padded_rows(out.view(batch, heads, length, -1), real)


class _BlockwiseLowRankSoftmax(torch.autograd.Function):
    """softmax(q kp^T) vp for q (G, N, d), kp (G, P, d), vp (G, P, e), a few (batch, head) slices at a time.

    The (N, P) probabilities exist one block at a time, sized to stay in cache, and are
    recomputed in the backward instead of stored (as FlashAttention does over keys): the
    unblocked form writes and re-reads four (B, H, N, P) tensors, hundreds of MB at N = 4096.
    Softmax backward uses rowsum(dP * P) = rowsum(dO * O), so O is all it keeps.
    """

    @staticmethod
    def _step(q: torch.Tensor, kp: torch.Tensor) -> int:
        return max(1, common.CACHE_BLOCK_BYTES // max(1, q.shape[1] * kp.shape[1] * q.element_size()))

    @staticmethod
    def forward(ctx, q, kp, vp):
        out = q.new_empty(q.shape[0], q.shape[1], vp.shape[-1])
        step = _BlockwiseLowRankSoftmax._step(q, kp)
        for start in range(0, q.shape[0], step):
            block = slice(start, start + step)
            probs = torch.bmm(q[block], kp[block].transpose(1, 2)).softmax(dim=-1)  # (g, N, P)
            torch.bmm(probs, vp[block], out=out[block])
        ctx.save_for_backward(q, kp, vp, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, kp, vp, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_q, grad_kp, grad_vp = torch.empty_like(q), torch.empty_like(kp), torch.empty_like(vp)
        row_dot = (grad_out * out).sum(dim=-1, keepdim=True)  # (G, N, 1): rowsum(dP * P)
        step = _BlockwiseLowRankSoftmax._step(q, kp)
        for start in range(0, q.shape[0], step):
            block = slice(start, start + step)
            probs = torch.bmm(q[block], kp[block].transpose(1, 2)).softmax(dim=-1)  # (g, N, P), recomputed
            torch.bmm(probs.transpose(1, 2), grad_out[block], out=grad_vp[block])
            grad_scores = (
                torch.bmm(grad_out[block], vp[block].transpose(1, 2)).sub_(row_dot[block]).mul_(probs)
            )  # softmax backward
            torch.bmm(grad_scores, kp[block], out=grad_q[block])
            torch.bmm(grad_scores.transpose(1, 2), q[block], out=grad_kp[block])
        return grad_q, grad_kp, grad_vp
