"""pytest-benchmark group of the peer comparison (`python -m bench peers` is the same jobs, interleaved).

    pytest tests/benchmarks/test_peers_speed.py --benchmark-only --benchmark-group-by=group

Each group holds ours, the peer (when its optional package is installed) and sdpa for one
N, mode and masking, at B = 8, dim 128, 8 heads, m = 64 features, Linformer k = 256.
"""

import functools

import pytest
import torch

from bench.environment import environment
from bench.timing.peers import peer_jobs

IMPLEMENTATIONS = [
    "kernel/sdpa",
    "kernel/linrec",
    "kernel/performer",
    "kernel/performer-pytorch",
    "layer/sdpa",
    "layer/performer",
    "layer/performer-pytorch",
    "layer/linformer",
    "layer/linformer-lucidrains",
]


@functools.cache
def _peer_jobs(seq_len: int, mode: str) -> dict:
    return peer_jobs(seq_len, batch=8, dim=128, heads=8, mode=mode, device="cpu", nb_features=64, linformer_k=256)


@pytest.mark.parametrize("mode", ["fwd_bwd", "infer"])
@pytest.mark.parametrize("seq_len", [256, 1024, 4096])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_peer(benchmark, implementation, causal, seq_len, mode):
    name = f"{implementation}/{'causal' if causal else 'bidir'}"
    run = _peer_jobs(seq_len, mode).get(name)
    if run is None:
        pytest.skip(f"{name}: not available (optional peer not installed, or no causal form)")
    level = implementation.split("/")[0]
    benchmark.group = f"peers {level} {'causal' if causal else 'bidir'} N={seq_len} {mode}"
    benchmark.extra_info.update(
        {
            "seq_len": seq_len,
            "mode": mode,
            "causal": causal,
            "batch_size": 8,
            "dim": 128,
            "heads": 8,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": environment()["device"],
        }
    )
    benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
