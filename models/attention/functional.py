"""Attention kernels on per-head tensors.

Every kernel takes q, k, v of shape (B, H, N, d) and returns (B, H, N, d_v).
`key_padding_mask` is (B, N) bool with True = real item; padded positions never
influence real outputs, and outputs at padded positions are zero.

Einsum / shape legend:
    B batch, H heads, N sequence length, d head dim (q, k), e value dim,
    n number of chunks, C chunk length, m random features, k_proj Linformer length.

The linear kernels never build an N x N matrix nor a (B, H, N, d, d) tensor:
causal ones run chunk by chunk (an intra-chunk masked product plus an
inter-chunk prefix state of shape (B, H, N / C, d, e)), which is O(N * d) memory
as long as C >= d.

Maths and references: ../shared/docs/SPEC.md (sections 1-2) and README.md.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "CAUSAL_BACKENDS",
    "DEFAULT_CHUNK_SIZE",
    "LINREC_VARIANTS",
    "causal_linear_attention",
    "compiled_linrec_attention",
    "efficient_attention",
    "linear_attention",
    "linformer_attention",
    "linrec_attention",
    "orthogonal_random_features",
    "performer_attention",
    "performer_features",
    "recompute_in_blocks",
    "sdpa_attention",
    "softmax_attention",
]

LINREC_VARIANTS = ("paper", "official")
DEFAULT_CHUNK_SIZE = 32  # fastest on CPU at d = 16 (B=8, H=8, N=4096 fwd+bwd); keep C >= d
# Smallest norm / normaliser the kernels divide by. Squared it must stay a
# normal float32/bfloat16 number (both have float32's exponent range).
NORM_EPS = 1e-12
# Largest exponent the chunked causal Efficient Attention lets a key factor reach.
_EFFICIENT_MAX_EXPONENT = 30.0


# --------------------------------------------------------------------------- helpers


def _real_positions(key_padding_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """(B, N) bool mask -> (B, 1, N, 1) float in like's dtype (1 = real), or None."""
    if key_padding_mask is None:
        return None
    if key_padding_mask.dtype != torch.bool:
        raise TypeError(f"key_padding_mask must be a bool tensor (True = real item), got {key_padding_mask.dtype}")
    batch, _, length, _ = like.shape
    if key_padding_mask.shape != (batch, length):
        raise ValueError(
            f"key_padding_mask must have shape (B, N) = {(batch, length)}, got {tuple(key_padding_mask.shape)}"
        )
    return key_padding_mask[:, None, :, None].to(like.dtype)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32 for statistics and exponentials; fp32/fp64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, N, d); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"q and k must match and v must share (B, H, N); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def _safe_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm kept >= NORM_EPS, with a finite gradient at x = 0 (clamp before sqrt)."""
    return x.square().sum(dim, keepdim=True).clamp_min(NORM_EPS**2).sqrt()


def _zero_padded_rows(out: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    return out if real is None else out * real.to(out.dtype)


def _split_chunks(x: torch.Tensor, chunk_size: int, fill: float = 0.0) -> torch.Tensor:
    """(B, H, N, d) -> (B, H, n, C, d), padding N up to a multiple of C with `fill`."""
    batch, heads, length, dim = x.shape
    pad = (-length) % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, pad), value=fill)
    return x.reshape(batch, heads, -1, chunk_size, dim)  # (B, H, n, C, d)


def _merge_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, H, n, C, e) -> (B, H, N, e)."""
    batch, heads, n_chunks, chunk, dim = x.shape
    return x.reshape(batch, heads, n_chunks * chunk, dim)[:, :, :length]  # (B, H, N, e)


# --------------------------------------------------------------------------- causal linear core


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
        qc = _split_chunks(q, chunk_size)  # (B, H, n, C, d)
        kc = _split_chunks(k, chunk_size)
        vc = _split_chunks(v, chunk_size)  # (B, H, n, C, e)
        chunk_states = kc.transpose(-1, -2) @ vc  # (B, H, n, d, e)
        # exclusive prefix over chunks: the state seen by chunk t sums chunks < t
        prefix_states = chunk_states.cumsum(dim=2).sub_(chunk_states)  # (B, H, n, d, e)
        scores = (qc @ kc.transpose(-1, -2)).tril_()  # (B, H, n, C, C)
        out = torch.baddbmm((scores @ vc).flatten(0, 2), qc.flatten(0, 2), prefix_states.flatten(0, 2))  # (B*H*n, C, e)
        ctx.save_for_backward(qc, kc, vc, prefix_states)
        ctx.length = length
        return _merge_chunks(out.view(*qc.shape[:-1], vc.shape[-1]), length)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        qc, kc, vc, prefix_states = ctx.saved_tensors
        gc = _split_chunks(grad_out, qc.shape[-2])  # (B, H, n, C, e)
        scores = (qc @ kc.transpose(-1, -2)).tril_()  # recomputed A: (B, H, n, C, C)
        grad_scores = (gc @ vc.transpose(-1, -2)).tril_()  # (B, H, n, C, C)
        state_grads = qc.transpose(-1, -2) @ gc  # (B, H, n, d, e): Q_t^T dO_t
        # R_t = sum over later chunks t' > t (reverse exclusive prefix)
        later_grads = state_grads.sum(dim=2, keepdim=True) - state_grads.cumsum(dim=2)  # (B, H, n, d, e)
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
            _merge_chunks(grad_q.view_as(qc), length),
            _merge_chunks(grad_k.view_as(kc), length),
            _merge_chunks(grad_v.view_as(vc), length),
            None,
        )


def _linear_attention_core(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, chunk_size: int, backend: str = "torch"
) -> torch.Tensor:
    """Unnormalised linear attention: q (k^T v) or its causal prefix form."""
    if causal:
        return causal_linear_attention(q, k, v, chunk_size, backend)
    # The state is built as (v^T k)^T so that autograd's gradient for k, v^T-times-grad, comes
    # out (N, d) contiguous; k^T v would hand back grad_k transposed and cost a copy per call.
    return q @ (v.transpose(-1, -2) @ k).transpose(-1, -2)  # (B, H, N, e) via a (B, H, d, e) state


def _normalised_linear_attention(fq, fk, v, causal: bool, chunk_size: int, eps: float) -> torch.Tensor:
    """phi(q)^T S_i / (phi(q)^T z_i): numerator and normaliser in one pass (v gets a ones column)."""
    ones = torch.ones_like(v[..., :1])
    out = _linear_attention_core(fq, fk, torch.cat([v, ones], dim=-1), causal, chunk_size)  # (B, H, N, e + 1)
    # split (not slicing) and a reciprocal: the backward writes one (N, e + 1) gradient, no zero-filled copies
    numerator, normaliser = out.split([v.shape[-1], 1], dim=-1)
    return numerator * normaliser.clamp_min(eps).reciprocal()


# --------------------------------------------------------------------------- softmax baselines


def softmax_attention(
    q, k, v, *, causal: bool = False, key_padding_mask=None, dropout_p: float = 0.0, training: bool = False
):
    """Materialised softmax(q k^T / sqrt(d) + masks) v: the dense reference (O(N^2) memory)."""
    _check_qkv(q, k, v)
    length, dim = q.shape[-2], q.shape[-1]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dim)  # (B, H, N, N)
    allowed = _allowed_pairs(key_padding_mask, causal, length, q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0 and training:
        probs = F.dropout(probs, dropout_p)
    return _zero_padded_rows(probs @ v, _real_positions(key_padding_mask, q))


def _allowed_pairs(key_padding_mask, causal: bool, length: int, device) -> torch.Tensor | None:
    """Bool (B or 1, 1, N, N): may query i look at key j? Every row keeps its diagonal,
    so a padded query row is never empty (its output is zeroed afterwards): no NaN."""
    if key_padding_mask is None and not causal:
        return None
    allowed = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril()
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)
    return allowed


def sdpa_attention(
    q, k, v, *, causal: bool = False, key_padding_mask=None, dropout_p: float = 0.0, training: bool = False
):
    """The same maths through torch's fused scaled_dot_product_attention.

    Without padding it passes is_causal and no mask, so the flash kernels stay eligible;
    with padding it passes a boolean mask (flash refuses explicit masks: the
    memory-efficient or math kernel runs instead).
    """
    _check_qkv(q, k, v)
    dropout_p = dropout_p if training else 0.0
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout_p)
    allowed = _allowed_pairs(key_padding_mask, causal, q.shape[-2], q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    return _zero_padded_rows(out, _real_positions(key_padding_mask, q))


# --------------------------------------------------------------------------- memory-saving backward


def recompute_in_blocks(
    kernel,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    heads_per_block: int,
) -> torch.Tensor:
    """Run `kernel(q, k, v, mask)` one (batch element, head group) block at a time, keeping
    nothing but q, k, v for the backward, which recomputes each block's forward.

    Peak memory becomes the output plus one block's intermediates (instead of every
    intermediate of the whole batch), for one extra forward pass. The kernel must be
    deterministic and treat batch elements and heads independently (all of ours do).
    """
    return _BlockwiseRecompute.apply(kernel, heads_per_block, key_padding_mask, q, k, v)


def _blocks(q: torch.Tensor, heads_per_block: int):
    for b in range(q.shape[0]):
        for h in range(0, q.shape[1], heads_per_block):
            yield slice(b, b + 1), slice(h, h + heads_per_block)


class _BlockwiseRecompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, heads_per_block, mask, q, k, v):
        out = v.new_empty(v.shape)
        for batch, heads in _blocks(q, heads_per_block):
            block_mask = None if mask is None else mask[batch]
            out[batch, heads] = kernel(q[batch, heads], k[batch, heads], v[batch, heads], block_mask)
        ctx.save_for_backward(q, k, v)
        ctx.kernel, ctx.heads_per_block, ctx.mask = kernel, heads_per_block, mask
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (q, k, v)]
        for batch, heads in _blocks(q, ctx.heads_per_block):
            block_mask = None if ctx.mask is None else ctx.mask[batch]
            with torch.enable_grad():
                inputs = [t[batch, heads].detach().requires_grad_(True) for t in (q, k, v)]
                out = ctx.kernel(*inputs, block_mask)
                block_grads = torch.autograd.grad(out, inputs, grad_out[batch, heads])
            for grad, block_grad in zip(grads, block_grads, strict=False):
                grad[batch, heads] = block_grad
        return None, None, None, *grads


# --------------------------------------------------------------------------- LinRec


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
    backend: str = "torch",
) -> torch.Tensor:
    """LinRec (Liu et al., SIGIR 2023), q, k, v (B, H, N, d) -> (B, H, N, d).

    variant="paper"    rho_row(elu(Q)) (rho_col(elu(K))^T V): rows of elu(Q) scaled to
                       norm 1/sqrt(d), columns of elu(K) to norm 1/sqrt(n) over the n real
                       positions. Causal: the exact prefix form (SPEC 1c), i.e. a causal
                       linear attention whose queries are divided by sqrt(n_i) * s_i,
                       s_i the prefix column norms of elu(K).
    variant="official" the authors' code: elu(Q), elu(K) L2-normalised per token, / sqrt(d).
                       NOTE: the original ignores every mask; here padded keys are dropped
                       and causal=True uses the prefix sum, i.e. the masked form of the
                       same formula.
    recompute_heads    when set, the memory-saving path (recompute_in_blocks): blocks of
                       that many heads of one batch element, recomputed in the backward.
    backend            the causal prefix product: "torch" (chunked, hand-written backward) or
                       "fla" (flash-linear-attention, CUDA); LinRec causal is a causal linear
                       attention with rescaled queries, so it maps onto fla exactly.
                       Bidirectional LinRec has no prefix product and ignores it.
    """
    _check_qkv(q, k, v)
    if variant not in LINREC_VARIANTS:
        raise ValueError(f"linrec: unknown variant {variant!r}; expected one of {LINREC_VARIANTS}")
    if backend not in CAUSAL_BACKENDS:
        raise ValueError(f"linrec: unknown backend {backend!r}; expected one of {CAUSAL_BACKENDS}")
    if recompute_heads:
        if key_padding_mask is not None:
            _real_positions(key_padding_mask, q)  # validate before the blocks slice it

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
    real = _real_positions(key_padding_mask, q)
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
    fq, fk = F.elu(_at_least_fp32(q)), F.elu(_at_least_fp32(k))
    if real is not None:
        fk = fk * real.to(fk.dtype)

    if variant == "official":
        q_hat = fq / _safe_norm(fq, -1)
        k_hat = fk / _safe_norm(fk, -1)
        out = _linear_attention_core(q_hat.to(q.dtype), k_hat.to(k.dtype), v, causal, chunk_size, backend) / math.sqrt(
            dim
        )
        return _zero_padded_rows(out, real)

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
        return _zero_padded_rows(out, real)

    inv_n_prefix = count.expand(q.shape[0], 1, -1, 1).cumsum(dim=-2).clamp_min(1.0).rsqrt()  # (B, 1, N, 1): 1/sqrt(n_i)
    q_scaled = _CausalLinRecQueries.apply(fq, fk, inv_n_prefix)
    out = causal_linear_attention(q_scaled.to(q.dtype), fk.to(k.dtype), v, chunk_size, backend)
    return _zero_padded_rows(out, real)


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
_CACHE_BLOCK_BYTES = 1 << 20


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
    heads_step = min(heads, max(1, _CACHE_BLOCK_BYTES // per_head))
    batch_step = max(1, _CACHE_BLOCK_BYTES // (heads * per_head)) if heads_step == heads else 1
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


# --------------------------------------------------------------------------- Katharopoulos linear


def linear_attention(
    q, k, v, *, causal: bool = False, key_padding_mask=None, chunk_size: int = DEFAULT_CHUNK_SIZE, eps: float = 1e-6
):
    """Linear Transformer (Katharopoulos et al., ICML 2020): phi = elu + 1."""
    _check_qkv(q, k, v)
    real = _real_positions(key_padding_mask, q)
    fq, fk = F.elu(q) + 1.0, F.elu(k) + 1.0
    if real is not None:
        fk = fk * real
    return _zero_padded_rows(_normalised_linear_attention(fq, fk, v, causal, chunk_size, eps), real)


# --------------------------------------------------------------------------- Efficient Attention


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
    _check_qkv(q, k, v)
    real = _real_positions(key_padding_mask, q)
    dtype = q.dtype
    q, k, v = _at_least_fp32(q), _at_least_fp32(k), _at_least_fp32(v)
    q_soft = q.softmax(dim=-1)
    very_negative = -1e30  # finite, so no inf - inf in gradients
    if real is not None:
        k = torch.where(real.bool(), k, very_negative)
    if not causal:
        k_soft = k.softmax(dim=-2)  # over positions
        if real is not None:
            k_soft = k_soft * real  # a fully padded row softmaxes to uniform: drop it
        out = q_soft @ (k_soft.transpose(-1, -2) @ v)
        return _zero_padded_rows(out, real).to(dtype)

    length = q.shape[2]
    log_z = torch.logcumsumexp(k, dim=-2)  # (B, H, N, d)
    real_bool = real.bool() if real is not None else torch.ones_like(k[..., :1], dtype=torch.bool)
    qc = _split_chunks(q_soft, chunk_size)  # (B, H, n, C, d)
    kc = _split_chunks(k, chunk_size, fill=very_negative)
    vc = _split_chunks(v, chunk_size)  # (B, H, n, C, e)
    log_zc = _split_chunks(log_z, chunk_size, fill=0.0)
    realc = _split_chunks(real_bool.expand(-1, q.shape[1], -1, -1).float(), chunk_size).bool()  # (B, H, n, C, 1)

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
    return _zero_padded_rows(_merge_chunks(out, length), real).to(dtype)


# --------------------------------------------------------------------------- Performer (FAVOR+)


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


def performer_attention(
    q,
    k,
    v,
    projection: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask=None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    eps: float = 1e-15,
):
    """Performer FAVOR+ (Choromanski et al., ICLR 2021) with fixed projection (m, d)."""
    _check_qkv(q, k, v)
    real = _real_positions(key_padding_mask, q)
    dtype = q.dtype
    q, k, v = _at_least_fp32(q), _at_least_fp32(k), _at_least_fp32(v)
    fq = performer_features(q, projection.to(q.dtype), is_query=True)
    fk = performer_features(k, projection.to(q.dtype), is_query=False)
    if real is not None:
        fk = fk * real.to(fk.dtype)
    out = _normalised_linear_attention(fq, fk, v, causal, chunk_size, eps)
    return _zero_padded_rows(out, real).to(dtype)


# --------------------------------------------------------------------------- Linformer


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
    _check_qkv(q, k, v)
    length, dim = q.shape[2], q.shape[-1]
    if length > key_projection.shape[1]:
        raise ValueError(f"linformer: sequence length {length} exceeds max_len {key_projection.shape[1]}")
    real = _real_positions(key_padding_mask, q)
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
        return _zero_padded_rows(probs @ v_proj, real)
    batch, heads = q.shape[:2]
    out = _BlockwiseLowRankSoftmax.apply(
        *(x.reshape(batch * heads, *x.shape[2:]) for x in (q, k_proj, v_proj))
    )  # (B*H, N, e)
    return _zero_padded_rows(out.view(batch, heads, length, -1), real)


class _BlockwiseLowRankSoftmax(torch.autograd.Function):
    """softmax(q kp^T) vp for q (G, N, d), kp (G, P, d), vp (G, P, e), a few (batch, head) slices at a time.

    The (N, P) probabilities exist one block at a time, sized to stay in cache, and are
    recomputed in the backward instead of stored (as FlashAttention does over keys): the
    unblocked form writes and re-reads four (B, H, N, P) tensors, hundreds of MB at N = 4096.
    Softmax backward uses rowsum(dP * P) = rowsum(dO * O), so O is all it keeps.
    """

    @staticmethod
    def _step(q: torch.Tensor, kp: torch.Tensor) -> int:
        return max(1, _CACHE_BLOCK_BYTES // max(1, q.shape[1] * kp.shape[1] * q.element_size()))

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
