"""A selective state-space block (Mamba) as Mamba4Rec uses it, as a mixer behind the attention interface.

Gu & Dao, 2023 (arXiv:2312.00752); Liu et al., Mamba4Rec, 2024 (arXiv:2403.03900). The scan: kernels/mamba.py.

    x, z, r = the layer's packed input projection (three parts of width E = dim)
    u       = SiLU(causal depthwise conv(x))                        local context, K = 4 positions
    delta, B, C = softplus(dt_proj(.) + dt_bias), ., .  of x_proj(u)  the selection: from the input at t
    y       = (selective_scan(u; delta, A, B, C) + r) * SiLU(z)     then the layer's output projection

NOTE: Mamba4Rec widens the block twice (E = 2 dim); here E = dim, the width the layer's projection supplies.
NOTE: Mamba's skip D * u (a diagonal on the convolved input) is the third projected part r here (a full matrix on
the block's input), as the LRU mixer does. Mamba4Rec's position-wise feed-forward comes from the encoder.
NOTE: bidirectional (BERT4Rec) adds a backward scan with the same parameters (bidirectional Mamba variants learn a
second set) and keeps the convolution causal.
"""

import math

import torch
from torch import nn

from .base import AttentionLayer, Capabilities, CppScanMixin, OutputDropoutMixin, PackedMixerMixin, register_attention
from .kernels.common import at_least_fp32
from .kernels.mamba import (
    MAMBA_BACKENDS,
    causal_depthwise_conv,
    mamba_parameters,
    resolve_mamba_backend,
    selective_scan,
)


@register_attention("mamba")
class MambaMixer(CppScanMixin, PackedMixerMixin, OutputDropoutMixin, AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="selective state space (input-dependent diagonal recurrence; no attention matrix)",
        time="O(N E S)",
        memory="O(N E S)",
        reference="Gu & Dao, 2023 (arXiv:2312.00752); Mamba4Rec, 2024 (arXiv:2403.03900)",
    )

    def __init__(
        self,
        dim,
        heads,
        *,
        causal=False,
        max_len=None,
        dropout=0.0,
        d_state: int = 16,
        d_conv: int = 4,
        backend: str = "auto",  # "auto": mamba-ssm's fused scan on CUDA when installed, else "torch"
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        if d_state < 1 or d_conv < 1:
            raise ValueError(f"mamba: d_state and d_conv must be >= 1, got {d_state}, {d_conv}")
        if backend not in MAMBA_BACKENDS:
            raise ValueError(f"mamba: unknown backend {backend!r}; expected one of {MAMBA_BACKENDS}")
        self.d_state, self.dt_rank, self.backend = d_state, math.ceil(dim / 16), backend
        self.conv = nn.Conv1d(dim, dim, d_conv, groups=dim)  # (E, 1, K): depthwise, used causally
        self.x_proj = nn.Linear(dim, self.dt_rank + 2 * d_state, bias=False)  # -> delta (low rank), B, C
        self.dt_proj = nn.Linear(self.dt_rank, dim, bias=False)
        a_log, dt_bias = mamba_parameters(dim, d_state, self.dt_rank)
        self.a_log, self.dt_bias = nn.Parameter(a_log), nn.Parameter(dt_bias)  # (E, S), (E,)

    @classmethod
    def backend_for(cls, options, device, dtype=None, compiled=False):
        return resolve_mamba_backend(options.get("backend", "auto"), torch.empty(0, device=device))

    def attend_packed(self, qkv, key_padding_mask):
        batch, length = qkv.shape[:2]
        x, z, skip = qkv.reshape(batch, length, 3, self.dim).unbind(2)  # 3 x (B, N, E)
        if key_padding_mask is not None:  # a padded position's projection is its bias: keep it out of the conv
            x = x * key_padding_mask[..., None]
        u = nn.functional.silu(causal_depthwise_conv(x, self.conv.weight, self.conv.bias))  # (B, N, E)
        low_rank, b, c = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = nn.functional.softplus(at_least_fp32(self.dt_proj(low_rank)) + self.dt_bias)  # (B, N, E) > 0
        # the scan in fp32 at least: its decays are exponentials
        u, b, c = at_least_fp32(u), at_least_fp32(b), at_least_fp32(c)
        y = selective_scan(
            u, delta, self.a_log, b, c, causal=self.causal, padding_mask=key_padding_mask, backend=self.backend
        )
        out = (y + skip) * nn.functional.silu(at_least_fp32(z))  # (B, N, E)
        if key_padding_mask is not None:
            out = out * key_padding_mask[..., None]
        out = self._output_dropout(out).to(qkv.dtype)
        return out.view(batch, length, self.heads, self.head_dim)  # (B, N, H, d)
