"""Performer attention with FAVOR+ positive orthogonal random features.

Choromanski et al., "Rethinking Attention with Performers", ICLR 2021,
https://arxiv.org/abs/2009.14794
Features are redrawn every `redraw_interval` training forward passes (0 = never) and
are fixed in eval mode. The key stabiliser is data-independent (see
functional.performer_features), so causal mode cannot leak future positions.
On a CPU the causal form runs as one fused C++ walk (`backend="auto"`, the default; kernels/scan_cpp.py) that makes
the features inside it and maps their gradients back onto q and k, tested against the chunked PyTorch path.
"""

import torch

from .base import AttentionLayer, Capabilities, CppScanMixin, OutputDropoutMixin, PackedWalkMixin, register_attention
from .functional import DEFAULT_CHUNK_SIZE, orthogonal_random_features, performer_attention
from .kernels.performer import PERFORMER_EPS, resolve_performer_backend
from .kernels.scan_cpp import causal_performer_cpp


@register_attention("performer", configs={"performer": {"nb_features": 64}})
class PerformerAttention(CppScanMixin, PackedWalkMixin, OutputDropoutMixin, AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="approximate softmax, random features",
        time="O(N m d)",
        memory="O(N m + m d)",
        reference="Choromanski et al., ICLR 2021 (arXiv:2009.14794)",
        stateful_training=True,
    )

    def __init__(
        self,
        dim,
        heads,
        *,
        causal=False,
        max_len=None,
        dropout=0.0,
        nb_features: int = 64,
        redraw_interval: int = 1000,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        backend: str = "auto",  # "auto": the causal form's fused C++ walk on a CPU where it builds, else "torch"
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        resolve_performer_backend(backend, torch.empty(0), causal)  # a bad name, or cpp without a causal form
        if nb_features < 1:
            raise ValueError(f"performer: nb_features must be >= 1, got {nb_features}")
        if redraw_interval < 0:
            raise ValueError(f"performer: redraw_interval must be >= 0 (0 = never), got {redraw_interval}")
        self.nb_features, self.redraw_interval, self.chunk_size = nb_features, redraw_interval, chunk_size
        self.backend = backend
        self.register_buffer("projection", orthogonal_random_features(nb_features, self.head_dim))  # (m, d)
        self.calls_since_redraw = 0

    @classmethod
    def backend_for(cls, options, device, dtype=torch.float32, compiled=False):
        probe = torch.empty(0, device=device, dtype=dtype)
        return resolve_performer_backend(options.get("backend", "auto"), probe, options.get("causal", True))

    @torch.no_grad()
    def redraw_features(self) -> None:
        self.projection.copy_(
            orthogonal_random_features(self.nb_features, self.head_dim, device=self.projection.device)
        )
        self.calls_since_redraw = 0

    def _count_call(self) -> None:
        """Redraws the features every redraw_interval training calls."""
        if self.training and self.redraw_interval:
            if self.calls_since_redraw >= self.redraw_interval:
                self.redraw_features()
            self.calls_since_redraw += 1

    def walk_packed(self, qkv, key_padding_mask):
        if resolve_performer_backend(self.backend, qkv, self.causal) != "cpp":
            return None
        self._count_call()
        return causal_performer_cpp(qkv, None, None, key_padding_mask, self.projection, PERFORMER_EPS)

    def attend(self, q, k, v, key_padding_mask):
        self._count_call()
        out = performer_attention(
            q,
            k,
            v,
            self.projection,
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        return self._output_dropout(out)
