"""Two shards of the quick preset measured at once (as two SLURM array tasks would), merged and reported.

    python scripts/shard_evidence.py --out results/distributed/two-shards

Writes OUT/quick.shard-{0,1}-of-2.jsonl (each shard's own resumable file), OUT/quick.jsonl (their
merge), the merged sweep's report (registered in bench.reports.committed.COMMITTED_REPORTS as
`two-shards-cpu`) and OUT/README.md: the shards' sizes and the merged speed-ups against the
committed one-process quick reference. One thread per shard, both shards at once on the two cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.environment import REPO_ROOT, environment
from bench.reports.committed import compare_speedups, regenerate_committed
from bench.results import load_rows
from bench.timing.shard import merge, shard_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/distributed/two-shards")
    parser.add_argument("--shard-by", default="family", choices=["series", "family"])
    args = parser.parse_args()
    out = REPO_ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    merged = out / "quick.jsonl"
    shards = [shard_path(merged, index, 2) for index in range(2)]
    for path in [merged, *shards]:
        path.unlink(missing_ok=True)
    started = time.time()
    command = [sys.executable, "-m", "bench", "sweep", "--preset", "quick", "--threads", "1", "--no-progress"]
    tasks = [
        subprocess.Popen([*command, "--shard", f"{i}/2", "--shard-by", args.shard_by, "--out", str(merged)])
        for i in range(2)
    ]
    if any(task.wait() for task in tasks):
        sys.exit("a shard failed")
    seconds = time.time() - started
    count = merge(merged, shards)
    regenerate_committed(REPO_ROOT / "results")
    env = environment()
    lines = [
        "# Two shards of the quick preset, merged",
        "",
        f"{env['device']}, torch {env['torch']}, commit {env['commit']}; both shards at once, one thread each "
        f"(`--shard I/2 --shard-by {args.shard_by}`), {seconds / 60:.1f} min; produced by "
        "`python scripts/shard_evidence.py`.",
        "",
        *[f"- `{path.name}`: {len(load_rows(path))} rows" for path in shards],
        f"- `{merged.name}` (`python -m bench merge`): {count} rows, one per cell; report in "
        "[`results/reports/two-shards-cpu/`](../../reports/two-shards-cpu/)",
        "",
        *compare_speedups(merged, REPO_ROOT / "results" / "sweeps" / "quick-cpu.jsonl"),
    ]
    lines = [line.replace(f"{REPO_ROOT}/", "") for line in lines]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
