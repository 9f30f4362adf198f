"""Helpers shared by the kernel families: masks, chunking, norms, input checks, constants.

Shape legend: B batch, H heads, N length, d head dim, e value dim, n chunks, C chunk length.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

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


@functools.cache
def import_error(module: str, function: str) -> str | None:
    """Why `from module import function` fails here (None: it works), asked once per process. An optional CUDA
    package whose build does not match the machine raises more than ImportError."""
    try:
        getattr(importlib.import_module(module), function)
    except Exception as err:  # noqa: BLE001 -- any failure means: not usable here
        return f"{type(err).__name__}: {err}"
    return None


@dataclass
class OptionalKernel:
    """A fused kernel from an optional package (mamba-ssm, flash-linear-attention), taken by `backend="auto"` where
    it imports and the tensors are on a device it runs on; "torch" (the path in this repository) otherwise."""

    name: str  # the backend's name: "mamba-ssm", "fla"
    module: str
    function: str
    package: str  # what `pip install` takes
    device_types: tuple[str, ...] = ("cuda",)

    def resolve(self, mechanism: str, backend: str, like: torch.Tensor) -> str:
        """The path `backend` names for tensors like `like`; raises on a name that is neither auto, torch nor ours."""
        if backend not in ("auto", "torch", self.name):
            raise ValueError(f"{mechanism}: unknown backend {backend!r}; expected one of auto, torch, {self.name}")
        if backend != "auto":
            return backend
        usable = like.device.type in self.device_types and import_error(self.module, self.function) is None
        return self.name if usable else "torch"

    def load(self, mechanism: str, like: torch.Tensor):
        """The package's function, or an error that says what is missing."""
        if like.device.type not in self.device_types:
            raise ValueError(
                f"{mechanism} backend={self.name!r} runs on {'/'.join(self.device_types)} tensors only, got "
                f"{like.device.type}; use backend='torch'"
            )
        error = import_error(self.module, self.function)
        if error is not None:
            raise ImportError(
                f"{mechanism} backend={self.name!r} needs {self.package} (pip install {self.package}): {error}"
            )
        return getattr(importlib.import_module(self.module), self.function)
