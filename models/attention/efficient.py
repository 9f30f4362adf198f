"""Efficient Attention: softmax over query features, softmax over key positions.

Shen et al., "Efficient Attention: Attention with Linear Complexities", WACV 2021,
https://arxiv.org/abs/1812.01243
NOTE: the paper is bidirectional; the causal form here takes the key softmax over the
prefix j <= i (the same rescaling as causal LinRec), computed stably in float32.
"""

from .base import AttentionLayer, Capabilities, OutputDropoutMixin, register_attention
from .functional import DEFAULT_CHUNK_SIZE, efficient_attention


@register_attention("efficient")
class EfficientAttention(OutputDropoutMixin, AttentionLayer):
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

    def __init__(self, dim, heads, *, causal=False, max_len=None, dropout=0.0, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        self.chunk_size = chunk_size

    def attend(self, q, k, v, key_padding_mask):
        out = efficient_attention(
            q, k, v, causal=self.causal, key_padding_mask=key_padding_mask, chunk_size=self.chunk_size
        )
        return self._output_dropout(out)
