"""Linear Transformer attention, phi(x) = elu(x) + 1.

Katharopoulos et al., "Transformers are RNNs", ICML 2020, https://arxiv.org/abs/2006.16236
On a CPU the causal form runs as one fused C++ walk (`backend="auto"`, the default; kernels/scan_cpp.py), tested
against the chunked PyTorch path.
"""

import torch

from .base import AttentionLayer, Capabilities, CppScanMixin, OutputDropoutMixin, PackedWalkMixin, register_attention
from .functional import DEFAULT_CHUNK_SIZE, linear_attention
from .kernels.linear import resolve_linear_backend
from .kernels.scan_cpp import causal_linear_cpp


@register_attention("linear")
class LinearAttention(CppScanMixin, PackedWalkMixin, OutputDropoutMixin, AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="linear, elu+1 kernel",
        time="O(N d^2)",
        memory="O(N d + d^2)",
        reference="Katharopoulos et al., ICML 2020 (arXiv:2006.16236)",
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
        eps: float = 1e-6,
        backend: str = "auto",  # "auto": the causal form's fused C++ walk on a CPU where it builds, else "torch"
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        resolve_linear_backend(backend, torch.empty(0), causal)  # a bad name, or cpp without a causal form
        self.chunk_size, self.eps, self.backend = chunk_size, eps, backend

    @classmethod
    def backend_for(cls, options, device, dtype=torch.float32, compiled=False):
        probe = torch.empty(0, device=device, dtype=dtype)
        return resolve_linear_backend(options.get("backend", "auto"), probe, options.get("causal", True))

    def attend(self, q, k, v, key_padding_mask):
        out = linear_attention(
            q,
            k,
            v,
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            chunk_size=self.chunk_size,
            eps=self.eps,
            backend=self.backend,
        )
        return self._output_dropout(out)

    def walk_packed(self, qkv, key_padding_mask):
        if resolve_linear_backend(self.backend, qkv, self.causal) != "cpp":
            return None
        return causal_linear_cpp(qkv, None, None, key_padding_mask, self.eps)
