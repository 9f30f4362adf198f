"""Mamba layer fwd+bwd with the selective scan before (autograd through whole-sequence broadcasts, commit 7d6637d)
and after the hand-written scan, beside `sdpa`: one thread, interleaved rounds, medians of three (the first dropped).

    python scripts/mamba_scan_evidence.py > results/mamba-scan/layer-fwd-bwd.txt
"""

import importlib.util
import subprocess
import sys
import tempfile
import time

import torch

import models.attention.kernels.mamba as after
import models.attention.mamba as layer_module
from models.attention import build_attention

BEFORE = "7d6637d"  # the last commit with the autograd scan

torch.set_num_threads(1)
with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
    handle.write(subprocess.run(["git", "show", f"{BEFORE}:models/attention/kernels/mamba.py"], capture_output=True,
                                text=True, check=True).stdout)  # fmt: skip
spec = importlib.util.spec_from_file_location("models.attention.kernels.mamba_before", handle.name)
before = importlib.util.module_from_spec(spec)
spec.loader.exec_module(before)
print(f"torch {torch.__version__}, 1 thread, {sys.platform}; B, N, width: median seconds (layer fwd+bwd, causal)")
for batch, length, width in ((64, 200, 64), (8, 1024, 128)):
    torch.manual_seed(0)
    mamba, sdpa = build_attention("mamba", width, 1, causal=True), build_attention("sdpa", width, 1, causal=True)
    x = torch.randn(batch, length, width, requires_grad=True)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[: batch // 2, : length // 3] = False  # left padding on half the rows
    times = {"before": [], "after": [], "sdpa": []}
    for round_ in range(4):
        for name in times:
            if name != "sdpa":
                layer_module.selective_scan = (before if name == "before" else after).selective_scan
            started = time.perf_counter()
            (sdpa if name == "sdpa" else mamba)(x, mask).sum().backward()
            if round_:
                times[name].append(time.perf_counter() - started)
    median = {name: sorted(values)[1] for name, values in times.items()}
    print(f"B {batch}, N {length}, width {width}: before {median['before']:.3f}, after {median['after']:.3f}, "
          f"sdpa {median['sdpa']:.3f}; after / before speed-up {median['before'] / median['after']:.2f}x")  # fmt: skip
