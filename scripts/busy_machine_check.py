"""Do the sweep's speed-ups survive a busy machine? The quick preset quiet, then beside two CPU hogs.

    python scripts/busy_machine_check.py --out results/robustness

Writes quiet.jsonl and busy.jsonl (the two runs) and busy-machine.md: for every cell measured
in both, the speed-up over sdpa under load divided by the quiet one, and the quiet run against
the committed reference results/sweeps/quick-cpu.jsonl (measured before groups were interleaved).
Run it on an otherwise quiet machine: it starts and stops its own load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.environment import REPO_ROOT, environment
from bench.reports.committed import _speedups
from bench.reports.rows import load_frame

HOG = "import time\nend = time.time() + 3600\nwhile time.time() < end: pass"


def sweep(out: Path, quiet_wait_s: float, threads: int) -> float:
    out.unlink(missing_ok=True)
    started = time.time()
    command = [sys.executable, "-m", "bench", "sweep", "--preset", "quick", "--out", str(out), "--no-progress"]
    command += ["--quiet-wait-s", str(quiet_wait_s), "--threads", str(threads)]
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    return time.time() - started


def ratio_lines(ours: dict, theirs: dict, label: str, tolerance: float) -> list[str]:
    common = sorted(set(ours) & set(theirs), key=str)
    ratios = {key: ours[key] / theirs[key] for key in common}
    outside = [key for key, r in ratios.items() if not 1 / tolerance <= r <= tolerance]
    worst = max(ratios.values(), key=lambda r: max(r, 1 / r))
    lines = [
        f"- {label}: {len(common)} speed-ups compared; median ratio {statistics.median(ratios.values()):.2f}, "
        f"worst {worst:.2f}, {len(outside)} outside {tolerance}x"
    ]
    lines += [
        f"  - {k[0]} {'causal' if k[2] else 'bidir'} N={k[3]} B={k[4]}: {ours[k]:.2f}x vs {theirs[k]:.2f}x"
        for k in outside
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/robustness")
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (the main job uses 1)")
    parser.add_argument("--reference", default=None, help="committed rows to compare the quiet run with")
    parser.add_argument(
        "--quiet-wait-s", type=float, default=5.0, help="passed to the loaded sweep (the load never goes away)"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_s = sweep(out / "quiet.jsonl", 60.0, args.threads)
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    try:
        busy_s = sweep(out / "busy.jsonl", args.quiet_wait_s, args.threads)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    quiet, busy = _speedups(load_frame([out / "quiet.jsonl"])), _speedups(load_frame([out / "busy.jsonl"]))
    flagged = int(load_frame([out / "busy.jsonl"]).get("busy", False).fillna(False).astype(bool).sum())
    env = environment("cpu")
    lines = [
        "# Speed-ups on a busy machine",
        "",
        f"Quick preset, {env['device']}, torch {env['torch']}, {args.threads} thread(s) per measurement, "
        f"commit {env['commit']}, {env['timestamp']}.",
        "",
        f"Quiet run {quiet_s / 60:.1f} min; with {args.hogs} CPU hogs "
        f"(busy Python loops, one per core) {busy_s / 60:.1f} min, {flagged} rows flagged busy.",
        "",
    ]
    lines += ratio_lines(busy, quiet, f"busy / quiet (with {args.hogs} hogs)", 1.5)
    reference = Path(args.reference) if args.reference else REPO_ROOT / "results" / "sweeps" / "quick-cpu.jsonl"
    if reference.exists():
        lines += ratio_lines(
            quiet,
            _speedups(load_frame([reference])),
            "quiet (groups interleaved) / committed reference (cells one by one)",
            1.5,
        )
    (out / "busy-machine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
