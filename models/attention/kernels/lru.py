"""The linear recurrent unit (LRU): a complex diagonal recurrence with a stable parametrisation, chunk by chunk.

Orvieto et al., "Resurrecting Recurrent Neural Networks for Long Sequences", ICML 2023, https://arxiv.org/abs/2303.06349;
as a sequential recommender: Yue et al., "Linear Recurrent Units for Sequential Recommendation" (LRURec), WSDM 2024,
https://arxiv.org/abs/2310.02367

Per state channel p (P channels), complex:

    lambda_p = exp(-exp(nu_p) + i exp(theta_p))        |lambda_p| < 1 for any nu, theta: stable by construction
    h_t = lambda h_{t-1} + gamma * u_t,                gamma_p = sqrt(1 - |lambda_p|^2)  (input normalisation)

Causal: the scan over t; bidirectional: a forward and a backward scan, the shared u_t counted once. Chunks of C
positions: inside a chunk the masked powers lambda^(a - b) (C x C x P), across chunks the state times lambda^C:
O(N C P) time, O(N P + C^2 P) memory, no sequential loop over positions. On a CPU, `backend="auto"` takes the fused
C++ walk instead (kernels/scan_cpp.py: O(N P) time, the states only), this chunked scan being its reference.

Shape legend: B batch, N length, P state channels, C chunk length.
"""

from __future__ import annotations

import functools
import math

import torch

from .common import DEFAULT_CHUNK_SIZE, at_least_fp32
from .scan_cpp import lru_scan_cpp, resolve_scan_backend

LRU_BACKENDS = ("auto", "torch", "cpp")


def lru_parameters(channels: int, r_min: float = 0.8, r_max: float = 0.99, max_phase: float = math.pi / 10):
    """(nu_log, theta_log) initialised as the LRU paper does: |lambda| uniform on the ring [r_min, r_max] (by area),
    phases uniform on [0, max_phase]."""
    u1, u2 = torch.rand(channels), torch.rand(channels)
    nu_log = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
    theta_log = torch.log(max_phase * u2)
    return nu_log, theta_log


def lru_lambda(nu_log: torch.Tensor, theta_log: torch.Tensor) -> torch.Tensor:
    """(P,) complex eigenvalues inside the unit circle."""
    nu_log, theta_log = at_least_fp32(nu_log), at_least_fp32(theta_log)  # bf16 has no complex counterpart
    return torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log)))


def _causal_scan(u: torch.Tensor, lam: torch.Tensor, chunk: int) -> torch.Tensor:
    """h_t = lam h_{t-1} + u_t for complex u (B, N, P), chunk by chunk."""
    batch, length, channels = u.shape
    steps = torch.arange(chunk, device=u.device)
    gap = steps[:, None] - steps[None, :]  # (C, C): a - b
    log_lam = torch.log(lam)  # (P,) complex
    powers = torch.exp(gap.clamp_min(0)[..., None] * log_lam) * (gap >= 0)[..., None]  # (C, C, P): lam^(a-b), b <= a
    to_step = torch.exp((steps + 1)[:, None] * log_lam)  # (C, P): lam^(a+1), the carried state's age at step a
    state = u.new_zeros(batch, channels)  # (B, P)
    outputs = []
    for start in range(0, length, chunk):
        uc = u[:, start : start + chunk]  # (B, c, P)
        c = uc.shape[1]
        inside = torch.einsum("abp,nbp->nap", powers[:c, :c], uc)  # (B, c, P)
        hc = inside + to_step[:c] * state[:, None]  # (B, c, P)
        outputs.append(hc)
        state = hc[:, -1]  # (B, P)
    return torch.cat(outputs, dim=1)  # (B, N, P)


def lru_scan(
    u: torch.Tensor,
    nu_log: torch.Tensor,
    theta_log: torch.Tensor,
    *,
    causal: bool = True,
    padding_mask: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: str = "torch",
) -> torch.Tensor:
    """LRU states for a complex input u (B, N, P); padding_mask (B, N), True = real (padded inputs are dropped and
    padded states zeroed). Returns the complex states (B, N, P). backend: "torch" (the chunked scan here), "cpp"
    (the fused C++ walk, kernels/scan_cpp.py) or "auto" (cpp where it applies)."""
    if u.dim() != 3 or not u.is_complex():
        raise ValueError(f"u must be complex (B, N, P), got {u.dtype} {tuple(u.shape)}")
    lam = lru_lambda(nu_log, theta_log).to(u.dtype)  # (P,)
    gamma = torch.sqrt(1 - lam.abs() ** 2).to(u.dtype)  # (P,): keeps the state's scale whatever |lambda| is
    u = u * gamma
    if padding_mask is not None:
        u = u * padding_mask[..., None]
    if resolve_lru_backend(backend, u) == "cpp":
        scan = lru_scan_cpp
    else:
        scan = functools.partial(_causal_scan, chunk=chunk_size)
    states = scan(u, lam)
    if not causal:
        states = states + scan(u.flip(1), lam).flip(1) - u  # u_t is in both scans
    if padding_mask is not None:
        states = states * padding_mask[..., None]
    return states


def resolve_lru_backend(backend: str, like: torch.Tensor) -> str:
    """The scan `backend` names; "auto": the fused C++ walk on CPU where it builds, else "torch"."""
    if backend not in LRU_BACKENDS:
        raise ValueError(f"lru: unknown backend {backend!r}; expected one of {', '.join(LRU_BACKENDS)}")
    return resolve_scan_backend("lru", backend, like)
