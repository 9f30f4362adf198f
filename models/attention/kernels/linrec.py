"""LinRec (Liu et al., SIGIR 2023): L2-normalised ELU features; paper and official forms, exact causal prefix form,
cache-blocked inference, opt-in torch.compile."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from . import common
from .causal import CAUSAL_BACKENDS, causal_linear_attention, linear_attention_core
from .common import DEFAULT_CHUNK_SIZE, NORM_EPS, at_least_fp32, check_qkv, real_positions, safe_norm, zero_padded_rows
from .cpp_build import warn_fallback
from .recompute import recompute_in_blocks

LINREC_VARIANTS = ("paper", "official")
# auto: the fastest correct path here (resolve_linrec_backend); cpp: the paper form in fused C++ passes
LINREC_BACKENDS = ("auto", *CAUSAL_BACKENDS, "cpp")


def resolve_linrec_backend(backend: str, q: torch.Tensor, variant: str = "paper", recompute_heads=None) -> str:
    """The path `backend` names. "auto": the fused C++ kernel (kernels/linrec_cpp.py) where it applies -- CPU,
    float32/float64, the paper form, no recompute_heads, not inside torch.compile, the extension built -- else
    "torch". NOTE: on CUDA "auto" stays on "torch"; flash-linear-attention ("fla") is an opt-in extra."""
    if backend != "auto":
        return backend
    fused = (
        q.device.type == "cpu"
        and q.dtype in (torch.float32, torch.float64)
        and variant == "paper"
        and not recompute_heads
        and not torch.compiler.is_compiling()
    )
    if fused:
        from .linrec_cpp import extension_error

        if extension_error() is None:
            return "cpp"
        _warn_no_extension(extension_error())
    return "torch"


def linrec_backend_for(options: dict, device, dtype=torch.float32, compiled: bool = False) -> str:
    """Which path a LinRec layer built with `options` runs on `device` (cpp / torch / fla / compiled): what result
    rows record, since "auto" falls back to the PyTorch path when the C++ kernel cannot be built."""
    if compiled or options.get("compile"):
        return "compiled"
    probe = torch.empty(0, device=device, dtype=dtype)
    return resolve_linrec_backend(
        options.get("backend", "auto"), probe, options.get("variant", "paper"), options.get("recompute_heads")
    )


def _warn_no_extension(reason: str) -> None:
    warn_fallback("linrec: the fused C++ kernel", reason)


def linrec_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    variant: str = "paper",
    key_padding_mask: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    recompute_heads: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """LinRec (Liu et al., SIGIR 2023), q, k, v (B, H, N, d) -> (B, H, N, d).

    variant="paper"    rho_row(elu(Q)) (rho_col(elu(K))^T V): rows of elu(Q) scaled to
                       norm 1/sqrt(d), columns of elu(K) to norm 1/sqrt(n) over the n real
                       positions. Causal: the exact prefix form (docs/mechanisms.md), i.e. a causal
                       linear attention whose queries are divided by sqrt(n_i) * s_i,
                       s_i the prefix column norms of elu(K).
    variant="official" the authors' code: elu(Q), elu(K) L2-normalised per token, / sqrt(d).
                       NOTE: the original ignores every mask; here padded keys are dropped
                       and causal=True uses the prefix sum, i.e. the masked form of the
                       same formula.
    recompute_heads    when set, the memory-saving path (recompute_in_blocks): blocks of
                       that many heads of one batch element, recomputed in the backward.
    backend            "auto" (default): "cpp" where it applies, else "torch" (resolve_linrec_backend).
                       The causal prefix product: "torch" (chunked, hand-written backward) or
                       "fla" (flash-linear-attention, CUDA); LinRec causal is a causal linear
                       attention with rescaled queries, so it maps onto fla exactly.
                       Bidirectional LinRec has no prefix product and ignores it.
                       "cpp": the whole paper form (features, norms, products and their backward)
                       in fused C++ passes per (sequence, head), causal and bidirectional, CPU, fp32/fp64.
    """
    check_qkv(q, k, v)
    if variant not in LINREC_VARIANTS:
        raise ValueError(f"linrec: unknown variant {variant!r}; expected one of {LINREC_VARIANTS}")
    if backend not in LINREC_BACKENDS:
        raise ValueError(f"linrec: unknown backend {backend!r}; expected one of {LINREC_BACKENDS}")
    if backend == "auto" and not causal and q.dtype == torch.float32 and not _tracks_grad(q, k, v):
        # NOTE: on separate (B, H, N, d) tensors the cache-blocked inference path below beats the fused walk
        # (1.2-1.3x at N = 1024 and 4096, measured by hand); through the layer, which hands over its packed
        # projection, the walk wins (1.1-1.9x at N = 50-1024, by hand): the layer keeps "cpp".
        backend = "torch"
    backend = resolve_linrec_backend(backend, q, variant, recompute_heads)
    if backend == "cpp":
        if variant != "paper" or recompute_heads:
            raise ValueError("linrec backend='cpp' implements the paper form only (no recompute_heads)")
        if q.device.type != "cpu" or q.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"linrec backend='cpp' runs on CPU in float32/float64, got {q.device.type} {q.dtype}")
        from .linrec_cpp import linrec_cpp

        real_positions(key_padding_mask, q)  # validates the mask
        return linrec_cpp(q, k, v, key_padding_mask, causal)
    if recompute_heads:
        if key_padding_mask is not None:
            real_positions(key_padding_mask, q)  # validate before the blocks slice it

        def kernel(q_, k_, v_, mask_):
            return linrec_attention(
                q_,
                k_,
                v_,
                causal=causal,
                variant=variant,
                key_padding_mask=mask_,
                chunk_size=chunk_size,
                backend=backend,
            )

        return recompute_in_blocks(kernel, q, k, v, key_padding_mask, recompute_heads)
    real = real_positions(key_padding_mask, q)
    # The blocked loop is for eager CPU: under torch.compile the general form below is what
    # Inductor fuses, and on a GPU the loop would only add kernel launches.
    if (
        variant == "paper"
        and not causal
        and q.device.type == "cpu"
        and q.dtype == torch.float32
        and not _tracks_grad(q, k, v)
        and not torch.compiler.is_compiling()
    ):
        return _linrec_bidirectional_inference(q, k, v, real)
    dim = q.shape[-1]
    # Statistics (norms, prefix sums) in float32 so bf16/fp16 inputs stay accurate.
    fq, fk = F.elu(at_least_fp32(q)), F.elu(at_least_fp32(k))
    if real is not None:
        fk = fk * real.to(fk.dtype)

    if variant == "official":
        q_hat = fq / safe_norm(fq, -1)
        k_hat = fk / safe_norm(fk, -1)
        out = linear_attention_core(q_hat.to(q.dtype), k_hat.to(k.dtype), v, causal, chunk_size, backend) / math.sqrt(
            dim
        )
        return zero_padded_rows(out, real)

    if real is None:
        count = torch.ones(1, 1, q.shape[2], 1, device=q.device, dtype=fq.dtype)
    else:
        count = real.to(fq.dtype)
    if not causal:
        n_real = count.sum(dim=-2, keepdim=True).clamp_min(1.0)  # (B, 1, 1, 1) or N
        if real is None:
            n_real = torch.full_like(n_real, q.shape[2])
        # rho_col scales key column c: applied to row c of the (d, e) state instead of to (N, d) keys;
        # rho_row scales query row i: applied to output row i. Same maths, two fewer passes over N.
        inv_col_norm = (
            fk.square().sum(dim=-2).mul(n_real[..., 0]).clamp_min(NORM_EPS**2).rsqrt()
        )  # (B, H, d): 1/(sqrt(n) |col|)
        state = (fk.to(k.dtype).transpose(-1, -2) @ v) * inv_col_norm[..., None].to(v.dtype)  # (B, H, d, e)
        inv_row_norm = fq.square().sum(dim=-1, keepdim=True).mul(dim).clamp_min(NORM_EPS**2).rsqrt()  # (B, H, N, 1)
        out = (fq.to(q.dtype) @ state) * inv_row_norm.to(v.dtype)  # (B, H, N, e)
        return zero_padded_rows(out, real)

    inv_n_prefix = count.expand(q.shape[0], 1, -1, 1).cumsum(dim=-2).clamp_min(1.0).rsqrt()  # (B, 1, N, 1): 1/sqrt(n_i)
    q_scaled = _CausalLinRecQueries.apply(fq, fk, inv_n_prefix)
    out = causal_linear_attention(q_scaled.to(q.dtype), fk.to(k.dtype), v, chunk_size, backend)
    return zero_padded_rows(out, real)


class _CausalLinRecQueries(torch.autograd.Function):
    """q_i / (sqrt(d) |q_i| sqrt(n_i) s_i), s_i = sqrt(sum_{j <= i} k_j^2) per column, with a fused backward.

    Inputs fq, fk (B, H, N, d) and a = 1/sqrt(n_i) (B, 1, N, 1), a constant of the mask.
    With r_i = 1/(sqrt(d) |q_i|), S = 1/s, G the incoming gradient and P = cumsum(k^2):
        dq = G S r a - d r^3 a q_i sum_c (G S q)_ic
        dk = -k * revcumsum(G q S^3 r a)            (from dS/dP = -S^3 / 2, dP/dk = 2 k)
    Norms clamped at NORM_EPS pass no gradient, as in the autograd form. Fewer elementwise passes
    over (B, H, N, d) than autograd's chain: causal fwd+bwd 1.1x faster at N = 4096
    (results/peers/linrec-kernel-notes.txt).
    """

    @staticmethod
    def forward(ctx, fq, fk, inv_n_prefix):
        dim = fq.shape[-1]
        prefix_sq = fk.square().cumsum(dim=-2)  # (B, H, N, d): s_i^2
        col_clamped = prefix_sq < NORM_EPS**2
        inv_col = prefix_sq.clamp_min_(NORM_EPS**2).rsqrt_()  # 1/s_i
        row_sq = torch.linalg.vector_norm(fq, dim=-1, keepdim=True).square_().mul_(dim)  # (B, H, N, 1): d |q_i|^2
        row_clamped = row_sq < NORM_EPS**2
        inv_row = row_sq.clamp_min_(NORM_EPS**2).rsqrt_()  # r_i
        row_scale = inv_row * inv_n_prefix  # r_i a_i
        ctx.save_for_backward(fq, fk, inv_col, inv_row, row_scale, col_clamped, row_clamped)
        return fq * inv_col * row_scale

    @staticmethod
    def backward(ctx, grad):
        fq, fk, inv_col, inv_row, row_scale, col_clamped, row_clamped = ctx.saved_tensors
        dim = fq.shape[-1]
        grad_s = grad * inv_col  # G S
        weighted = grad_s * fq  # G S q
        row_term = torch.where(
            row_clamped, 0.0, weighted.sum(dim=-1, keepdim=True) * inv_row.square() * (-dim) * row_scale
        )  # -d r^3 a sum_c
        grad_q = torch.addcmul(grad_s * row_scale, fq, row_term)
        per_prefix = weighted.mul_(inv_col.square()).mul_(row_scale).masked_fill_(col_clamped, 0.0)  # G q S^3 r a
        suffix_sum = per_prefix.flip(-2).cumsum(dim=-2).flip(-2)  # sum over i >= j
        grad_k = suffix_sum.mul_(fk).neg_()
        return grad_q, grad_k, None


def _tracks_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# Size of one block's largest tensor in the cache-blocked paths (LinRec inference: an (N, d)
# slice; Linformer: an (N, k_proj) probability block): a block's working set then stays in a
# core's L2 cache (2 MB and up on current x86 / ARM servers) instead of streaming through DRAM.


def _elu_into(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """elu(x) = max(x, exp(min(x, 0)) - 1) written into `out`.

    exp is vectorised where ATen's elu (expm1) is several times slower on CPU; the
    cancellation in exp(x) - 1 costs at most ~6e-8 absolute error near 0.
    """
    torch.clamp_max(x, 0.0, out=out).exp_().sub_(1.0)
    return torch.maximum(x, out, out=out)


def _linrec_bidirectional_inference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, real: torch.Tensor | None
) -> torch.Tensor:
    """The bidirectional paper form without autograd, run over blocks that fit in cache.

    Same maths as the general path (rho_col on the (d, e) state, rho_row on the output), but
    each block of (batch, head) slices goes through ELU, norms and both products while it is
    in L2, with reused scratch buffers and in-place scaling: the eager general path makes
    ~10 passes over memory and allocates fresh (page-faulting) buffers for each.
    """
    batch, heads, length, dim = q.shape
    out = torch.empty(batch, heads, length, v.shape[-1], dtype=q.dtype, device=q.device)
    n_real = (
        torch.full((batch, 1, 1), float(length), device=q.device) if real is None else real.sum(dim=2).clamp_min(1.0)
    )  # (B, 1, 1)
    per_head = length * dim * q.element_size()
    heads_step = min(heads, max(1, common.CACHE_BLOCK_BYTES // per_head))
    batch_step = max(1, common.CACHE_BLOCK_BYTES // (heads * per_head)) if heads_step == heads else 1
    fq_buffer = torch.empty(batch_step, heads_step, length, dim, dtype=q.dtype, device=q.device)
    fk_buffer = torch.empty_like(fq_buffer)
    for b0 in range(0, batch, batch_step):
        rows = slice(b0, min(b0 + batch_step, batch))
        for h0 in range(0, heads, heads_step):
            cols = slice(h0, min(h0 + heads_step, heads))
            shape = (rows.stop - rows.start, cols.stop - cols.start)
            fq = _elu_into(q[rows, cols], fq_buffer[: shape[0], : shape[1]])  # (b, h, N, d)
            fk = _elu_into(k[rows, cols], fk_buffer[: shape[0], : shape[1]])
            if real is not None:
                fk.mul_(real[rows])
            inv_col_norm = (
                torch.linalg.vector_norm(fk, dim=2).mul_(n_real[rows].sqrt()).clamp_min_(NORM_EPS).reciprocal_()
            )  # (b, h, d)
            state = torch.matmul(fk.transpose(-1, -2), v[rows, cols]).mul_(inv_col_norm[..., None])  # (b, h, d, e)
            inv_row_norm = (
                torch.linalg.vector_norm(fq, dim=-1, keepdim=True)
                .mul_(math.sqrt(dim))
                .clamp_min_(NORM_EPS)
                .reciprocal_()
            )  # (b, h, N, 1)
            block_out = out[rows, cols]
            torch.matmul(fq, state, out=block_out)
            block_out.mul_(inv_row_norm)
            if real is not None:
                block_out.mul_(real[rows])
    return out


@functools.cache
def compiled_linrec_attention():
    """linrec_attention through torch.compile (Inductor: C++/OpenMP on CPU, Triton on GPU).

    Opt-in (the first call per shape compiles, ~30-60 s on a small CPU); same arguments,
    same results within float rounding (tests/test_compiled.py).
    """
    return torch.compile(linrec_attention)
