"""Efficient Attention: softmax over query features, softmax over key positions.

Shen et al., "Efficient Attention: Attention with Linear Complexities", WACV 2021,
https://arxiv.org/abs/1812.01243
NOTE: the paper is bidirectional; the causal form here takes the key softmax over the
prefix j <= i (the same rescaling as causal LinRec), computed stably in float32. On a CPU the causal form runs
as one fused C++ walk (`backend="auto"`, the default; kernels/scan_cpp.py), tested against the PyTorch path.
"""

import torch

from .base import AttentionLayer, Capabilities, CppScanMixin, OutputDropoutMixin, PackedWalkMixin, register_attention
from .functional import DEFAULT_CHUNK_SIZE, efficient_attention
from .kernels.efficient import resolve_efficient_backend
from .kernels.scan_cpp import causal_efficient_cpp


@register_attention("efficient")
class EfficientAttention(CppScanMixin, PackedWalkMixin, OutputDropoutMixin, AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="linear, row/column softmax",
        time="O(N d^2)",
        memory="O(N d + d^2)",
        reference="Shen et al., WACV 2021 (arXiv:1812.01243)",
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
        backend: str = "auto",  # "auto": the causal form's fused C++ walk on a CPU where it builds, else "torch"
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        resolve_efficient_backend(backend, torch.empty(0), causal)  # a bad name, or cpp without a causal form
        self.chunk_size, self.backend = chunk_size, backend

    @classmethod
    def backend_for(cls, options, device, dtype=torch.float32, compiled=False):
        probe = torch.empty(0, device=device, dtype=dtype)
        return resolve_efficient_backend(options.get("backend", "auto"), probe, options.get("causal", True))

    def attend(self, q, k, v, key_padding_mask):
        out = efficient_attention(
            q,
            k,
            v,
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        return self._output_dropout(out)

    def walk_packed(self, qkv, key_padding_mask):
        if resolve_efficient_backend(self.backend, qkv, self.causal) != "cpp":
            return None
        return causal_efficient_cpp(qkv, None, None, key_padding_mask)
