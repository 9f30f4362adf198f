"""torchrun data-parallel training next to its one-process twin, on ML-100K.

    python scripts/torchrun_evidence.py --out results/distributed/torchrun-ml-100k [--epochs 20]

Trains SASRec (recipe sasrec-plus-port, `sdpa`, dropout 0 so the runs can agree to rounding) three
ways on the same cores: one process on one thread, one process on two threads, and torchrun with two
processes of one thread each. Copies each results.json (no checkpoints) into OUT and writes OUT/README.md:
seconds per epoch, test metrics under both protocols, and how far each run's losses and metrics are
from the one-process, one-thread run. Run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.environment import REPO_ROOT, environment

RUNS = {  # name: (processes, threads per process)
    "one-process-1-thread": (1, 1),
    "one-process-2-threads": (1, 2),
    "torchrun-2-processes-1-thread": (2, 1),
}


def train(name: str, processes: int, threads: int, args, work: Path) -> dict:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    flags = ["train", "--dataset", "ml-100k", "--recipe", "sasrec-plus-port", "--attention", "sdpa"]
    flags += ["--dropout", "0", "--epochs", str(args.epochs), "--patience", str(args.epochs), "--threads", str(threads)]
    flags += ["--no-progress", "--out", str(out)]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    launcher = [sys.executable, "-m", "bench"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        launcher += ["-m", "bench"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    subprocess.run([*launcher, *flags], check=True, cwd=REPO_ROOT, env=env)
    return json.loads((out / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/distributed/torchrun-ml-100k")
    parser.add_argument("--work", default="runs/torchrun-evidence", help="run folders (checkpoints stay here)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    out, work = REPO_ROOT / args.out, REPO_ROOT / args.work
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, (processes, threads) in RUNS.items():
        results[name] = train(name, processes, threads, args, work)
        (out / f"{name}.json").write_text(json.dumps(results[name], indent=1) + "\n")

    base = results["one-process-1-thread"]
    lines = [
        "# torchrun (DDP, gloo) against one process: ML-100K",
        "",
        f"SASRec, recipe `sasrec-plus-port`, `sdpa`, N = {base['config']['seq_len']}, global batch "
        f"{base['config']['batch_size']}, dropout 0, {args.epochs} epochs, seed {base['config']['seed']}; "
        f"{environment()['device']}, torch {base['torch']}, commit {base['commit']}. "
        "Produced by `python scripts/torchrun_evidence.py` on an otherwise quiet machine.",
        "",
        "| run | processes x threads | s / epoch (median) | test NDCG@10 seen excl. | test NDCG@10 all "
        "| max abs loss diff vs 1x1 | valid metrics equal to 1x1 (every epoch) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in results.items():
        processes, threads = RUNS[name]
        loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(run["history"], base["history"], strict=True))
        equal = all(a["valid"] == b["valid"] for a, b in zip(run["history"], base["history"], strict=True))
        lines.append(
            f"| {name} | {processes} x {threads} | {run['seconds_per_epoch']:.2f} | "
            f"{run['test']['seen_excluded']['ndcg@10']:.4f} | {run['test']['all']['ndcg@10']:.4f} | "
            f"{loss_diff:.1e} | {'yes' if equal else 'no'} |"
        )
    lines += [
        "",
        "Two processes keep half of every global batch each and average their gradients, so the step is the "
        "one-process step up to the order of floating-point sums; with two threads in one process the matrix "
        "products split their sums differently as well. Epoch time is the slowest rank's.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
