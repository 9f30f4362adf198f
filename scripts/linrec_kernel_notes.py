"""Evidence behind the README's notes on LinRec's CPU kernels (run with nothing else on the machine).

    PYTHONPATH=. python scripts/linrec_kernel_notes.py > results/peers/linrec-kernel-notes.txt

1. ELU: ATen's elu (expm1-based) against exp on one cache-sized block.
2. Where the cache-blocked bidirectional forward spends its time (profiler, N = 8192).
3. Causal fwd+bwd at N = 4096: the fused query-scaling Function against the same scaling
   written as plain autograd ops, interleaved with sdpa in one run.
"""

import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import profile

from bench.environment import environment
from bench.measure import time_interleaved
from models.attention import functional as fn
from models.attention.kernels import linrec as linrec_kernels


def elu_costs() -> None:
    block = torch.randn(4, 8192, 16)  # 2 MB, cache-sized
    out = torch.empty_like(block)
    jobs = {
        "F.elu": lambda: F.elu(block),
        "expm1": lambda: torch.expm1(block),
        "exp": lambda: torch.exp(block),
        "exp-based elu (into a buffer)": lambda: linrec_kernels._elu_into(block, out),
        "copy": lambda: out.copy_(block),
    }
    times = {name: [] for name in jobs}
    for _ in range(200):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
    print("1. ELU on a (4, 8192, 16) block, median of 200, us:")
    for name, t in times.items():
        print(f"   {name:32} {statistics.median(t) * 1e6:8.1f}")


def blocked_forward_profile() -> None:
    q, k, v = (torch.randn(8, 8, 8192, 16) for _ in range(3))
    with torch.inference_mode():
        for _ in range(3):
            fn.linrec_attention(q, k, v)
        with profile() as prof:
            for _ in range(5):
                fn.linrec_attention(q, k, v)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print("\n2. Bidirectional LinRec forward, inference, B=8, H=8, N=8192, d=16: share of self CPU time")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]:
        print(f"   {e.key:28} {100 * e.self_cpu_time_total / total:5.1f} %  ({e.count // 5} calls per forward)")


def autograd_query_scaling(fq, fk, inv_n_prefix):
    dim = fq.shape[-1]
    inv_col = fk.square().cumsum(dim=-2).clamp_min(fn.NORM_EPS**2).rsqrt()
    inv_row = fq.square().sum(dim=-1, keepdim=True).mul(dim).clamp_min(fn.NORM_EPS**2).rsqrt()
    return fq * (inv_row * inv_n_prefix) * inv_col


def causal_ab() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, 8, 4096, 16, requires_grad=True) for _ in range(3))
    grad = torch.randn(8, 8, 4096, 16)
    inv_n_prefix = torch.arange(1, 4097, dtype=torch.float32).rsqrt().view(1, 1, -1, 1)

    def step(scale):
        def run():
            for t in (q, k, v):
                t.grad = None
            fq, fk = F.elu(q), F.elu(k)
            fn.causal_linear_attention(scale(fq, fk, inv_n_prefix), fk, v).backward(grad)

        return run

    def sdpa():
        for t in (q, k, v):
            t.grad = None
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

    same = torch.allclose(
        linrec_kernels._CausalLinRecQueries.apply(F.elu(q), F.elu(k), inv_n_prefix),
        autograd_query_scaling(F.elu(q), F.elu(k), inv_n_prefix),
        atol=1e-6,
    )
    medians, _ = time_interleaved(
        {
            "fused": step(linrec_kernels._CausalLinRecQueries.apply),
            "autograd": step(autograd_query_scaling),
            "sdpa": sdpa,
        },
        rounds=7,
    )
    print("\n3. Causal LinRec fwd+bwd, B=8, H=8, N=4096, d=16 (kernel level), median of 7 interleaved rounds:")
    for name, seconds in medians.items():
        print(f"   {name:10} {seconds * 1e3:8.1f} ms")
    print(
        f"   same output: {same}; autograd / fused {medians['autograd'] / medians['fused']:.2f}; sdpa / fused "
        f"{medians['sdpa'] / medians['fused']:.2f}"
    )


if __name__ == "__main__":
    env = environment("cpu")
    print(
        f"{env['device']}, torch {env['torch']}, {env['threads']} threads, commit {env['commit']}, {env['timestamp']}\n"
    )
    elu_costs()
    blocked_forward_profile()
    causal_ab()
