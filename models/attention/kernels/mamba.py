"""The selective scan of Mamba: a diagonal state-space recurrence whose step, input and readout depend on the input.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023, https://arxiv.org/abs/2312.00752;
as a sequential recommender: Liu et al., "Mamba4Rec", 2024, https://arxiv.org/abs/2403.03900

Per channel e (E channels) and state s (S states per channel), with A = -exp(A_log) < 0:

    h_t[e, s] = exp(delta_t[e] A[e, s]) h_{t-1}[e, s] + delta_t[e] B_t[s] x_t[e]     (zero-order-hold A, Euler B)
    y_t[e]    = sum_s C_t[s] h_t[e, s]

delta_t > 0 (softplus), B_t and C_t are computed from the input at t: the selection. Because the decay differs per
(t, e, s), no fixed matrix of powers exists (as in the LRU or retention): the scan runs over t, one fused
multiply-add on (B, E, S) states per position, the states kept for autograd and read out together: O(N E S) time
and memory, N Python steps. (Summing each chunk's pairs at once, weighted by exp(L_t - L_b), costs C times the
arithmetic and was slower here at every size measured: 0.38 against 0.33 s at N = 256, batch 1, width 128.)
On CUDA with mamba-ssm installed, `backend="auto"` hands the scan to its fused kernel (selective_scan_fn, which
recomputes the states in the backward pass); padding maps onto it as a zero step (no decay, no drive).

Shape legend: B batch, N length, E channels, S states per channel, K convolution width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import OptionalKernel

MAMBA_SSM = OptionalKernel("mamba-ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn", "mamba-ssm")
MAMBA_BACKENDS = ("auto", "torch", MAMBA_SSM.name)


def mamba_parameters(channels: int, states: int, dt_rank: int, dt_min: float = 1e-3, dt_max: float = 0.1):
    """(A_log, dt_bias) initialised as Mamba does: A = -(1..S) per channel (S4D-real), and a softplus bias that
    starts the step delta log-uniform on [dt_min, dt_max]."""
    a_log = torch.log(torch.arange(1, states + 1, dtype=torch.float32)).repeat(channels, 1)  # (E, S)
    dt = torch.exp(torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))  # (E,)
    dt_bias = dt + torch.log(-torch.expm1(-dt))  # softplus(dt_bias) = dt
    return a_log, dt_bias


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (B, N, E) convolved along N per channel with weight (E, 1, K), seeing only the K - 1 positions before."""
    width = weight.shape[-1]
    out = F.conv1d(F.pad(x.transpose(1, 2), (width - 1, 0)), weight, bias, groups=x.shape[-1])  # (B, E, N)
    return out.transpose(1, 2)  # (B, N, E)


def _scan(log_decay: torch.Tensor, drive: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """y_t = readout_t . h_t with h_t = exp(log_decay_t) h_{t-1} + drive_t; log_decay, drive (B, N, E, S), readout
    (B, N, S). One fused multiply-add per position; the readout of all states at once."""
    # unbound once: indexing [:, t] in the loop would cost a full-size gradient per position in the backward pass
    decays, drives = log_decay.exp().unbind(1), drive.unbind(1)  # N x (B, E, S), decays in (0, 1]
    state = drive.new_zeros(drive.shape[0], drive.shape[2], drive.shape[3])  # (B, E, S)
    states = []
    for decay, step in zip(decays, drives, strict=True):
        state = torch.addcmul(step, decay, state)  # (B, E, S)
        states.append(state)
    return torch.einsum("ntes,nts->nte", torch.stack(states, dim=1), readout)  # (B, N, E)


def selective_scan(
    x: torch.Tensor,
    delta: torch.Tensor,
    a_log: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    *,
    causal: bool = True,
    padding_mask: torch.Tensor | None = None,
    backend: str = "torch",
) -> torch.Tensor:
    """x, delta (B, N, E); a_log (E, S); b, c (B, N, S); padding_mask (B, N), True = real. Returns y (B, N, E).

    A padded position neither feeds nor decays the state (decay 1, drive 0), so padding on either side changes
    nothing at the real positions, and its own output is 0. Bidirectional: a forward and a backward scan, the
    current position's drive counted once. backend: "torch" (below), "mamba-ssm" (CUDA), or "auto"
    (resolve_mamba_backend)."""
    backend = resolve_mamba_backend(backend, x)
    if backend == "mamba-ssm":
        return _mamba_ssm_selective_scan(x, delta, a_log, b, c, causal, padding_mask)
    a = -torch.exp(a_log.to(x.dtype))  # (E, S) < 0
    log_decay = delta[..., None] * a  # (B, N, E, S) <= 0
    drive = (delta * x)[..., None] * b[:, :, None, :]  # (B, N, E, S)
    if padding_mask is not None:
        real = padding_mask[..., None, None]  # (B, N, 1, 1)
        log_decay = log_decay * real
        drive = drive * real
    y = _scan(log_decay, drive, c)
    if not causal:
        backward = _scan(log_decay.flip(1), drive.flip(1), c.flip(1)).flip(1)
        y = y + backward - torch.einsum("ntes,nts->nte", drive, c)  # drive_t is in both scans
    if padding_mask is not None:
        y = y * padding_mask[..., None]
    return y


def resolve_mamba_backend(backend: str, x: torch.Tensor) -> str:
    """The scan `backend` names; "auto": mamba-ssm's fused kernel on CUDA when it imports, else "torch"."""
    return MAMBA_SSM.resolve("mamba", backend, x)


def _mamba_ssm_selective_scan(x, delta, a_log, b, c, causal, padding_mask):
    """The same scan by mamba-ssm's selective_scan_fn, which takes (B, E, N) inputs, (B, S, N) B and C, A (E, S)."""
    selective_scan_fn = MAMBA_SSM.load("mamba", x)
    if padding_mask is not None:
        delta = delta * padding_mask[..., None]  # a zero step: decay exp(0) = 1, drive 0
    a = -torch.exp(a_log.to(delta.dtype))  # (E, S)

    def scan(x, delta, b, c):  # (B, N, .) in and out
        return selective_scan_fn(x.transpose(1, 2), delta.transpose(1, 2), a, b.transpose(1, 2), c.transpose(1, 2))

    y = scan(x, delta, b, c).transpose(1, 2)  # (B, N, E)
    if not causal:
        backward = scan(*(t.flip(1) for t in (x, delta, b, c))).transpose(1, 2).flip(1)
        y = y + backward - (delta * x) * (b * c).sum(-1, keepdim=True)  # drive_t . C_t is in both scans
    if padding_mask is not None:
        y = y * padding_mask[..., None]
    return y
