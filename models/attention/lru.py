"""The linear recurrent unit (LRU) as LRURec uses it, as a mixer behind the attention interface.

Orvieto et al., ICML 2023 (arXiv:2303.06349); Yue et al., LRURec, WSDM 2024 (arXiv:2310.02367).
The recurrence and its parallel (chunked) scan: kernels/lru.py.

NOTE: the layer's packed input projection supplies the LRU's complex input B x_t (real and imaginary parts: its
first two thirds) and its skip term D x_t (the last third, a full matrix where the LRU has a diagonal); the states
are read by their real part and the layer's output projection, i.e. C acts on Re(h). LRURec's own block adds a
position-wise feed-forward, which the encoder supplies here.
"""

import torch
from torch import nn

from .base import AttentionLayer, Capabilities, CppScanMixin, OutputDropoutMixin, PackedMixerMixin, register_attention
from .kernels.common import DEFAULT_CHUNK_SIZE, at_least_fp32
from .kernels.lru import LRU_BACKENDS, lru_parameters, lru_scan, resolve_lru_backend


@register_attention("lru")
class LRUMixer(CppScanMixin, PackedMixerMixin, OutputDropoutMixin, AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="linear recurrence, complex diagonal (no attention matrix)",
        time="O(N C P)",
        memory="O(N P + C^2 P)",
        reference="Orvieto et al., ICML 2023 (arXiv:2303.06349); LRURec, WSDM 2024 (arXiv:2310.02367)",
    )

    def __init__(
        self,
        dim,
        heads,
        *,
        causal=False,
        max_len=None,
        dropout=0.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        r_min: float = 0.8,
        r_max: float = 0.99,
        backend: str = "auto",  # "auto": the fused C++ scan on a CPU where it builds, else "torch" (chunked)
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        if backend not in LRU_BACKENDS:
            raise ValueError(f"lru: unknown backend {backend!r}; expected one of {', '.join(LRU_BACKENDS)}")
        self.chunk_size, self.backend = chunk_size, backend
        nu_log, theta_log = lru_parameters(dim, r_min, r_max)
        self.nu_log, self.theta_log = nn.Parameter(nu_log), nn.Parameter(theta_log)  # (P,) with P = dim

    @classmethod
    def backend_for(cls, options, device, dtype=torch.float32, compiled=False):
        return resolve_lru_backend(options.get("backend", "auto"), torch.empty(0, device=device, dtype=dtype))

    def attend_packed(self, qkv, key_padding_mask):
        batch, length = qkv.shape[:2]
        parts = at_least_fp32(qkv).reshape(batch, length, 3, self.dim)  # (B, N, 3, P)
        u = torch.complex(parts[:, :, 0], parts[:, :, 1])  # (B, N, P): the complex input B x_t
        states = lru_scan(
            u,
            self.nu_log,
            self.theta_log,
            causal=self.causal,
            padding_mask=key_padding_mask,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        out = states.real + parts[:, :, 2]  # (B, N, P): Re(h_t) + D x_t
        if key_padding_mask is not None:
            out = out * key_padding_mask[..., None]
        out = self._output_dropout(out).to(qkv.dtype)
        return out.view(batch, length, self.heads, self.head_dim)  # (B, N, H, d)
