"""Multi-scale retention (RetNet) as a mixer behind the attention interface: decayed linear attention, one decay
per head.

Sun et al., "Retentive Network: A Successor to Transformer for Large Language Models", 2023,
https://arxiv.org/abs/2307.08621 (the kernel and its deviations: kernels/retention.py)
"""

import torch

from .base import AttentionLayer, Capabilities, CppScanMixin, OutputDropoutMixin, PackedWalkMixin, register_attention
from .kernels.common import DEFAULT_CHUNK_SIZE
from .kernels.retention import RETENTION_BACKENDS, resolve_retention_backend, retention_attention, retention_decays
from .kernels.scan_cpp import causal_retention_cpp


@register_attention("retention")
class RetentionAttention(CppScanMixin, PackedWalkMixin, OutputDropoutMixin, AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="decayed linear attention (a linear recurrence per head)",
        time="O(N C d + N d^2)",
        memory="O(N d + d^2)",
        reference="Sun et al., 2023 (arXiv:2307.08621)",
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
        backend: str = "auto",  # "auto": flash-linear-attention on CUDA when installed, the causal form's C++ walk
        # on a CPU where it builds, else "torch"
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        if backend not in RETENTION_BACKENDS:
            raise ValueError(f"retention: unknown backend {backend!r}; expected one of {', '.join(RETENTION_BACKENDS)}")
        if backend == "cpp":  # refused now, not at the first call: a bidirectional form, or no compiler here
            resolve_retention_backend(backend, torch.empty(0), causal)
        self.chunk_size, self.backend = chunk_size, backend
        # (H,), fixed as in RetNet; kept in float32 whatever the layer's dtype: in bf16, 1 - 2^-12 rounds to 1
        self._gamma = retention_decays(heads)

    @classmethod
    def backend_for(cls, options, device, dtype=None, compiled=False):
        probe = torch.empty(0, device=device, dtype=dtype or torch.float32)
        return resolve_retention_backend(options.get("backend", "auto"), probe, options.get("causal", True))

    def attend(self, q, k, v, key_padding_mask):
        out = retention_attention(
            q,
            k,
            v,
            gamma=self._gamma.to(q.device),
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        return self._output_dropout(out)

    def walk_packed(self, qkv, key_padding_mask):
        if resolve_retention_backend(self.backend, qkv, self.causal) != "cpp":
            return None
        return causal_retention_cpp(qkv, None, None, key_padding_mask, self._gamma)
