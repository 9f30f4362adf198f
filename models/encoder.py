"""A Transformer encoder for item sequences that takes any registered attention by name.

Shared by SASRec and BERT4Rec: item + learned position embeddings, dropout, L blocks
(attention, position-wise feed-forward, residuals, LayerNorm before or after), and
item scores by dot product with the (tied) item embeddings.
Sequences are left-padded (item id 0), so the last column is the most recent item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .attention import available_attentions, build_attention
from .item_loss import full_softmax_cross_entropy


@dataclass
class EncoderConfig:
    num_items: int  # real items are 1..num_items; 0 is padding
    seq_len: int = 200  # N: the most recent items the model reads (its position table's size)
    hidden: int = 64  # model width (the authors: 128)
    heads: int = 2  # the authors: 8 (head dim 16)
    layers: int = 2
    inner: int = 256  # feed-forward width
    dropout: float = 0.2  # embeddings and residual branches (and attention, unless attention_dropout is set)
    attention_dropout: float | None = None  # None: same as dropout. Softmax drops probabilities; kernels without
    # a probability matrix drop their output before the output projection (see AttentionLayer)
    attention: str = "sdpa"  # any name from models.attention.available_attentions()
    attention_options: dict = field(default_factory=dict)  # e.g. {"variant": "official"}
    norm: str = "post"  # "post" (RecBole / the LinRec authors), "pre" (more stable) or "sasrec" (see TransformerBlock)
    activation: str = "gelu"  # "gelu" or "relu"
    embedding_scale: bool = False  # item embeddings x sqrt(hidden) (SASRec paper, SASRec+); RecBole: off
    embedding_norm: bool = True  # LayerNorm on the summed embeddings (RecBole); pre-LN recipes drop it
    feed_forward_dropout: bool = False  # also drop inside the feed-forward, after the activation (SASRec's code)
    layer_norm_eps: float = 1e-12  # SASRec's code: 1e-8
    init_std: float = 0.02
    attention_init: str = "normal"  # q/k/v weights: "normal" (std init_std, RecBole) or "xavier" (uniform over the
    # stacked (3 dim, dim) matrix: nn.MultiheadAttention's default, which the SASRec PyTorch ports inherit)
    extra_tokens: int = 0  # ids after num_items with embeddings (BERT4Rec's [MASK])
    positions: str = "from_newest"  # "from_newest": the most recent item always has the last position;
    # "from_oldest": the window's oldest item has position 0 (SASRec's code, which pads on the right)

    def __post_init__(self):
        if self.attention not in available_attentions():
            raise ValueError(f"attention: unknown {self.attention!r}; registered: {', '.join(available_attentions())}")
        if self.norm not in ("pre", "post", "sasrec"):
            raise ValueError(f"norm must be 'pre', 'post' or 'sasrec', got {self.norm!r}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {self.activation!r}")
        if self.attention_init not in ("normal", "xavier"):
            raise ValueError(f"attention_init must be 'normal' or 'xavier', got {self.attention_init!r}")
        if self.positions not in ("from_newest", "from_oldest"):
            raise ValueError(f"positions must be 'from_newest' or 'from_oldest', got {self.positions!r}")


class TransformerBlock(nn.Module):
    def __init__(self, config: EncoderConfig, causal: bool):
        super().__init__()
        self.norm = config.norm
        attention_dropout = config.dropout if config.attention_dropout is None else config.attention_dropout
        self.attention = build_attention(
            config.attention,
            config.hidden,
            config.heads,
            causal=causal,
            max_len=config.seq_len,
            dropout=attention_dropout,
            **config.attention_options,
        )
        self.feed_forward = nn.Sequential(
            nn.Linear(config.hidden, config.inner),
            nn.GELU() if config.activation == "gelu" else nn.ReLU(),
            nn.Dropout(config.dropout) if config.feed_forward_dropout else nn.Identity(),
            nn.Linear(config.inner, config.hidden),
        )
        self.norm_attention = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.norm_feed_forward = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        if self.norm == "pre":
            x = x + self.dropout(self.attention(self.norm_attention(x), padding_mask))
            return x + self.dropout(self.feed_forward(self.norm_feed_forward(x)))
        if self.norm == "sasrec":
            # the SASRec reference implementations (Kang & McAuley's, and the PyTorch port SASRec+ builds on): only
            # the queries are normalised (keys and values come from x itself), and each sublayer's residual starts
            # from the normalised input, not from x
            queries = self.norm_attention(x)
            x = queries + self.dropout(self.attention(queries, padding_mask, context=x))
            x = self.norm_feed_forward(x)
            return x + self.dropout(self.feed_forward(x))
        x = self.norm_attention(x + self.dropout(self.attention(x, padding_mask)))
        return self.norm_feed_forward(x + self.dropout(self.feed_forward(x)))


class SequenceEncoder(nn.Module):
    """(B, N) item ids, left-padded with 0 -> (B, N, hidden) states."""

    def __init__(self, config: EncoderConfig, causal: bool):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1 + config.extra_tokens, config.hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(config.seq_len, config.hidden)
        self.embedding_norm = (
            nn.LayerNorm(config.hidden, eps=config.layer_norm_eps) if config.embedding_norm else nn.Identity()
        )
        self.embedding_multiplier = config.hidden**0.5 if config.embedding_scale else 1.0
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(config, causal) for _ in range(config.layers))
        self.final_norm = (
            nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
            if config.norm in ("pre", "sasrec")
            else nn.Identity()
        )
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        if self.config.attention_init == "xavier" and hasattr(module, "qkv"):
            nn.init.xavier_uniform_(module.qkv.weight)  # after the Linear rule above: apply() visits children first

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        length = items.shape[1]
        if length > self.config.seq_len:
            raise ValueError(f"sequence length {length} exceeds seq_len {self.config.seq_len}")
        padding_mask = items != 0  # (B, N) True = real item
        if self.config.positions == "from_oldest":
            # the i-th real item of a row has position i, as in right-padded code (padding: 0, masked anyway)
            positions = (padding_mask.cumsum(1) - 1).clamp_min(0)  # (B, N)
            position_embeddings = self.position_embedding(positions)  # (B, N, hidden)
        else:
            # absolute positions aligned to the right end, so the most recent item always has the last position
            positions = torch.arange(self.config.seq_len - length, self.config.seq_len, device=items.device)
            position_embeddings = self.position_embedding(positions)[None]  # (1, N, hidden)
        x = self.item_embedding(items) * self.embedding_multiplier + position_embeddings  # (B, N, hidden)
        x = self.dropout(self.embedding_norm(x))
        if bool(padding_mask.all()):  # nothing padded: no mask, so torch's flash kernels stay eligible for sdpa
            padding_mask = None
        for block in self.blocks:
            x = block(x, padding_mask)
        return self.final_norm(x)

    def item_matrix(self) -> torch.Tensor:
        """(I, hidden) embeddings of the real items 1..I, tied with the input embeddings (row j is item j + 1)."""
        return self.item_embedding.weight[1 : self.config.num_items + 1]

    def item_scores(self, states: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., num_items) scores of the real items 1..I (column j is item j + 1)."""
        return states @ self.item_matrix().T

    def item_loss(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all items of (T, hidden) states against (T,) target ids 1..I."""
        return full_softmax_cross_entropy(states, self.item_matrix(), targets - 1)


def left_pad(sequences: list[list[int]], length: int, device=None) -> torch.Tensor:
    """The last `length` items of each sequence, left-padded with 0: (B, length) long."""
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tail = seq[-length:] if length else []
        if tail:
            out[row, length - len(tail) :] = torch.as_tensor(tail)
    return out.to(device) if device is not None else out
