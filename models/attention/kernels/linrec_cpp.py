"""LinRec (paper form) as fused C++ passes per (sequence, head), causal and bidirectional, built on first use.

The PyTorch path (kernels/linrec.py) makes a dozen eager passes over (B, H, N, d) tensors (ELU,
prefix norms, row norms, chunked products, each with its own backward); at recommender lengths
(N = 50-200, head dim 16) that memory traffic, not arithmetic, is the cost. Here one loop walks
the sequence once with the d x e state and the d prefix norms in L1:

    forward, i = 1..N:   fk_i = elu(k_i) m_i;  P += fk_i^2;  H += fk_i v_i^T
                         q~_i = elu(q_i) / (sqrt(d) |elu(q_i)| sqrt(n_i) sqrt(P))   (per column)
                         out_i = q~_i^T H                                           (0 on padded rows)
    backward: a forward walk recomputes H, P and q~ and forms dq~_i = H G_i (then dq through the
    norms and ELU); a reverse walk accumulates R = sum_{i>=j} q~_i G_i^T and the suffix sums of the
    prefix-norm gradient, giving dk_j and dv_j = fk_j^T R.
    bidirectional: one walk over the keys builds the column-scaled state W, one over the queries reads
    the outputs and keeps the unscaled state for the backward (d/N of the keys' size), whose two walks
    give dq and dW = sum_i r_i fq_i g_i^T, then dk and dv. The state is fixed during each walk, so the
    walks take 8 positions at a time as small matrix products (2.6x the per-position walk at N = 4096,
    head dim 16; 1.0-1.5x at N = 50-200).

Sequences (or sequence x head) run in parallel (at::parallel_for, OpenMP). float32 and float64 (for gradcheck).
The PyTorch path stays the reference this kernel is tested against (values, fp64 gradients,
causality, padding); `extension_error()` says why the extension is unavailable (no compiler, ...).
"""

from __future__ import annotations

import torch

from .common import NORM_EPS
from .cpp_build import CppKernel

_CPP_DECLARATIONS = r"""
torch::Tensor forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real, bool causal,
                      double eps, torch::Tensor kept);
void backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
              bool causal, double eps, torch::Tensor kept, torch::Tensor dq, torch::Tensor dk, torch::Tensor dv);
"""

# the kernel itself is in C++ (its own file: an editor, a formatter and compiler line numbers work on it)
KERNEL = CppKernel(
    "linrec", "LinRec's fused C++ kernel", "linrec_cpu.cpp", _CPP_DECLARATIONS, ["forward", "backward"], "_linrec_cpu"
)
source_digest = KERNEL.source_digest
extension_error = KERNEL.error  # why the C++ kernel cannot be used here, or None
_module = KERNEL.module


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _kept_state(ctx, q: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Where the bidirectional forward leaves its key state for the backward, (B, H, d*e + d): d/N of the keys'
    size, and one walk over the keys fewer. Empty (nothing kept) when causal or when no gradient is wanted."""
    if causal or not any(ctx.needs_input_grad):
        return q.new_empty(0)
    batch, _, heads, d = q.shape
    return q.new_empty(batch, heads, d * v.shape[-1] + d)


class _FusedLinRec(torch.autograd.Function):
    """q, k, v (B, N, H, d) -> (B, N, H, e); gradients as three tensors. Saves its inputs (and the key state)."""

    @staticmethod
    def forward(ctx, q, k, v, real, causal):
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        kept = _kept_state(ctx, q, v, causal)
        out = _module().forward(q, k, v, real, causal, NORM_EPS, kept)
        ctx.save_for_backward(q, k, v, real, kept)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, real, kept = ctx.saved_tensors
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        _module().backward(_last_dim_contiguous(grad), q, k, v, real, ctx.causal, NORM_EPS, kept, dq, dk, dv)
        return dq, dk, dv, None, None


class _FusedLinRecPacked(torch.autograd.Function):
    """qkv (B, N, 3, H, d), the output of one projection -> (B, N, H, d). Saves only qkv; its gradient is one
    (B, N, 3, H, d) tensor whose three slices the kernel fills (no concatenation)."""

    @staticmethod
    def forward(ctx, qkv, real, causal):
        q, k, v = qkv.unbind(2)  # (B, N, H, d) views
        kept = _kept_state(ctx, q, v, causal)
        out = _module().forward(q, k, v, real, causal, NORM_EPS, kept)
        ctx.save_for_backward(qkv, real, kept)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, grad):
        qkv, real, kept = ctx.saved_tensors
        grad_qkv = torch.empty_like(qkv)  # (B, N, 3, H, d)
        grads = grad_qkv.unbind(2)
        _module().backward(_last_dim_contiguous(grad), *qkv.unbind(2), real, ctx.causal, NORM_EPS, kept, *grads)
        return grad_qkv, None, None


def _real(key_padding_mask: torch.Tensor | None, like: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    if key_padding_mask is None:
        return torch.ones(batch, length, dtype=like.dtype)
    return key_padding_mask.to(like.dtype).contiguous()  # (B, N), 1 = real item


def linrec_cpp(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None, causal: bool
) -> torch.Tensor:
    """LinRec, paper form, (B, H, N, d) -> (B, H, N, e) on CPU in float32/float64; mask (B, N) True = real."""
    batch, _, length, _ = q.shape
    real = _real(key_padding_mask, q, batch, length)
    views = (t.transpose(1, 2) for t in (q, k, v))  # (B, N, H, d) views, no copy
    return _FusedLinRec.apply(*views, real, causal).transpose(1, 2)  # (B, H, N, e)


def linrec_cpp_packed(qkv: torch.Tensor, key_padding_mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """LinRec, paper form, straight from a packed projection: qkv (B, N, 3, H, d) -> (B, N, H, d)."""
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    return _FusedLinRecPacked.apply(qkv, _real(key_padding_mask, qkv, qkv.shape[0], qkv.shape[1]), causal)
