"""Attention kernels on per-head tensors: the stable public import.

Every kernel takes q, k, v of shape (B, H, N, d) and returns (B, H, N, e).
`key_padding_mask` is (B, N) bool with True = real item; padded positions never
influence real outputs, and outputs at padded positions are zero.

Shape legend: B batch, H heads, N sequence length, d head dim (q, k), e value dim,
n number of chunks, C chunk length, m random features, k_proj Linformer length.

The kernels live one family per module in `models/attention/kernels/` (common helpers,
the causal linear core, softmax, LinRec, linear, Efficient Attention, Performer,
Linformer, the memory-saving recompute, and the recurrent mixers: LRU, retention, Mamba);
the mathematics is in docs/mechanisms.md.
"""

from .kernels.causal import CAUSAL_BACKENDS, causal_linear_attention
from .kernels.common import DEFAULT_CHUNK_SIZE, NORM_EPS
from .kernels.efficient import efficient_attention
from .kernels.linear import linear_attention
from .kernels.linformer import linformer_attention
from .kernels.linrec import (
    LINREC_BACKENDS,
    LINREC_VARIANTS,
    compiled_linrec_attention,
    linrec_attention,
    resolve_linrec_backend,
)
from .kernels.lru import lru_lambda, lru_parameters, lru_scan
from .kernels.mamba import selective_scan
from .kernels.performer import orthogonal_random_features, performer_attention, performer_features
from .kernels.recompute import recompute_in_blocks
from .kernels.retention import retention_attention, retention_decays
from .kernels.softmax import sdpa_attention, softmax_attention

__all__ = [
    "CAUSAL_BACKENDS",
    "DEFAULT_CHUNK_SIZE",
    "LINREC_BACKENDS",
    "LINREC_VARIANTS",
    "NORM_EPS",
    "causal_linear_attention",
    "compiled_linrec_attention",
    "efficient_attention",
    "linear_attention",
    "linformer_attention",
    "linrec_attention",
    "lru_lambda",
    "lru_parameters",
    "lru_scan",
    "orthogonal_random_features",
    "performer_attention",
    "performer_features",
    "recompute_in_blocks",
    "resolve_linrec_backend",
    "retention_attention",
    "retention_decays",
    "selective_scan",
    "sdpa_attention",
    "softmax_attention",
]
