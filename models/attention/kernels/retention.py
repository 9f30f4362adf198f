"""Multi-scale retention (RetNet): linear attention whose past fades by a fixed factor per head, chunk by chunk.

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models", 2023,
https://arxiv.org/abs/2307.08621

Per head with decay gamma, over the real positions j <= i (causal):

    S_i = gamma S_{i-1} + k_i v_i^T            (d x e state)
    o_i = (q_i / sqrt(d))^T S_i / sqrt(r_i),   r_i = sum_{real j <= i} gamma^(i - j)

i.e. out = ((Q K^T / sqrt(d)) * D) V with D_ij = gamma^(i - j) for j <= i, rows of D scaled by 1 / sqrt(r_i) (RetNet's
normalised decay matrix). Bidirectional: D_ij = gamma^|i - j|, computed as a forward and a backward pass whose
shared diagonal is counted once. Chunks of C positions, all at once: inside a chunk the masked C x C product, across
chunks the states by one decayed prefix over chunks (blocks of chunks by small matrix products, no Python loop
over chunks): O(N C d + N d^2) time, O(N C + N d^2 / C) memory, no N x N matrix. The normaliser r_i in closed form
where padding is on one side only.

NOTE: RetNet's block also normalises each head's output (GroupNorm), gates it (swish) and scales the score rows by
their absolute sum; those belong to its block, not to the mixer compared here (the encoder's LayerNorms follow).
Decay counts positions: padded positions hold no key or value, so left and right padding change nothing, but
padding inside a sequence would count as elapsed steps.

On CUDA with flash-linear-attention installed, `backend="auto"` hands the decayed products to its chunked kernel
(chunk_simple_gla, a constant per-head log decay as its gate); the normaliser r_i (one column) stays here. On a CPU
the causal form runs as one fused C++ walk (kernels/scan_cpp.py: the (d, e) state decayed position by position, the
same r_i alongside), tested against the chunked pass here.
"""

from __future__ import annotations

import torch

from .common import (
    DEFAULT_CHUNK_SIZE,
    OptionalKernel,
    at_least_fp32,
    check_qkv,
    merge_chunks,
    real_positions,
    split_chunks,
)
from .scan_cpp import causal_retention_cpp, resolve_walk_backend

# flash-linear-attention's kernels are Triton (GPU) kernels
FLA_SIMPLE_GLA = OptionalKernel("fla", "fla.ops.simple_gla", "chunk_simple_gla", "flash-linear-attention")
RETENTION_BACKENDS = ("auto", "torch", "cpp", FLA_SIMPLE_GLA.name)

# RetNet's per-head decays: gamma_h = 1 - 2^(-5 - h), the first head remembering ~32 steps, each next one twice as long
MAX_DECAY_EXPONENT = 5


def retention_decays(heads: int, device=None) -> torch.Tensor:
    """(H,) gamma_h = 1 - 2^(-5 - h * 7 / max(H - 1, 1)): from ~32 to ~4096 steps of memory, whatever H is."""
    spread = torch.arange(heads, dtype=torch.float64) * 7 / max(heads - 1, 1)
    return (1 - 2.0 ** (-MAX_DECAY_EXPONENT - spread)).to(device=device, dtype=torch.float32)


PREFIX_BLOCK = 32  # chunk states summed per block by one small matrix product; blocks of blocks recursively


def _decayed_prefix(states: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """X_t = sum_{t' <= t} decay^(t - t') U_t' over dim 2 of U (B, H, n, d, e), decay (H,), with no loop over t.

    Blocks of m states: inside a block, one product with the (m, m) matrix decay^(a - b) [b <= a]; across blocks,
    the same prefix over the blocks' totals (decay^m per block) by recursion, log_m(n) levels in all. Every weight is
    a power <= 1 of the decay, so nothing overflows (a cumsum rescaled by decay^-t overflows fp32 after a few
    thousand positions) and all the work is matrix products."""
    batch, heads, n, d, e = states.shape
    m = min(PREFIX_BLOCK, n)
    blocks = -(-n // m)
    flat = states.reshape(batch, heads, n, d * e)  # (B, H, n, de)
    if blocks * m != n:
        flat = torch.nn.functional.pad(flat, (0, 0, 0, blocks * m - n))
    flat = flat.view(batch, heads, blocks, m, d * e)  # (B, H, nb, m, de)
    steps = torch.arange(m, device=states.device, dtype=states.dtype)
    decay = decay.to(states.dtype)[:, None, None]  # (H, 1, 1); powers, not exp(log): a decay may underflow to 0
    gap = steps[:, None] - steps[None, :]
    inside = decay ** gap.clamp_min(0) * (gap >= 0)  # (H, m, m)
    local = inside[:, None] @ flat  # (B, H, nb, m, de): prefix within each block
    if blocks > 1:
        totals = local[:, :, :, -1].reshape(batch, heads, blocks, d, e)  # (B, H, nb, d, e): each block's last
        ends = _decayed_prefix(totals, decay[:, 0, 0] ** m)  # (B, H, nb, d, e): state after block j
        entering = torch.cat([torch.zeros_like(ends[:, :, :1]), ends[:, :, :-1]], dim=2).flatten(-2)  # (B, H, nb, de)
        age = (decay[:, :, 0] ** (steps + 1))[:, None, :, None]  # (H, 1, m, 1): decay^(a + 1)
        local = local + age * entering[:, :, :, None]
    return local.reshape(batch, heads, blocks * m, d, e)[:, :, :n]  # (B, H, n, d, e)


def _causal_pass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor, chunk: int) -> torch.Tensor:
    """sum_{j <= i} gamma^(i - j) (q_i . k_j) v_j for (B, H, N, d) inputs, every chunk at once.

    Per chunk t of C positions (a query, b key inside it): the masked decayed product inside the chunk, plus what
    earlier chunks left, read through the state S_t entering chunk t:
        O_t = ((Q_t K_t^T) * gamma^(a - b) [b <= a]) V_t + (Q_t * gamma^(a + 1)) S_t
        S_t = sum_{t' < t} (gamma^C)^(t - 1 - t') U_t',   U_t' = (K_t' * gamma^(C - 1 - b))^T V_t'
    The states come from one decayed prefix over chunks (_decayed_prefix); autograd differentiates it all."""
    length = q.shape[2]
    qc, kc, vc = (split_chunks(t, chunk) for t in (q, k, v))  # (B, H, n, C, d); the last chunk zero-filled
    positions = torch.arange(chunk, device=q.device, dtype=q.dtype)
    log_gamma = torch.log(gamma.to(q.dtype))[:, None]  # (H, 1)
    gap = positions[:, None] - positions[None, :]  # (C, C): a - b
    inside = torch.exp(log_gamma[..., None] * gap.clamp_min(0)) * (gap >= 0)  # (H, C, C): gamma^(a-b), b <= a
    to_query = torch.exp(log_gamma * (positions + 1))[:, None, :, None]  # (H, 1, C, 1): state's age at query a
    from_key = torch.exp(log_gamma * (chunk - 1 - positions))[:, None, :, None]  # (H, 1, C, 1): key b's at chunk end
    local = ((qc @ kc.transpose(-1, -2)) * inside[:, None]) @ vc  # (B, H, n, C, e)
    added = (kc * from_key).transpose(-1, -2) @ vc  # (B, H, n, d, e): U_t
    ends = _decayed_prefix(added, torch.exp(log_gamma[:, 0] * chunk))  # (B, H, n, d, e): state after chunk t
    entering = torch.cat([torch.zeros_like(ends[:, :, :1]), ends[:, :, :-1]], dim=2)  # (B, H, n, d, e): S_t
    out = local + (qc * to_query) @ entering  # (B, H, n, C, e)
    return merge_chunks(out, length)  # (B, H, N, e)


def _decay_sums(real: torch.Tensor, gamma: torch.Tensor, causal: bool, chunk: int) -> torch.Tensor:
    """r_i = sum over real j of gamma^(i - j) (j <= i; both sides when bidirectional), (B, H, N, 1).

    Where each sequence's real positions are one contiguous run (left or right padding, none inside), in closed
    form: the c_i real positions up to i are the c_i just before it, r_i = (1 - gamma^c_i) / (1 - gamma) (and the
    mirror image for the keys after i). Otherwise by the decayed pass itself, on a single column."""
    run_starts = torch.diff(real[:, 0, :, 0], dim=-1, prepend=real.new_zeros(real.shape[0], 1)).clamp_min(0).sum(-1)
    heads = gamma.shape[0]
    g = gamma.to(real.dtype)[:, None, None]  # (H, 1, 1)
    if bool((run_starts <= 1).all()) and bool((g < 1).all()):
        before = real.cumsum(2)  # (B, 1, N, 1): real positions <= i
        weight = (1 - g**before) / (1 - g)  # (B, H, N, 1)
        if not causal:
            after = real.flip(2).cumsum(2).flip(2)  # real positions >= i
            weight = weight + (1 - g**after) / (1 - g) - 1  # i itself counted once
        return weight
    ones = real.expand(-1, heads, -1, -1)  # (B, H, N, 1)
    unit = torch.ones_like(ones)
    weight = _causal_pass(unit, ones, unit, gamma, chunk)
    if not causal:
        weight = weight + _causal_pass(unit, ones.flip(2), unit, gamma, chunk).flip(2) - ones
    return weight


def retention_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    gamma: torch.Tensor,
    causal: bool = True,
    key_padding_mask: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: str = "torch",
) -> torch.Tensor:
    """Retention, (B, H, N, d) x3 -> (B, H, N, e); gamma (H,) the per-head decays; mask (B, N), True = real.
    backend: "torch" (the chunked pass here), "cpp" (the causal form as one C++ walk), "fla" (CUDA) or "auto"
    (resolve_retention_backend)."""
    check_qkv(q, k, v)
    backend = resolve_retention_backend(backend, q, causal)
    products = _fla_pass if backend == "fla" else _causal_pass
    dtype = q.dtype
    q, k, v = at_least_fp32(q), at_least_fp32(k), at_least_fp32(v)
    if backend == "cpp":
        return causal_retention_cpp(q, k, v, key_padding_mask, gamma).to(dtype)  # padded rows come out 0
    real = real_positions(key_padding_mask, q)  # (B, 1, N, 1) or None
    if real is None:
        real = q.new_ones(q.shape[0], 1, q.shape[2], 1)
    k, v = k * real, v * real  # padded positions hold nothing to retain
    q = q * q.shape[-1] ** -0.5
    out = products(q, k, v, gamma, chunk_size)
    if not causal:
        flipped = products(q.flip(2), k.flip(2), v.flip(2), gamma, chunk_size).flip(2)
        out = out + flipped - (q * k).sum(-1, keepdim=True) * v  # the diagonal j = i was counted twice
    weight = _decay_sums(real, gamma, causal, chunk_size)  # (B, H, N, 1)
    out = out * weight.clamp_min(1.0).rsqrt() * real  # RetNet's normalised decay; padded rows 0
    return out.to(dtype)


def resolve_retention_backend(backend: str, q: torch.Tensor, causal: bool = True) -> str:
    """The path `backend` names; "auto": flash-linear-attention on CUDA when it imports, the causal form's fused C++
    walk on a CPU where it builds, else "torch"."""
    if backend == "cpp":
        return resolve_walk_backend("retention", backend, at_least_fp32(q), causal)
    chosen = FLA_SIMPLE_GLA.resolve("retention", backend, q)
    if backend == "auto" and chosen == "torch":
        return resolve_walk_backend("retention", "auto", at_least_fp32(q), causal)
    return chosen


def _fla_pass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor, chunk: int) -> torch.Tensor:
    """_causal_pass by fla's chunk_simple_gla: o_t = scale sum_{s <= t} exp(G_t - G_s) (q_t . k_s) v_s with G the
    running sum of the gate g; a constant g = log gamma per head gives gamma^(t - s). Its chunking is its own."""
    chunk_simple_gla = FLA_SIMPLE_GLA.load("retention", q)
    batch, heads, length, _ = q.shape
    gate = torch.log(gamma.to(q.dtype)).expand(batch, length, heads).contiguous()  # (B, N, H)
    # fla takes (B, N, H, d); ours are (B, H, N, d)
    out, _ = chunk_simple_gla(*(t.transpose(1, 2).contiguous() for t in (q, k, v)), g=gate, scale=1.0)
    return out.transpose(1, 2)  # (B, H, N, e)
