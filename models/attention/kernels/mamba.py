"""The selective scan of Mamba: a diagonal state-space recurrence whose step, input and readout depend on the input.

Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023, https://arxiv.org/abs/2312.00752;
as a sequential recommender: Liu et al., "Mamba4Rec", 2024, https://arxiv.org/abs/2403.03900

Per channel e (E channels) and state s (S states per channel), with A = -exp(A_log) < 0:

    h_t[e, s] = exp(delta_t[e] A[e, s]) h_{t-1}[e, s] + delta_t[e] B_t[s] x_t[e]     (zero-order-hold A, Euler B)
    y_t[e]    = sum_s C_t[s] h_t[e, s]

delta_t > 0 (softplus), B_t and C_t are computed from the input at t: the selection. Because the decay differs per
(t, e, s), no fixed matrix of powers exists (as in the LRU or retention): the scan runs over t, one fused
multiply-add on (B, E, S) states per position, forward and backward written by hand (an autograd.Function) so
that only the states are kept: O(N E S) time and memory, N Python steps each way. (Summing each chunk's pairs at
once, weighted by exp(L_t - L_b), costs C times the arithmetic and was slower here at every size measured: 0.38
against 0.33 s at N = 256, batch 1, width 128.)
On a CPU, `backend="auto"` takes the fused C++ walk (kernels/scan_cpp.py: no Python loop, the states kept only every
64 positions and recomputed in the backward), this scan being its reference.
On CUDA with mamba-ssm installed, `backend="auto"` hands the scan to its fused kernel (selective_scan_fn, which
recomputes the states in the backward pass); padding maps onto it as a zero step (no decay, no drive).

Shape legend: B batch, N length, E channels, S states per channel, K convolution width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import OptionalKernel
from .scan_cpp import resolve_scan_backend, selective_scan_cpp

MAMBA_SSM = OptionalKernel("mamba-ssm", "mamba_ssm.ops.selective_scan_interface", "selective_scan_fn", "mamba-ssm")
MAMBA_BACKENDS = ("auto", "torch", "cpp", MAMBA_SSM.name)


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


class _SelectiveScan(torch.autograd.Function):
    """y_t[e] = sum_s c_t[s] h_t[e, s] with h_t = exp(delta_t[e] A[e, s]) h_{t-1} + dx_t[e] b_t[s], h_0 = 0, where
    dx = delta * x. Forward and backward by hand: through autograd, every broadcast to (B, N, E, S) and each of the
    N steps kept its own buffers and backward node (11x `sdpa`'s fwd+bwd time at N = 200, the multiplies' backward
    most of it). Kept for the backward: the states (the one (B, N, E, S) tensor); the decays are recomputed.

    Backward, with G_t = dL/dh_t = gy_t c_t + exp(delta_{t+1} A) G_{t+1} (a reverse scan):
        dc_t = sum_e gy_t[e] h_t[e, :]          d(dx)_t = G_t b_t          db_t = sum_e G_t[e, :] dx_t[e]
        W_t = G_t h_{t-1} exp(delta_t A)        d(delta)_t = W_t A (sum over s)      dA = sum_{b, t} W_t delta_t
    """

    @staticmethod
    def forward(ctx, dx, delta, a, b, c):  # dx, delta (B, N, E); a (E, S); b, c (B, N, S)
        batch, length, channels = dx.shape
        states = dx.new_empty(batch, length, channels, a.shape[1])  # (B, N, E, S), kept for the backward
        y = torch.empty_like(dx)  # (B, N, E)
        state = dx.new_zeros(batch, channels, a.shape[1])  # (B, E, S)
        # every step on (B, E, S) slices: they stay in cache, where whole-sequence broadcasts would stream
        # (B, N, E, S) tensors through memory a dozen times
        for t in range(length):
            decay = torch.exp(delta[:, t, :, None] * a)  # (B, E, S)
            state = torch.addcmul(dx[:, t, :, None] * b[:, t, None, :], decay, state, out=states[:, t])
            y[:, t] = (state * c[:, t, None, :]).sum(-1)
        ctx.save_for_backward(dx, delta, a, b, c, states)
        return y

    @staticmethod
    def backward(ctx, gy):
        dx, delta, a, b, c, states = ctx.saved_tensors
        d_dx, d_delta, d_b, d_c = (torch.empty_like(t) for t in (dx, delta, b, c))
        d_a = torch.zeros_like(a)
        carried = torch.zeros_like(states[:, 0])  # exp(delta_{t+1} A) G_{t+1}: (B, E, S)
        for t in range(dx.shape[1] - 1, -1, -1):
            g_y = gy[:, t, :, None]  # (B, E, 1)
            grad = torch.addcmul(carried, g_y, c[:, t, None, :])  # G_t (B, E, S)
            d_c[:, t] = (states[:, t] * g_y).sum(-2)
            d_dx[:, t] = (grad * b[:, t, None, :]).sum(-1)
            d_b[:, t] = (grad * dx[:, t, :, None]).sum(-2)
            decay = torch.exp(delta[:, t, :, None] * a)  # (B, E, S)
            if t > 0:
                w = grad * states[:, t - 1] * decay  # dL/d(log decay_t) (B, E, S)
                d_delta[:, t] = (w * a).sum(-1)
                d_a += (w * delta[:, t, :, None]).sum(0)
            else:
                d_delta[:, t] = 0  # h_0 = 0: the first decay multiplies nothing
            carried = decay * grad
        return d_dx, d_delta, d_a, d_b, d_c


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

    A padded position neither feeds nor decays the state (its step delta is 0: decay 1, drive 0), so padding on
    either side changes nothing at the real positions, and its own output is 0. Bidirectional: a forward and a
    backward scan, the current position's drive counted once. backend: "torch" (above), "cpp" (the fused C++ walk),
    "mamba-ssm" (CUDA), or "auto" (resolve_mamba_backend)."""
    backend = resolve_mamba_backend(backend, x)
    if backend == "mamba-ssm":
        return _mamba_ssm_selective_scan(x, delta, a_log, b, c, causal, padding_mask)
    a = -torch.exp(a_log.to(x.dtype))  # (E, S) < 0
    if padding_mask is not None:
        delta = delta * padding_mask[..., None]  # (B, N, E): a zero step at padded positions
    dx = delta * x  # (B, N, E)
    scan = selective_scan_cpp if backend == "cpp" else _SelectiveScan.apply
    y = scan(dx, delta, a, b, c)
    if not causal:
        backward = scan(dx.flip(1), delta.flip(1), a, b.flip(1), c.flip(1)).flip(1)
        y = y + backward - dx * (b * c).sum(-1, keepdim=True)  # drive_t . c_t is in both scans
    if padding_mask is not None:
        y = y * padding_mask[..., None]
    return y


def resolve_mamba_backend(backend: str, x: torch.Tensor) -> str:
    """The scan `backend` names; "auto": mamba-ssm's fused kernel on CUDA when it imports, the fused C++ walk on a
    CPU where it builds (kernels/scan_cpp.py), else "torch"."""
    if backend == "cpp":
        return resolve_scan_backend("mamba", backend, x)
    chosen = MAMBA_SSM.resolve("mamba", backend, x)
    return resolve_scan_backend("mamba", "auto", x) if backend == "auto" and chosen == "torch" else chosen


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
