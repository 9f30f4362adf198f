"""pytest-benchmark suite: mechanism x N x mode at the paper's width (8 heads of 16).

    pytest tests/benchmarks --benchmark-only                      # run
    pytest tests/benchmarks --benchmark-only --benchmark-autosave # store in .benchmarks/
    pytest tests/benchmarks --benchmark-only --benchmark-compare  # compare with the last saved run
    pytest tests/benchmarks --benchmark-only --benchmark-group-by=param:seq_len,param:causal

Peak memory (measured by bench.measure, in-process) and the shape go to extra_info.
For sweeps, plots and OOM-safe isolation use `python -m bench sweep` instead.
"""

import pytest
import torch

from bench.environment import environment
from bench.measure import peak_memory
from bench.timing.cells import Cell, make_workload
from models.attention import available_attentions, list_attentions

MECHANISMS = list_attentions()  # every registered configuration (plugins included), label -> (name, options)
BATCH, DIM, HEADS = 4, 128, 8


@pytest.mark.parametrize("mode", ["fwd_bwd", "infer"])
@pytest.mark.parametrize("seq_len", [256, 1024, 4096])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_attention_layer(benchmark, mechanism, causal, seq_len, mode):
    name, options = MECHANISMS[mechanism]
    if causal and not available_attentions()[name]["causal"]:
        pytest.skip(f"{name} has no causal form")
    if name == "softmax" and seq_len > 1024 and mode == "fwd_bwd":
        pytest.skip("materialised softmax at N=4096 fwd+bwd takes minutes here; see the sweep")
    cell = Cell("attention", name, causal, seq_len, BATCH, DIM, HEADS, mode, "fp32", "cpu", options)
    run = make_workload(cell)
    run()  # warm-up
    with peak_memory("cpu") as peak:
        run()
    benchmark.group = f"{'causal' if causal else 'bidir'} N={seq_len} {mode}"
    benchmark.extra_info.update(
        {
            "batch_size": BATCH,
            "seq_len": seq_len,
            "dim": DIM,
            "heads": HEADS,
            "mode": mode,
            "causal": causal,
            "options": options,
            "peak_mem_bytes": peak["bytes"],
            "mem_method": peak["method"],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": environment()["device"],
        }
    )
    benchmark.pedantic(run, rounds=5, warmup_rounds=1, iterations=1)
