"""The attention matrix LinRec implies, measured on seeded random inputs: is every row's weight bounded (the paper's
normalisation) and is every weight non-negative (as softmax's are)? One row into results/claims/, which the claims
ledger (bench/reports/claims.py) reads.

    python scripts/linrec_properties.py --out results/claims/linrec-properties.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.environment import environment
from models.attention.kernels.linrec import linrec_attention


def measure(n: int = 64, d: int = 16, batch: int = 8, heads: int = 2, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, heads, n, d, generator=generator) for _ in range(2))
    identity = torch.eye(n).expand(batch, heads, n, n)  # values = I: the output is the implied attention matrix
    row = {"level": "property", "mechanism": "linrec", "variant": "paper", "seq_len": n, "head_dim": d, "seed": seed}
    for causal in (False, True):
        matrix = linrec_attention(q, k, identity, causal=causal, backend="torch")  # (B, H, N, N)
        weights = matrix[..., torch.tril(torch.ones(n, n, dtype=torch.bool))] if causal else matrix
        name = "causal" if causal else "bidirectional"
        row[f"{name}_largest_row_abs_sum"] = float(matrix.abs().sum(-1).max())
        row[f"{name}_negative_share"] = float((weights < 0).float().mean())
    return {**row, **environment("cpu")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/claims/linrec-properties.json", help="the row's file (JSON)")
    out = Path(parser.parse_args().out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(measure(), indent=1, sort_keys=True) + "\n")
    print(out.read_text())
