"""`sweep --executor ray` on a local Ray instance, in a network namespace that has only loopback
(Ray's servers listen on every interface), with one task's process killed mid-family."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from bench.timing.cells import Cell
from bench.timing.ray_executor import families

pytestmark = pytest.mark.cluster

GRID = (
    "--attention sdpa,linrec --seq-len 32,64,128 --batch-size 2 --dim 16 --heads 2 --causal false,true --threads 1 "
    "--max-cell-s 5 --quiet-wait-s 0 --no-progress --executor ray"
).split()


def _loopback_only() -> list[str]:
    """A command prefix running its command in a fresh network namespace with only `lo` (up)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace")
    prefix = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    probe = subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    return [*prefix, "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _family_tasks():
    return [
        p for p in psutil.process_iter(["name", "cmdline"]) if "_measure_family" in " ".join(p.info["cmdline"] or [])
    ]


def test_a_ray_sweep_survives_a_killed_task_and_writes_each_cell_once(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray.jsonl"
    command = [*_loopback_only(), sys.executable, "-m", "bench", "sweep", *GRID, "--out", str(out)]
    # Ray's session folder holds unix sockets: a path short enough for their 107-byte limit
    ray_tmp = tempfile.mkdtemp(prefix="linrec-ray-", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.time() + 240
    while sweep.poll() is None and time.time() < deadline:
        if killed is None and _rows(out):  # mid-family: a first group written, more to come
            tasks = _family_tasks()
            if tasks:
                killed = tasks[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    output = sweep.communicate(timeout=60)[0]
    assert sweep.returncode == 0, output[-3000:]
    assert killed is not None, "no Ray task process was found to kill"

    rows = _rows(out)
    keys = [Cell.of_row(row).key() for row in rows]
    assert len(keys) == len(set(keys)) == 12  # 2 mechanisms x 3 N x 2 (causal, bidirectional), each once
    assert {row["status"] for row in rows} == {"ok"}
    # not reniced by Ray (15 by default): the tasks run at this process's own niceness, whatever started it
    assert {row["executor"] for row in rows} == {"ray"} and {row["niceness"] for row in rows} == {os.nice(0)}

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stdout and len(_rows(out)) == 12
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_families_keep_each_shape_together():
    cells = [
        Cell("attention", name, causal, n, 2, 16, 2, "fwd_bwd", "fp32", "cpu", {})
        for name in ("sdpa", "linrec")
        for causal in (False, True)
        for n in (32, 64)
    ]
    grouped = families(cells)
    assert len(grouped) == 2 and sorted(c.key() for f in grouped for c in f) == sorted(c.key() for c in cells)
    assert all(len({c.causal for c in family}) == 1 for family in grouped)
