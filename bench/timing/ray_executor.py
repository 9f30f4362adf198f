"""`sweep --executor ray`: the sweep's cells as Ray tasks on a cluster, the driver the only writer.

    pip install 'linrec-bench[cluster]'                  # Ray, on the driver and on every node
    ray start --head                                     # on one node; `ray start --address HEAD:6379` on the others
    python -m bench sweep --preset paper --executor ray --address auto [--gpus-per-task 1 | --cpus-per-task 4]

Without --address the driver starts a local Ray instance (a 200 MB object store: rows are small).
Start cluster nodes with RAY_worker_niceness=0: Ray runs tasks at niceness 15 by default, and a
timing taken at that priority loses the CPU to any other process (rows record the niceness).

One task per family: every mechanism and sequence length of one shape (batch, causal, mode,
dtype, width). Inside it the local sweep runs unchanged on the node that got the task (its
isolated worker process, the comparison groups timed interleaved, series growing in N with the
OOM / time-budget skip-ahead), so a speed-up always compares cells timed on one host.
NOTE: the smallest unit that keeps both the skip-ahead (per series) and the interleaved timing
(per comparison group) on one host is the family, hence not one task per series.

Tasks stream their rows (`num_returns="streaming"`); the driver appends each row to the results
file (append + fsync, as the local sweep) unless its cell is already there, so a task retried
after its worker or node died (Ray re-runs it, up to `max_retries`) never writes a row twice, and
re-running the driver resumes. Host, device, memory limit and threads are read on the node that
ran the cell; the commit is the driver's.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from ..environment import git_commit, stop_code, stop_name
from ..plugins import ENV as PLUGINS_ENV
from ..results import append_row, results_writer
from . import sweep
from .cells import Cell

LOCAL_OBJECT_STORE_BYTES = 200 * 2**20
TASK_RETRIES = 3


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SystemExit(
            "sweep --executor ray: Ray is not installed; pip install 'linrec-bench[cluster]' (or pip install ray)"
        ) from None
    return ray


def families(cells: list[Cell]) -> list[list[Cell]]:
    """Cells grouped by family (all but mechanism and N), in a stable order."""
    grouped: dict[tuple, list[Cell]] = {}
    for cell in cells:
        grouped.setdefault(sweep._series_family(cell), []).append(cell)
    return [grouped[key] for key in sorted(grouped)]


def _measure_family(cells: list[dict], options: dict, settings: dict, commit: str):
    """The Ray task: the local sweep over one family on this node, one row at a time."""
    from ..plugins import load_plugins

    load_plugins()
    for name, value in settings.items():  # the driver's timing settings (--quiet-wait-s and the like)
        setattr(sweep, name, value)
    niceness = os.nice(0)  # Ray renices its workers (15 by default): under load they would barely get a core
    for row in sweep.measured_rows([Cell(**c) for c in cells], **options):
        yield {**row, "commit": commit, "executor": "ray", "niceness": niceness}


def run_sweep_on_ray(
    cells: list[Cell],
    out: Path,
    *,
    config: dict,
    seed: int = 0,
    threads: int | None = None,
    timing: dict | None = None,
    max_cell_s: float = 120.0,
    memory_fraction: float = 0.8,
    progress: bool = True,
    address: str | None = None,
    cpus_per_task: float | None = None,
    gpus_per_task: float | None = None,
) -> list[dict]:
    """Measure every cell not yet in `out` as Ray tasks; returns the rows this call wrote."""
    ray = _import_ray()
    out = Path(out)
    with results_writer(out):
        done = sweep.written_keys(out)
        todo = [c for c in cells if c.key() not in done]
        if not todo:
            return []
        env_vars = {PLUGINS_ENV: os.environ[PLUGINS_ENV]} if os.environ.get(PLUGINS_ENV) else {}
        if address is None:
            # a local instance: its own token (never written to the home folder), workers not reniced (timings
            # from processes at niceness 15 lose the CPU to anything else running) and a small object store
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",  # a local instance listens on the loopback only, not 0.0.0.0
                runtime_env={"env_vars": env_vars},
                log_to_driver=False,
            )
        else:
            ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=False)
        task = ray.remote(_measure_family).options(
            num_cpus=cpus_per_task if cpus_per_task is not None else (threads or 1),
            num_gpus=gpus_per_task or 0,
            max_retries=TASK_RETRIES,
            num_returns="streaming",
        )
        options = {
            "config": config,
            "seed": seed,
            "threads": threads,
            "timing": timing,
            "max_cell_s": max_cell_s,
            "memory_fraction": memory_fraction,
        }
        settings = {name: getattr(sweep, name) for name in ("QUIET_WAIT_S", "INTERLEAVE_S", "BUSY_CORES")}
        try:
            streams = [
                task.remote([asdict(c) for c in family], options, settings, git_commit()) for family in families(todo)
            ]
            return _write_streams(ray, streams, out, done, progress, total=len(cells), already=len(cells) - len(todo))
        finally:
            ray.shutdown()


def _write_streams(ray, streams, out: Path, done: set[str], progress: bool, *, total: int, already: int) -> list[dict]:
    """Append each row the tasks stream back, unless its cell is already written (a retried task re-sends)."""
    written: list[dict] = []
    reniced = False
    bar = tqdm(total=total, initial=already, unit="cell", disable=not progress, dynamic_ncols=True)
    try:
        pending = list(streams)
        while pending:
            ready, _ = ray.wait(pending, num_returns=1)
            for stream in ready:
                try:
                    row = ray.get(next(stream))
                except StopIteration:
                    pending.remove(stream)
                    continue
                key = Cell.of_row(row).key()
                if key in done:  # re-sent by a retried task
                    continue
                if row.get("niceness") and not reniced:
                    reniced = True
                    print(
                        f"sweep: warning: cells timed at niceness {row['niceness']} on {row.get('host')}: start the "
                        "Ray nodes with RAY_worker_niceness=0 so other processes do not take their CPU",
                        file=sys.stderr,
                    )
                append_row(out, row)
                done.add(key)
                written.append(row)
                bar.update()
    except KeyboardInterrupt as stop:
        bar.close()
        print(f"\n{stop_name(stop)}: {len(written)} cell(s) written to {out}; run the same command again to resume")
        raise SystemExit(stop_code(stop)) from None
    finally:
        bar.close()
    return written
