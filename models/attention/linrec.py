"""LinRec: L2-normalised linear attention.

Liu et al., "Linear Attention Mechanism for Long-term Sequential Recommender Systems",
SIGIR 2023, https://arxiv.org/abs/2411.01537

variant="paper" (default): rho_row(elu(Q)) (rho_col(elu(K))^T V), exact prefix form when
causal. variant="official": the authors' released code (per-token L2 norms, / sqrt(d)).
NOTE: the released code ignores attention masks entirely; this layer always honours the
padding mask and `causal` (see functional.linrec_attention). Dropout: see OutputDropoutMixin.
Options: chunk_size (causal chunk length), recompute_heads (memory-saving blockwise
backward), compile (opt-in torch.compile of the kernel), backend ("auto", the default: the fused
C++ kernel on CPU for the paper form, else "torch"; "fla": causal prefix product by
flash-linear-attention on CUDA; "cpp": the paper form as fused C++ passes on CPU). On the "cpp"
path the layer hands the packed projection to the kernel as it is (attend_packed).
NOTE: compile=True keeps torch.compile's default shapes: static at the first length, a dynamic-shape
graph once the length changes (1.8x slower than static at N = 200 here, docs/results-cpu.md), because a
static graph per batch length would pass Dynamo's recompile limit in length-bucketed training.
"""

import torch

from .base import AttentionLayer, Capabilities, OutputDropoutMixin, UnsupportedAttentionConfig, register_attention
from .functional import (
    DEFAULT_CHUNK_SIZE,
    LINREC_BACKENDS,
    LINREC_VARIANTS,
    compiled_linrec_attention,
    linrec_attention,
    resolve_linrec_backend,
)
from .kernels.linrec import linrec_backend_for
from .kernels.linrec_cpp import extension_error, linrec_cpp_packed


@register_attention("linrec", configs={"linrec": {}, "linrec-official": {"variant": "official"}})
class LinRecAttention(OutputDropoutMixin, AttentionLayer):
    capabilities = Capabilities(
        causal=True,
        padding_mask=True,
        needs_max_len=False,
        exact_softmax=False,
        family="linear, L2-normalised elu features",
        time="O(N d^2)",
        memory="O(N d + d^2)",
        reference="Liu et al., SIGIR 2023 (arXiv:2411.01537)",
    )

    def __init__(
        self,
        dim,
        heads,
        *,
        causal=False,
        max_len=None,
        dropout=0.0,
        variant: str = "paper",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        recompute_heads: int | None = None,
        compile: bool = False,
        backend: str = "auto",
    ):
        super().__init__(dim, heads, causal=causal, max_len=max_len, dropout=dropout)
        if variant not in LINREC_VARIANTS:
            raise ValueError(f"linrec: unknown variant {variant!r}; expected one of {LINREC_VARIANTS}")
        if backend not in LINREC_BACKENDS:
            raise ValueError(f"linrec: unknown backend {backend!r}; expected one of {LINREC_BACKENDS}")
        if backend == "cpp" and (variant != "paper" or recompute_heads or compile):
            raise UnsupportedAttentionConfig(
                "linrec backend='cpp' implements the paper form only (no recompute_heads, no compile)"
            )
        if compile and backend == "auto":
            backend = "torch"  # what torch.compile traces
        self.variant, self.chunk_size, self.recompute_heads, self.backend = (
            variant,
            chunk_size,
            recompute_heads,
            backend,
        )
        self.compiled = compile
        self.kernel = compiled_linrec_attention() if compile else linrec_attention

    @classmethod
    def backend_for(cls, options, device, dtype=torch.float32, compiled=False):
        return linrec_backend_for(options, device, dtype, compiled=compiled)

    @classmethod
    def prepare(cls, device):
        if torch.device(device).type == "cpu":
            extension_error()  # builds the C++ kernel once per machine (about a minute), or records why not

    def attend_packed(self, qkv, key_padding_mask):
        if resolve_linrec_backend(self.backend, qkv, self.variant, self.recompute_heads) == "cpp":
            return self._output_dropout(linrec_cpp_packed(qkv, key_padding_mask, self.causal))  # (B, N, H, d)
        return super().attend_packed(qkv, key_padding_mask)

    def attend(self, q, k, v, key_padding_mask):
        out = self.kernel(
            q,
            k,
            v,
            causal=self.causal,
            variant=self.variant,
            key_padding_mask=key_padding_mask,
            chunk_size=self.chunk_size,
            recompute_heads=self.recompute_heads,
            backend=self.backend,
        )
        return self._output_dropout(out)
