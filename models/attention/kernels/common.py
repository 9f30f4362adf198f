"""Helpers shared by the kernel families: masks, chunking, norms, input checks, constants.

Shape legend: B batch, H heads, N length, d head dim, e value dim, n chunks, C chunk length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 32  # fastest on CPU at d = 16 (B=8, H=8, N=4096 fwd+bwd); keep C >= d
# Smallest norm / normaliser the kernels divide by. Squared it must stay a
# normal float32/bfloat16 number (both have float32's exponent range).
NORM_EPS = 1e-12
# Working-set size of the cache-blocked inference paths (LinRec, Linformer); tests shrink it to force several blocks.
CACHE_BLOCK_BYTES = 1 << 20


def real_positions(key_padding_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
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


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 -> fp32 for statistics and exponentials; fp32/fp64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be (B, H, N, d); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"q and k must match and v must share (B, H, N); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )


def safe_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm kept >= NORM_EPS, with a finite gradient at x = 0 (clamp before sqrt)."""
    return x.square().sum(dim, keepdim=True).clamp_min(NORM_EPS**2).sqrt()


def zero_padded_rows(out: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    return out if real is None else out * real.to(out.dtype)


def split_chunks(x: torch.Tensor, chunk_size: int, fill: float = 0.0) -> torch.Tensor:
    """(B, H, N, d) -> (B, H, n, C, d), padding N up to a multiple of C with `fill`."""
    batch, heads, length, dim = x.shape
    pad = (-length) % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, pad), value=fill)
    return x.reshape(batch, heads, -1, chunk_size, dim)  # (B, H, n, C, d)


def merge_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """(B, H, n, C, e) -> (B, H, N, e)."""
    batch, heads, n_chunks, chunk, dim = x.shape
    return x.reshape(batch, heads, n_chunks * chunk, dim)[:, :, :length]  # (B, H, N, e)
