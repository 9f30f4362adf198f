"""Multi-scale retention (RetNet): linear attention whose past fades by a fixed factor per head, chunk by chunk.

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models", 2023,
https://arxiv.org/abs/2307.08621

Per head with decay gamma, over the real positions j <= i (causal):

    S_i = gamma S_{i-1} + k_i v_i^T            (d x e state)
    o_i = (q_i / sqrt(d))^T S_i / sqrt(r_i),   r_i = sum_{real j <= i} gamma^(i - j)

i.e. out = ((Q K^T / sqrt(d)) * D) V with D_ij = gamma^(i - j) for j <= i, rows of D scaled by 1 / sqrt(r_i) (RetNet's
normalised decay matrix). Bidirectional: D_ij = gamma^|i - j|, computed as a forward and a backward pass whose
shared diagonal is counted once. Chunks of C positions: inside a chunk the masked C x C product, across chunks the
state decayed by gamma^C: O(N C d + N d^2) time, O(N d + d^2) memory, no N x N matrix.

NOTE: RetNet's block also normalises each head's output (GroupNorm), gates it (swish) and scales the score rows by
their absolute sum; those belong to its block, not to the mixer compared here (the encoder's LayerNorms follow).
Decay counts positions: padded positions hold no key or value, so left and right padding change nothing, but
padding inside a sequence would count as elapsed steps.

On CUDA with flash-linear-attention installed, `backend="auto"` hands the decayed products to its chunked kernel
(chunk_simple_gla, a constant per-head log decay as its gate); the normaliser r_i (one column) stays here.
"""

from __future__ import annotations

import torch

from .common import DEFAULT_CHUNK_SIZE, OptionalKernel, at_least_fp32, check_qkv, real_positions

# flash-linear-attention's kernels are Triton (GPU) kernels
FLA_SIMPLE_GLA = OptionalKernel("fla", "fla.ops.simple_gla", "chunk_simple_gla", "flash-linear-attention")
RETENTION_BACKENDS = ("auto", "torch", FLA_SIMPLE_GLA.name)

# RetNet's per-head decays: gamma_h = 1 - 2^(-5 - h), the first head remembering ~32 steps, each next one twice as long
MAX_DECAY_EXPONENT = 5


def retention_decays(heads: int, device=None) -> torch.Tensor:
    """(H,) gamma_h = 1 - 2^(-5 - h * 7 / max(H - 1, 1)): from ~32 to ~4096 steps of memory, whatever H is."""
    spread = torch.arange(heads, dtype=torch.float64) * 7 / max(heads - 1, 1)
    return (1 - 2.0 ** (-MAX_DECAY_EXPONENT - spread)).to(device=device, dtype=torch.float32)


def _causal_pass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor, chunk: int) -> torch.Tensor:
    """sum_{j <= i} gamma^(i - j) (q_i . k_j) v_j for (B, H, N, d) inputs, chunk by chunk."""
    batch, heads, length, _ = q.shape
    positions = torch.arange(chunk, device=q.device, dtype=q.dtype)
    log_gamma = torch.log(gamma.to(q.dtype))[:, None]  # (H, 1)
    gap = positions[:, None] - positions[None, :]  # (C, C): a - b
    inside = torch.exp(log_gamma[..., None] * gap.clamp_min(0)) * (gap >= 0)  # (H, C, C): gamma^(a-b), b <= a
    to_query = torch.exp(log_gamma * (positions + 1))  # (H, C): gamma^(a+1), the state's age at query a
    from_key = torch.exp(log_gamma * (chunk - 1 - positions))  # (H, C): gamma^(C-1-b), key b's age at chunk end
    whole = torch.exp(log_gamma * chunk)[..., None]  # (H, 1, 1): gamma^C
    state = q.new_zeros(batch, heads, q.shape[-1], v.shape[-1])  # (B, H, d, e)
    outputs = []
    for start in range(0, length, chunk):
        qc, kc, vc = (t[:, :, start : start + chunk] for t in (q, k, v))  # (B, H, c, d)
        c = qc.shape[2]
        local = (qc @ kc.transpose(-1, -2)) * inside[:, :c, :c]  # (B, H, c, c)
        carried = (qc * to_query[:, :c, None]) @ state  # (B, H, c, e): what earlier chunks left
        outputs.append(local @ vc + carried)
        if c == chunk:  # a shorter chunk is the last one: no later chunk reads the state
            state = state * whole + (kc * from_key[..., None]).transpose(-1, -2) @ vc  # (B, H, d, e)
    return torch.cat(outputs, dim=2)  # (B, H, N, e)


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
    backend: "torch" (the chunked pass here), "fla" (CUDA) or "auto" (resolve_retention_backend)."""
    check_qkv(q, k, v)
    if resolve_retention_backend(backend, q) == "fla":
        products = _fla_pass
    else:
        products = _causal_pass
    dtype = q.dtype
    q, k, v = at_least_fp32(q), at_least_fp32(k), at_least_fp32(v)
    real = real_positions(key_padding_mask, q)  # (B, 1, N, 1) or None
    if real is None:
        real = q.new_ones(q.shape[0], 1, q.shape[2], 1)
    k, v = k * real, v * real  # padded positions hold nothing to retain
    q = q * q.shape[-1] ** -0.5
    ones = real.expand(-1, q.shape[1], -1, -1)  # (B, H, N, 1): the decay sums r_i, by the same pass
    unit = torch.ones_like(ones)
    out = products(q, k, v, gamma, chunk_size)
    weight = _causal_pass(unit, ones, unit, gamma, chunk_size)  # (B, H, N, 1): sum_{real j <= i} gamma^(i-j)
    if not causal:
        flipped = products(q.flip(2), k.flip(2), v.flip(2), gamma, chunk_size).flip(2)
        out = out + flipped - (q * k).sum(-1, keepdim=True) * v  # the diagonal j = i was counted twice
        weight = weight + _causal_pass(unit, ones.flip(2), unit, gamma, chunk_size).flip(2) - ones
    out = out * weight.clamp_min(1.0).rsqrt() * real  # RetNet's normalised decay; padded rows 0
    return out.to(dtype)


def resolve_retention_backend(backend: str, q: torch.Tensor) -> str:
    """The path `backend` names; "auto": flash-linear-attention on CUDA when it imports, else "torch"."""
    return FLA_SIMPLE_GLA.resolve("retention", backend, q)


def _fla_pass(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor, chunk: int) -> torch.Tensor:
    """_causal_pass by fla's chunk_simple_gla: o_t = scale sum_{s <= t} exp(G_t - G_s) (q_t . k_s) v_s with G the
    running sum of the gate g; a constant g = log gamma per head gives gamma^(t - s). Its chunking is its own."""
    chunk_simple_gla = FLA_SIMPLE_GLA.load("retention", q)
    batch, heads, length, _ = q.shape
    gate = torch.log(gamma.to(q.dtype)).expand(batch, length, heads).contiguous()  # (B, N, H)
    # fla takes (B, N, H, d); ours are (B, H, N, d)
    out, _ = chunk_simple_gla(*(t.transpose(1, 2).contiguous() for t in (q, k, v)), g=gate, scale=1.0)
    return out.transpose(1, 2)  # (B, H, N, e)
