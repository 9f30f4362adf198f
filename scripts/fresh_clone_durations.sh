#!/usr/bin/env bash
# The README's two commands as a newcomer runs them: a fresh clone, an empty kernel cache, `tox -e main` then
# `tox -e tests`, each timed, with the peak memory (PSS) of its whole process tree (sampled every second) and what pip
# installed (no CUDA wheel may appear). Run it on a quiet machine (pause other jobs: kill -STOP) and say so.
#
#   bash scripts/fresh_clone_durations.sh OUT_DIR
#
# OUT_DIR gets durations.json (committed as results/robustness/first-run/<cpu kind>.json), main.log, tests.log,
# pip-*.txt and the main job's sweep.jsonl (the 1-thread reference of this CPU kind, to be committed as
# results/sweeps/quick-cpu-<kind>.jsonl).
set -euo pipefail
out=$(realpath -m "${1:?usage: fresh_clone_durations.sh OUT_DIR}")
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
work=$(mktemp -d)
git clone --quiet "$repo" "$work/clone"
export TORCH_EXTENSIONS_DIR="$work/torch-extensions"   # a newcomer's first run builds the kernels

peak_tree_pss() {  # sampled every second until PID exits: the largest summed PSS (MiB) of its process tree, and
  # the three largest processes at that moment (PSS counts a page shared by N processes as 1/N in each, so forked
  # workers and compilers add up to what the machine really holds; summed RSS counts shared torch pages N times)
  local pid=$1 peak=0 now top
  while kill -0 "$pid" 2>/dev/null; do
    now=$(for p in /proc/[0-9]*; do
            q=${p#/proc/}; k=$(awk '/^Pss:/{print $2}' "$p/smaps_rollup" 2>/dev/null) || continue
            [ -n "$k" ] && echo "$q $(awk '{print $4}' "$p/stat" 2>/dev/null) $k $({ tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | cut -c1-100)"
          done | awk -v root="$pid" '
      { parent[$1] = $2; pss[$1] = $3; line[$1] = $0 }
      END { for (p in pss) { q = p; while (q != "" && q != root && q != 1 && q != 0) q = parent[q];
            if (q == root) { total += pss[p]; print int(pss[p] / 1024), line[p] > "/dev/stderr" } }
            print int(total / 1024) }' 2>"$out/.tree")
    if [ "$now" -gt "$peak" ]; then
      peak=$now; top=$(sort -n -r "$out/.tree" | head -3 | awk '{printf "%s MiB: %s %s %s %s\\n", $1, $5, $6, $7, $8}')
    fi
    sleep 1
  done
  rm -f "$out/.tree"
  echo "$peak"; printf "%b" "$top" > "$out/$2.peak_processes"
}

run_timed() {  # NAME: tox -e NAME in the clone; seconds, exit code and peak tree memory into OUT/NAME.*
  local name=$1 start end pid
  start=$(date +%s)
  (cd "$work/clone" && { tox -e "$name" > "$out/$name.log" 2>&1 && echo 0 || echo $?; } > "$out/$name.rc") &
  pid=$!
  peak_tree_pss "$pid" "$name" > "$out/$name.peak_mib"
  wait "$pid" || true
  end=$(date +%s)
  echo $((end - start)) > "$out/$name.seconds"
  "$work/clone/.tox/$name/bin/python" -m pip list --format=freeze > "$out/pip-$name.txt" 2>/dev/null || true
}

python -m pip install --quiet --disable-pip-version-check tox
run_timed main
run_timed tests
"$work/clone/.tox/.pkg/bin/python" -m pip list --format=freeze > "$out/pip-pkg.txt" 2>/dev/null || true
cp "$work/clone"/runs/main-*/sweep.jsonl "$out/sweep.jsonl" 2>/dev/null || true
cuda=$(cat "$out"/pip-*.txt | grep -i -E '^nvidia|\+cu[0-9]' || true)
"$work/clone/.tox/main/bin/python" - "$out" "$cuda" "$(git -C "$work/clone" rev-parse HEAD)" <<'EOF'  # a python with torch, to read the capability
import json, os, platform, sys
out, cuda = sys.argv[1], sys.argv[2]
read = lambda name: open(os.path.join(out, name)).read().strip()
import torch
summary = {
    "machine": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine()) + f", {os.cpu_count()} cores",
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "tox_main_seconds": int(read("main.seconds")), "tox_main_rc": int(read("main.rc")),
    "tox_main_peak_tree_pss_mib": int(read("main.peak_mib")), "tox_main_peak_processes": read("main.peak_processes").splitlines(),
    "tox_tests_seconds": int(read("tests.seconds")), "tox_tests_rc": int(read("tests.rc")),
    "tox_tests_peak_tree_pss_mib": int(read("tests.peak_mib")), "tox_tests_peak_processes": read("tests.peak_processes").splitlines(),
    "cuda_packages_installed": cuda.split() if cuda else [],
    "torch_in_envs": sorted({l.strip() for f in os.listdir(out) if f.startswith("pip-") for l in open(os.path.join(out, f))
                             if l.lower().startswith("torch==")}),
    "commit": sys.argv[3],
}
json.dump(summary, open(os.path.join(out, "durations.json"), "w"), indent=1)
print(json.dumps(summary, indent=1))
EOF
rm -rf "$work"
