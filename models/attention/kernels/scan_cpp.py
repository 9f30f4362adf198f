"""The recurrent mixers' scans and the causal forms of Efficient Attention, linear attention (with elu + 1 or
Performer's features) and retention as fused C++ walks on the CPU (source: scan_cpu.cpp), forward and backward.

The PyTorch paths (kernels/lru.py: chunked powers of lambda; kernels/mamba.py: one Python step per position) stay the
references these are tested against (values, fp64 gradients). Here one walk per (sequence, block of channels) keeps
the state in registers:

- LRU: h_t = lam h_{t-1} + u_t, complex, on the real views of u and lam; the states are the output and all the
  backward needs.
- Mamba: h_t = exp(delta_t A) h_{t-1} + dx_t b_t, y_t = c_t . h_t; the forward keeps the state entering every
  MAMBA_CHUNK-th position only ((B, N / 64, E, S), not the (B, N, E, S) states), the backward recomputes a chunk at a
  time from it.
- Causal Efficient Attention (kernels/efficient.py is its reference): per feature, the keys' softmax over the prefix
  as a running weighted mean of the values (an online softmax: every exponent <= 0); the forward keeps only the
  (B, H, N, d) log-normalisers, the backward walks forward once more (for d a) and then in reverse (d k, d v).
- Causal linear attention (kernels/linear.py, kernels/causal.py are its reference): the (d, e) state and the (d,)
  key sum walked position by position, the elu + 1 features computed in the walk (their slope is the feature itself
  below 0); the forward keeps the (B, H, N) normalisers, the backward walks as above.
- Causal Performer (kernels/performer.py is its reference): the same walk on FAVOR+ features (m of them) made from
  the projection inside it; the forward keeps them ((B, H, N, m) twice: remaking costs m d multiply-adds a row), the
  backward maps their gradients back onto q and k (softmax's and exp's Jacobians, then the projection).
- Causal retention (kernels/retention.py is its reference): the (d, e) state decayed by the head's fixed gamma at
  every position, padded ones included, the decay sum alongside; the forward keeps nothing (the decay sums do not
  depend on the data), the backward walks forward (d q) and in reverse (d k, d v).

Jobs (sequence x channel block) run in parallel (at::parallel_for, OpenMP). float32 and float64 (for gradcheck).
"""

from __future__ import annotations

import torch

from .cpp_build import CppKernel, warn_fallback

_CPP_DECLARATIONS = r"""
torch::Tensor lru_forward(torch::Tensor u, torch::Tensor lam);
std::vector<torch::Tensor> lru_backward(torch::Tensor gh, torch::Tensor h, torch::Tensor lam);
std::vector<torch::Tensor> mamba_forward(torch::Tensor dx, torch::Tensor delta, torch::Tensor a, torch::Tensor b,
                                         torch::Tensor c, int64_t chunk, bool keep);
std::vector<torch::Tensor> mamba_backward(torch::Tensor gy, torch::Tensor dx, torch::Tensor delta, torch::Tensor a,
                                          torch::Tensor b, torch::Tensor c, torch::Tensor kept, int64_t chunk);
std::vector<torch::Tensor> efficient_forward(torch::Tensor a, torch::Tensor k, torch::Tensor v, torch::Tensor real);
std::vector<torch::Tensor> efficient_backward(torch::Tensor g, torch::Tensor a, torch::Tensor k, torch::Tensor v,
                                              torch::Tensor real, torch::Tensor logz, std::vector<torch::Tensor> grads);
std::vector<torch::Tensor> linear_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                          double eps);
std::vector<torch::Tensor> linear_backward(torch::Tensor g, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                           torch::Tensor real, torch::Tensor den, double eps,
                                           std::vector<torch::Tensor> grads);
std::vector<torch::Tensor> performer_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                             torch::Tensor projection, double eps);
std::vector<torch::Tensor> performer_backward(torch::Tensor g, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                              torch::Tensor real, torch::Tensor den, torch::Tensor fq,
                                              torch::Tensor fk, torch::Tensor projection, double eps,
                                              std::vector<torch::Tensor> grads);
std::vector<torch::Tensor> retention_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                             torch::Tensor gamma);
std::vector<torch::Tensor> retention_backward(torch::Tensor g, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                              torch::Tensor real, torch::Tensor gamma,
                                              std::vector<torch::Tensor> grads);
"""
KERNEL = CppKernel(
    "scan",
    "the fused C++ scans and causal attention walks",
    "scan_cpu.cpp",
    _CPP_DECLARATIONS,
    [
        *("lru_forward", "lru_backward", "mamba_forward", "mamba_backward"),
        *("efficient_forward", "efficient_backward", "linear_forward", "linear_backward"),
        *("performer_forward", "performer_backward", "retention_forward", "retention_backward"),
    ],
    "_scan_cpu",
)
extension_error = KERNEL.error


def prepare_scans(device: str) -> None:
    """Build the scans now, where the first call on `device` would (once per machine, about a minute)."""
    if torch.device(device).type == "cpu":
        extension_error()


MAMBA_CHUNK = 64  # positions between the states the forward keeps for the backward
SCAN_DTYPES = (torch.float32, torch.float64)


def applies(like: torch.Tensor) -> bool:
    """Whether the fused scans can run on tensors like this one: CPU, float32/float64 (complex64/128 for the LRU)."""
    real = torch.empty(0, dtype=like.dtype).real.dtype if like.is_complex() else like.dtype
    return like.device.type == "cpu" and real in SCAN_DTYPES


class _LRUScan(torch.autograd.Function):
    """u (B, N, P) complex, lam (P,) complex -> h (B, N, P): h_t = lam h_{t-1} + u_t."""

    @staticmethod
    def forward(ctx, u, lam):
        u_real = torch.view_as_real(u.resolve_conj().contiguous())  # (B, N, P, 2)
        lam_real = torch.view_as_real(lam.resolve_conj().contiguous())  # (P, 2)
        h = KERNEL.module().lru_forward(u_real, lam_real)
        ctx.save_for_backward(h, lam_real)
        return torch.view_as_complex(h)

    @staticmethod
    def backward(ctx, grad):
        h, lam_real = ctx.saved_tensors
        grad_real = torch.view_as_real(grad.resolve_conj().contiguous())
        du, dlam = KERNEL.module().lru_backward(grad_real, h, lam_real)
        return torch.view_as_complex(du), torch.view_as_complex(dlam.contiguous())


def lru_scan_cpp(u: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The LRU recurrence h_t = lam h_{t-1} + u_t over dim 1 of u (B, N, P), complex."""
    return _LRUScan.apply(u, lam)


class _SelectiveScan(torch.autograd.Function):
    """dx, delta (B, N, E); a (E, S); b, c (B, N, S) -> y (B, N, E), as kernels/mamba.py's _SelectiveScan."""

    @staticmethod
    def forward(ctx, dx, delta, a, b, c):
        inputs = [t.contiguous() for t in (dx, delta, a, b, c)]
        y, kept = KERNEL.module().mamba_forward(*inputs, MAMBA_CHUNK, any(ctx.needs_input_grad))
        ctx.save_for_backward(*inputs, kept)
        return y

    @staticmethod
    def backward(ctx, grad):
        *inputs, kept = ctx.saved_tensors
        return tuple(KERNEL.module().mamba_backward(grad.contiguous(), *inputs, kept, MAMBA_CHUNK))


def selective_scan_cpp(dx, delta, a, b, c) -> torch.Tensor:
    return _SelectiveScan.apply(dx, delta, a, b, c)


class _CausalWalk(torch.autograd.Function):
    """One causal attention walk of the extension, `walk` naming its pair of entry points: forward(q, k, v, real,
    *extra) -> (out, *kept) and backward(grad, q, k, v, real, *kept, *extra, grads), which fills grads = (d q, d k,
    d v). q, k, v (B, H, N, .) are read where they lie (views of the packed projection: no copy), or come packed as
    qkv (B, N, 3, H, d) (k = v = None), whose gradient the walk then writes as one (B, N, 3, H, d) tensor: autograd
    neither stacks three gradients nor copies them into the projection's layout. The output (B, H, N, e) is a view of
    a (B, N, H, e) tensor, which the output projection reads without a copy."""

    @staticmethod
    def forward(ctx, walk, q, k, v, real, *extra):
        packed = k is None
        inputs = _split(q) if packed else [_rows(t) for t in (q, k, v)]
        out, *kept = getattr(KERNEL.module(), f"{walk}_forward")(*inputs, real, *extra)
        tensors = [t for t in extra if isinstance(t, torch.Tensor)]
        ctx.save_for_backward(*inputs, real, *kept, *tensors)
        ctx.walk, ctx.packed_shape, ctx.kept = walk, q.shape if packed else None, len(kept)
        ctx.extra = [None if isinstance(t, torch.Tensor) else t for t in extra]  # numbers; tensors saved above
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, real, *rest = ctx.saved_tensors
        kept, tensors = rest[: ctx.kept], iter(rest[ctx.kept :])
        extra = [next(tensors) if t is None else t for t in ctx.extra]
        if ctx.packed_shape is not None:
            packed = q.new_empty(ctx.packed_shape)  # (B, N, 3, H, d): every element written by the walk
            grads = _split(packed)
        else:
            grads = [torch.empty(t.shape, dtype=t.dtype) for t in (q, k, v)]
        getattr(KERNEL.module(), f"{ctx.walk}_backward")(_rows(grad), q, k, v, real, *kept, *extra, grads)
        inputs = (packed, None, None) if ctx.packed_shape is not None else tuple(grads)
        return (None, *inputs, None, *(None for _ in ctx.extra))


def _split(qkv: torch.Tensor) -> list[torch.Tensor]:
    """(B, N, 3, H, d) -> [q, k, v], each a (B, H, N, d) view"""
    return list(qkv.permute(2, 0, 3, 1, 4).unbind(0))


def _walk(walk: str, q, k, v, real: torch.Tensor | None, *extra) -> torch.Tensor:
    like = _split(q)[0] if k is None else q
    return _CausalWalk.apply(walk, q, k, v, _real_rows(real, like), *extra)


def causal_efficient_cpp(q, k, v, real: torch.Tensor | None) -> torch.Tensor:
    """q, k (B, H, N, d), v (B, H, N, e); real (B, N) bool or uint8 (True = real; None: all real) -> out (B, H, N, e):
    the prefix softmax of the keys per feature, read by the query's softmax over features, made in the walk
    (kernels/efficient.py's causal form); padded rows come out 0. Or q the packed projection and k = v = None."""
    return _walk("efficient", q, k, v, real)


def causal_linear_cpp(q, k, v, real: torch.Tensor | None, eps: float) -> torch.Tensor:
    """elu(q) + 1 and elu(k) + 1 made inside the walk; phi(q)^T S_i / max(phi(q) . z_i, eps) with real (B, N) bool
    or uint8 (True = real; None: all real); padded rows come out 0. q, k (B, H, N, d), v (B, H, N, e); or q the
    packed projection (B, N, 3, H, d) and k = v = None."""
    return _walk("linear", q, k, v, real, eps)


def causal_performer_cpp(q, k, v, real: torch.Tensor | None, projection: torch.Tensor, eps: float) -> torch.Tensor:
    """Performer's causal form (kernels/performer.py's performer_attention with causal=True) as one walk:
    projection (m, d), the FAVOR+ features made inside it and kept for the backward, which maps their gradients back
    onto q and k (no gradient for the fixed projection); padded rows come out 0. q, k, v as causal_linear_cpp's."""
    return _walk("performer", q, k, v, real, projection.detach().to(q.dtype).contiguous(), eps)


def causal_retention_cpp(q, k, v, real: torch.Tensor | None, gamma: torch.Tensor) -> torch.Tensor:
    """kernels/retention.py's causal form (q scaled by d^-1/2, rows by the decay sums' rsqrt, padded rows 0) as one
    walk; real (B, N) bool or uint8 (True = real; None: all real); gamma (H,) the fixed per-head decays (no
    gradient). q, k, v as causal_linear_cpp's."""
    return _walk("retention", q, k, v, real, gamma.detach().to(q.dtype).contiguous())


def _real_rows(real: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B, N) uint8, 1 = a real position, from a key padding mask (True = real) or None (every position real)."""
    if real is None:
        return torch.ones(like.shape[0], like.shape[2], dtype=torch.uint8)
    return real.to(torch.uint8).contiguous()


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t itself where its last dim is contiguous (any other strides), else a contiguous copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


def resolve_scan_backend(
    mechanism: str, backend: str, like: torch.Tensor, fallback: str = "torch", kernel: str = "scan"
) -> str:
    """ "auto" -> "cpp" where the fused scans apply (CPU, float32/64) and the extension builds, else `fallback`; a
    named "cpp" that cannot run here is refused in one line (when the layer is built, not at its first call)."""
    if backend == "cpp":
        if not applies(like):
            raise ValueError(f"{mechanism}: backend='cpp' runs on CPU float32/float64 tensors, got {like.device.type}")
        if extension_error() is not None:
            raise RuntimeError(f"{mechanism}: backend='cpp' is unavailable here ({extension_error()})")
        return "cpp"
    if backend == "auto" and applies(like):
        if extension_error() is None:
            return "cpp"
        _warn_no_extension(mechanism, extension_error(), kernel)
    return fallback if backend == "auto" else backend


WALK_BACKENDS = ("auto", "torch", "cpp")


def resolve_walk_backend(mechanism: str, backend: str, like: torch.Tensor, causal: bool) -> str:
    """For the attentions whose causal form has a C++ walk here (efficient, linear, performer, retention): "auto" ->
    the walk on a CPU where it builds, else "torch"; the bidirectional form has one path, "torch"."""
    if backend not in WALK_BACKENDS:
        raise ValueError(f"{mechanism}: unknown backend {backend!r}; expected one of {', '.join(WALK_BACKENDS)}")
    if not causal:
        if backend == "cpp":
            raise ValueError(
                f"{mechanism}: backend='cpp' is the causal form's walk; the bidirectional form runs 'torch'"
            )
        return "torch"
    return resolve_scan_backend(mechanism, backend, like, kernel="walk")


def _warn_no_extension(mechanism: str, reason: str, kernel: str) -> None:
    warn_fallback(f"{mechanism}: the fused C++ {kernel}", reason)
