"""What a sweep measures: axes whose product is a list of cells, and the named presets (quick, paper, gpu, ...)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from models.attention import list_attentions

from ..environment import unknown_name
from .cells import Cell


@dataclass
class Grid:
    """A product of axes; a preset is a list of grids."""

    attention: list[tuple[str, dict]]
    seq_len: list[int]
    batch_size: list[int]
    causal: list[bool] = field(default_factory=lambda: [False, True])
    mode: list[str] = field(default_factory=lambda: ["fwd_bwd"])
    dtype: list[str] = field(default_factory=lambda: ["fp32"])
    dim: int = 128
    heads: int = 8
    level: str = "attention"
    padding: list[float] = field(default_factory=lambda: [0.0])
    attention_dropout: list[float | None] = field(default_factory=lambda: [None])  # None: the level's default
    compile: list[bool] = field(default_factory=lambda: [False])

    def cells(self, device: str) -> list[Cell]:
        axes = itertools.product(
            self.attention,
            self.causal,
            self.mode,
            self.dtype,
            self.padding,
            self.attention_dropout,
            self.compile,
            self.batch_size,
            self.seq_len,
        )
        return [
            Cell(self.level, name, causal, n, b, self.dim, self.heads, mode, dtype, device, dict(opts), pad, drop, comp)
            for (name, opts), causal, mode, dtype, pad, drop, comp, b, n in axes
        ]


def mechanisms(overrides: dict[str, dict] | None = None) -> list[tuple[str, dict]]:
    """Every registered configuration (plugins included), with per-preset option overrides by mechanism."""
    overrides = overrides or {}
    return [(name, {**options, **overrides.get(name, {})}) for name, options in list_attentions().values()]


def presets() -> dict[str, list[Grid]]:
    """Built when asked, so mechanisms registered by plugins are in every preset."""
    every = mechanisms()
    return {
        # a few minutes on a 2-core CPU: every mechanism once, the crossover region, a batch sweep
        "quick": [
            Grid(mechanisms({"linformer": {"k": 64}}), seq_len=[64, 256, 1024, 4096], batch_size=[4], dim=64, heads=4),
            Grid([("sdpa", {}), ("linrec", {})], seq_len=[256], batch_size=[1, 16], dim=64, heads=4, causal=[True]),
        ],
        # the paper-style study (hidden 128, 8 heads of 16): N from 50 to 8192 at B=8, and a batch sweep
        "paper": [
            Grid(every, seq_len=[50, 200, 512, 1024, 2048, 4096, 8192], batch_size=[8], mode=["fwd_bwd", "infer"]),
            Grid(every, seq_len=[200], batch_size=[1, 32, 128], mode=["fwd_bwd"]),
            # kernel level (projections excluded) out to N=16384, for the memory comparison with fused attention
            Grid(
                [("sdpa", {}), ("linrec", {}), ("linrec", {"variant": "official"}), ("linear", {})],
                seq_len=[256, 1024, 4096, 16384],
                batch_size=[8],
                level="kernel",
            ),
            # whole recommender steps (SASRec causal / BERT4Rec bidirectional, 3,706 items), the authors' width;
            # with RecBole's dropout on attention (None: 0.2) and without: dropout on the probabilities takes sdpa
            # off its fused CPU kernel, so the two answer different questions
            Grid(
                [m for m in every if m[0] != "linformer"],
                seq_len=[50, 200, 1024, 4096],
                batch_size=[32],
                level="model",
                mode=["fwd_bwd", "infer"],
                attention_dropout=[None, 0.0],
            ),
        ],
        # fair rivals: every causal mixer at its best CPU path (LinRec's and the scans' C++, retention's chunkwise
        # form) beside sdpa and linear attention, out to N = 16,384; one sequence, so threads are the only parallelism
        "mixers": [
            Grid(
                [(n, {}) for n in ("sdpa", "linear", "linrec", "retention", "lru", "mamba")],
                seq_len=[256, 1024, 4096, 16384],
                batch_size=[1],
                mode=["fwd_bwd", "infer"],
            )
        ],
        # recommender lengths at SASRec's width (64, 2 heads), a training batch with a third of it padding: where
        # the fused LinRec must beat sdpa on every CPU kind (run with --threads 1 and --threads 2)
        "short-n": [
            Grid(
                [("sdpa", {}), ("linrec", {})],
                seq_len=[50, 200],
                batch_size=[128],
                dim=64,
                heads=2,
                mode=["fwd_bwd", "infer"],
                padding=[0.33],
            )
        ],
        # for a lent GPU: longer sequences, bigger batches, bf16 too
        "gpu": [
            Grid(
                every,
                seq_len=[50, 200, 512, 1024, 2048, 4096, 8192, 16384, 32768],
                batch_size=[8],
                mode=["fwd_bwd", "infer"],
                dtype=["fp32", "bf16"],
            ),
            Grid(every, seq_len=[200], batch_size=[1, 32, 256, 2048], mode=["fwd_bwd"]),
            Grid(
                [("sdpa", {}), ("linrec", {}), ("linear", {})],
                seq_len=[1024, 4096, 16384, 65536],
                batch_size=[8],
                level="kernel",
                mode=["fwd_bwd"],
            ),
        ],
    }


def preset_cells(preset: str, device: str) -> list[Cell]:
    grids = presets()
    if preset not in grids:
        raise ValueError(unknown_name("--preset", "sweep preset", preset, grids))
    cells = []
    for grid in grids[preset]:
        cells += [c for c in grid.cells(device) if c not in cells]
    return cells
