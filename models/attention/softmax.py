"""Softmax attention, materialised (`softmax`) and fused (`sdpa`).

Vaswani et al., "Attention Is All You Need", NeurIPS 2017, https://arxiv.org/abs/1706.03762
`sdpa` is torch.nn.functional.scaled_dot_product_attention (flash / memory-efficient /
math kernels): the honest speed baseline. `softmax` is the dense reference the tests
compare against, and the baseline RecBole (and the LinRec paper) used.
"""

from .base import AttentionLayer, Capabilities, register_attention
from .functional import sdpa_attention, softmax_attention

_VASWANI = "Vaswani et al., NeurIPS 2017 (arXiv:1706.03762)"


@register_attention("softmax")
class SoftmaxAttention(AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=True,
        family="softmax, materialised N x N",
        time="O(N^2 d)",
        memory="O(N^2)",
        reference=_VASWANI,
    )

    def attend(self, q, k, v, key_padding_mask):
        return softmax_attention(
            q,
            k,
            v,
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            dropout_p=self.dropout,
            training=self.training,
        )


@register_attention("sdpa")
class SdpaAttention(AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=True,
        family="softmax, torch fused kernel",
        time="O(N^2 d)",
        memory="O(N) (flash / mem-efficient)",
        reference=_VASWANI,
    )

    def attend(self, q, k, v, key_padding_mask):
        return sdpa_attention(
            q,
            k,
            v,
            causal=self.causal,
            key_padding_mask=key_padding_mask,
            dropout_p=self.dropout,
            training=self.training,
        )
