"""Why a speed-up over sdpa moves between CPU models: the large-GEMM rate, the copy bandwidth and sdpa's own CPU
kernel, timed side by side on this machine (training paused or not running; threads as given).

    python scripts/cpu_model_probe.py --threads 2 --out results/robustness/cpu-model/epyc-2threads.json

Compare two machines' files: a CPU on which sdpa is slower while the GEMM rate and LinRec's matmul-bound paths are
not explains why the same code gives other ratios there (docs/measurement.md, "Why sdpa moves between CPUs").
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.environment import environment
from bench.measure import time_interleaved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    side = 2048
    a, b = torch.randn(side, side), torch.randn(side, side)
    block_a, block_b = torch.randn(512, 64, 16), torch.randn(512, 16, 512)  # flash-style blocks: (64 x 16) @ (16 x 512)
    src = torch.randn(2**25)
    dst = torch.empty_like(src)
    q, k, v = (torch.randn(4, 4, 1024, 16) for _ in range(3))  # the quick preset's kernel shape at N = 1024
    jobs = {
        "matmul_2048": lambda: torch.mm(a, b),
        "block_gemm": lambda: torch.bmm(block_a, block_b),
        "copy_128MB": lambda: dst.copy_(src),
        "sdpa_fwd_N1024": lambda: F.scaled_dot_product_attention(q, k, v),
        "sdpa_causal_fwd_N1024": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }
    medians, _ = time_interleaved({name: torch.inference_mode()(job) for name, job in jobs.items()}, args.rounds)
    row = {
        "threads": args.threads,
        "matmul_GFLOPs": 2 * side**3 / medians["matmul_2048"] / 1e9,
        "block_gemm_GFLOPs": 2 * 512 * 64 * 16 * 512 / medians["block_gemm"] / 1e9,
        "copy_GBps": 2 * src.numel() * 4 / medians["copy_128MB"] / 1e9,
        **{f"{name}_ms": seconds * 1e3 for name, seconds in medians.items() if name.startswith("sdpa")},
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        **environment("cpu"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=1, sort_keys=True) + "\n")
    print(json.dumps(row, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
