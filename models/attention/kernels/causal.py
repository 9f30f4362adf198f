"""The causal linear-attention core: out_i = sum_{j<=i} q_i . k_j v_j, chunk by chunk.

An intra-chunk masked product plus an inter-chunk prefix state of shape (B, H, N / C, d, e), O(N d)
memory for C >= d, with a hand-written backward; optionally flash-linear-attention on CUDA.
"""

from __future__ import annotations

import torch

from .common import DEFAULT_CHUNK_SIZE, merge_chunks, split_chunks

CAUSAL_BACKENDS = ("torch", "fla")
_FLA_DEVICE_TYPES = ("cuda",)  # flash-linear-attention's kernels are Triton (GPU) kernels


def causal_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, backend: str = "torch"
) -> torch.Tensor:
    """out_i = sum_{j <= i} (q_i . k_j) v_j, chunk by chunk, with a hand-written backward.

    backend="fla" hands the same product to flash-linear-attention's chunked kernel
    (optional extra, CUDA only); "torch" is the implementation below.

    Per chunk t (A_t = tril(Q_t K_t^T), S_t = sum_{t' < t} K_t'^T V_t'):
        O_t  = A_t V_t + Q_t S_t
        dQ_t = tril(dO_t V_t^T) K_t + dO_t S_t^T
        dK_t = tril(dO_t V_t^T)^T Q_t + V_t R_t^T,   R_t = sum_{t' > t} Q_t'^T dO_t'
        dV_t = A_t^T dO_t + K_t R_t
    The backward recomputes A_t instead of storing it: saved memory is the inputs plus
    the (B, H, N / C, d, e) prefix states.
    """
    if backend == "fla":
        return _fla_causal_linear_attention(q, k, v)
    if backend != "torch":
        raise ValueError(f"causal linear attention: unknown backend {backend!r}; expected one of {CAUSAL_BACKENDS}")
    return _CausalLinearAttention.apply(q, k, v, chunk_size)


def _fla_causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """flash-linear-attention's chunk_linear_attn with scale 1 and no normalisation: the same sum."""
    if q.device.type not in _FLA_DEVICE_TYPES:
        raise ValueError(
            f"backend='fla' runs on {'/'.join(_FLA_DEVICE_TYPES)} tensors only, got {q.device.type}; use "
            "backend='torch'"
        )
    try:
        from fla.ops.linear_attn import chunk_linear_attn
    except ImportError as err:
        raise ImportError("backend='fla' needs flash-linear-attention (pip install flash-linear-attention)") from err
    # fla takes (B, N, H, d); ours are (B, H, N, d)
    out, _ = chunk_linear_attn(*(x.transpose(1, 2).contiguous() for x in (q, k, v)), scale=1.0, normalize=False)
    return out.transpose(1, 2)  # (B, H, N, e)


class _CausalLinearAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, chunk_size):
        length = q.shape[2]
        qc = split_chunks(q, chunk_size)  # (B, H, n, C, d)
        kc = split_chunks(k, chunk_size)
        vc = split_chunks(v, chunk_size)  # (B, H, n, C, e)
        chunk_states = kc.transpose(-1, -2) @ vc  # (B, H, n, d, e)
        # exclusive prefix over chunks: the state seen by chunk t sums chunks < t (shifted, not cumsum minus the
        # chunk's own: a subtraction would lose the small states next to a large one)
        prefix_states = _exclusive_prefix(chunk_states)  # (B, H, n, d, e)
        scores = (qc @ kc.transpose(-1, -2)).tril_()  # (B, H, n, C, C)
        out = torch.baddbmm((scores @ vc).flatten(0, 2), qc.flatten(0, 2), prefix_states.flatten(0, 2))  # (B*H*n, C, e)
        ctx.save_for_backward(qc, kc, vc, prefix_states)
        ctx.length = length
        return merge_chunks(out.view(*qc.shape[:-1], vc.shape[-1]), length)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        qc, kc, vc, prefix_states = ctx.saved_tensors
        gc = split_chunks(grad_out, qc.shape[-2])  # (B, H, n, C, e)
        scores = (qc @ kc.transpose(-1, -2)).tril_()  # recomputed A: (B, H, n, C, C)
        grad_scores = (gc @ vc.transpose(-1, -2)).tril_()  # (B, H, n, C, C)
        state_grads = qc.transpose(-1, -2) @ gc  # (B, H, n, d, e): Q_t^T dO_t
        # R_t = sum over later chunks t' > t (reverse exclusive prefix). Not "total minus cumsum": a query whose
        # normaliser is tiny gives a huge Q^T dO, and subtracting it back out left ~1e-16 of it as error in every
        # later chunk (1e-5 in Performer's fp64 key gradients, against a dense reference)
        later_grads = _exclusive_prefix(state_grads.flip(2)).flip(2)  # (B, H, n, d, e)
        grad_q = torch.baddbmm(
            (grad_scores @ kc).flatten(0, 2), gc.flatten(0, 2), prefix_states.transpose(-1, -2).flatten(0, 2)
        )
        grad_k = torch.baddbmm(
            (grad_scores.transpose(-1, -2) @ qc).flatten(0, 2),
            vc.flatten(0, 2),
            later_grads.transpose(-1, -2).flatten(0, 2),
        )
        grad_v = torch.baddbmm(
            (scores.transpose(-1, -2) @ gc).flatten(0, 2), kc.flatten(0, 2), later_grads.flatten(0, 2)
        )
        length = ctx.length
        return (
            merge_chunks(grad_q.view_as(qc), length),
            merge_chunks(grad_k.view_as(kc), length),
            merge_chunks(grad_v.view_as(vc), length),
            None,
        )


def _exclusive_prefix(x: torch.Tensor) -> torch.Tensor:
    """sum_{t' < t} x_t' over dim 2 of (B, H, n, d, e): the inclusive cumsum shifted one chunk later."""
    shifted = torch.zeros_like(x)
    torch.cumsum(x[:, :, :-1], dim=2, out=shifted[:, :, 1:])
    return shifted


def linear_attention_core(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, chunk_size: int, backend: str = "torch"
) -> torch.Tensor:
    """Unnormalised linear attention: q (k^T v) or its causal prefix form."""
    if causal:
        return causal_linear_attention(q, k, v, chunk_size, backend)
    # The state is built as (v^T k)^T so that autograd's gradient for k, v^T-times-grad, comes
    # out (N, d) contiguous; k^T v would hand back grad_k transposed and cost a copy per call.
    return q @ (v.transpose(-1, -2) @ k).transpose(-1, -2)  # (B, H, N, e) via a (B, H, d, e) state


def normalised_linear_attention(fq, fk, v, causal: bool, chunk_size: int, eps: float) -> torch.Tensor:
    """phi(q)^T S_i / (phi(q)^T z_i): numerator and normaliser in one pass (v gets a ones column)."""
    ones = torch.ones_like(v[..., :1])
    out = linear_attention_core(fq, fk, torch.cat([v, ones], dim=-1), causal, chunk_size)  # (B, H, N, e + 1)
    # split (not slicing) and a reciprocal: the backward writes one (N, e + 1) gradient, no zero-filled copies
    numerator, normaliser = out.split([v.shape[-1], 1], dim=-1)
    return numerator * normaliser.clamp_min(eps).reciprocal()
