"""Is each linear-time mechanism's kernel at its best? Each against a plain rewrite of the same formula.

    python scripts/plain_rewrites.py --out results/peers/plain-rewrites

The plain rewrites below are the textbook forms, as a user would first write them: whole-sequence cumulative
sums of outer products for the causal forms (O(N d e) memory), two matrix products for the bidirectional ones.
Each is checked equal to the suite's kernel (values, then timed side by side: kernel level, forward + backward,
interleaved rounds, medians). A suite kernel more than 1.2x slower than its plain rewrite is not at its best.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.environment import environment
from models.attention.kernels.efficient import efficient_attention
from models.attention.kernels.linear import linear_attention
from models.attention.kernels.performer import orthogonal_random_features, performer_attention, performer_features


def _normalised(fq, fk, v, causal, eps):
    """phi(q)^T S_i / phi(q)^T z_i, the prefix S_i = sum_{j<=i} phi(k_j) v_j^T by cumsum (causal)."""
    if not causal:
        return (fq @ (fk.transpose(-1, -2) @ v)) / (fq @ fk.sum(-2, keepdim=True).transpose(-1, -2)).clamp_min(eps)
    states = torch.cumsum(fk[..., :, None] * v[..., None, :], dim=-3)  # (B, H, N, d, e)
    numerator = torch.einsum("bhnd,bhnde->bhne", fq, states)
    normaliser = (fq * torch.cumsum(fk, dim=-2)).sum(-1, keepdim=True)
    return numerator / normaliser.clamp_min(eps)


def plain_linear(q, k, v, causal):
    return _normalised(F.elu(q) + 1, F.elu(k) + 1, v, causal, 1e-6)


def plain_efficient(q, k, v, causal):
    q_soft = q.softmax(-1)
    if not causal:
        return q_soft @ (k.softmax(-2).transpose(-1, -2) @ v)
    weights = torch.exp(k - k.amax(dim=-2, keepdim=True))  # one shift per channel: it cancels in the ratio
    states = torch.cumsum(weights[..., :, None] * v[..., None, :], dim=-3)  # (B, H, N, d, e)
    totals = torch.cumsum(weights, dim=-2)  # (B, H, N, d)
    return torch.einsum("bhnd,bhnde->bhne", q_soft / totals, states)


def plain_performer(q, k, v, causal, projection):
    fq = performer_features(q, projection, is_query=True)
    fk = performer_features(k, projection, is_query=False)
    return _normalised(fq, fk, v, causal, 1e-15)


def _time(fn, q, k, v, grad) -> float:
    for t in (q, k, v):
        t.grad = None
    started = time.perf_counter()
    fn(q, k, v).backward(grad)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", default="1024,4096")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="results/peers/plain-rewrites")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    heads, dim = 8, 16
    projection = orthogonal_random_features(64, dim)
    pairs = {
        "linear": (lambda q, k, v, c: linear_attention(q, k, v, causal=c), plain_linear),
        "efficient": (lambda q, k, v, c: efficient_attention(q, k, v, causal=c), plain_efficient),
        "performer": (
            lambda q, k, v, c: performer_attention(q, k, v, projection, causal=c),
            lambda q, k, v, c: plain_performer(q, k, v, c, projection),
        ),
    }
    rows = []
    for n in map(int, args.seq_len.split(",")):
        q, k, v = (torch.randn(1, heads, n, dim, requires_grad=True) for _ in range(3))
        grad = torch.randn(1, heads, n, dim)
        for causal in (True, False):
            for name, (suite, plain) in pairs.items():
                with torch.no_grad():
                    gap = (suite(q, k, v, causal) - plain(q, k, v, causal)).abs().max().item()
                times = {"suite": [], "plain": []}
                for _ in range(args.rounds + 1):  # the first round warms up
                    for key, fn in (("suite", suite), ("plain", plain)):
                        times[key].append(
                            _time(lambda a, b, c, fn=fn, causal=causal: fn(a, b, c, causal), q, k, v, grad)
                        )
                medians = {key: statistics.median(values[1:]) * 1e3 for key, values in times.items()}
                rows.append(
                    {"mechanism": name, "causal": causal, "seq_len": n, "max_abs_difference": gap,
                     "suite_ms": medians["suite"], "plain_ms": medians["plain"],
                     "suite_over_plain": medians["suite"] / medians["plain"]}
                )  # fmt: skip
                print(
                    f"{name:10s} {'causal' if causal else 'bidir ':6s} N={n:5d}  suite {medians['suite']:8.1f} ms  "
                    f"plain {medians['plain']:8.1f} ms  suite/plain {medians['suite'] / medians['plain']:.2f}  "
                    f"max |diff| {gap:.1e}",
                    flush=True,
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"heads": heads, "head_dim": dim, "batch_size": 1, "rounds": args.rounds, **environment("cpu")}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Each linear-time kernel against a plain rewrite of its formula",
        "",
        f"Kernel level, forward + backward, batch 1, {heads} heads of {dim}, one thread, interleaved medians of "
        f"{args.rounds} rounds; {meta['device']} ({meta['cpu_capability']}), torch {meta['torch']}, commit "
        f"{meta['commit'][:12]}. Generated by scripts/plain_rewrites.py.",
        "",
        "| mechanism | attention | N | suite ms | plain ms | suite / plain | max abs difference |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['mechanism']} | {'causal' if r['causal'] else 'bidirectional'} | {r['seq_len']} | {r['suite_ms']:.1f} | "
        f"{r['plain_ms']:.1f} | {r['suite_over_plain']:.2f} | {r['max_abs_difference']:.1e} |"
        for r in rows
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
