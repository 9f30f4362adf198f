"""Linear Transformer attention, phi(x) = elu(x) + 1.

Katharopoulos et al., "Transformers are RNNs", ICML 2020, https://arxiv.org/abs/2006.16236
"""

from .base import AttentionLayer, Capabilities, OutputDropoutMixin, register_attention
from .functional import DEFAULT_CHUNK_SIZE, linear_attention


@register_attention("linear")
class LinearAttention(OutputDropoutMixin, AttentionLayer):
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
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        self.chunk_size, self.eps = chunk_size, eps

    def attend(self, q, k, v, key_padding_mask):
        out = linear_attention(
            q, k, v, causal=self.causal, key_padding_mask=key_padding_mask, chunk_size=self.chunk_size, eps=self.eps
        )
        return self._output_dropout(out)
