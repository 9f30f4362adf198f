"""The measuring process: one spawned worker that times cells sent to it, isolated from the sweep that drives it.

A cell that crashes, runs out of memory or never returns takes the worker with it, never the sweep: the driver
watches the worker's memory while it measures, ends it past a time bound, and starts a fresh one for the next cell.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import resource
import signal
import time
import traceback
from dataclasses import asdict

import psutil

from ..environment import die_with_parent
from ..measure import time_interleaved
from ..plugins import load_plugins
from .cells import Cell, backend_ran, make_workload, measure_cell


def _worker_main(conn, threads: int | None, memory_limit_bytes: int | None, parent: int | None = None) -> None:
    import torch

    die_with_parent(signal.SIGKILL, parent)  # a driver killed outright leaves no worker loading the CPU

    load_plugins()  # the parent's --plugin modules, passed through the environment

    if threads:
        torch.set_num_threads(threads)
    if memory_limit_bytes:  # an allocation past it fails cleanly instead of waking the OOM killer
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))
    while True:
        request = conn.recv()
        if request is None:
            return
        if "interleave" in request:
            conn.send(
                _interleave_in_worker([Cell(**c) for c in request["interleave"]], request["seed"], request["rounds"])
            )
            gc.collect()
            continue
        cell = Cell(**request["cell"])
        try:
            result = measure_cell(cell, seed=request["seed"], timing=request["timing"])
        except Exception as err:  # noqa: BLE001 -- any failure of a cell is recorded, never fatal
            result = {"status": "oom" if _is_oom(err) else "error", "message": _short(err)}
            if result["status"] == "error":
                result["traceback"] = traceback.format_exc(limit=4)
        result["worker_env"] = _worker_env(cell)
        conn.send(result)
        gc.collect()  # free everything the cell held before the next one
        if cell.device.startswith("cuda"):
            torch.cuda.empty_cache()


def _worker_env(cell: Cell) -> dict:
    """What ran, read in the worker: its thread count (the parent's may differ) and the kernel backend."""
    import torch

    try:
        backend = backend_ran(cell)
    except Exception as err:  # noqa: BLE001 -- the row says why rather than failing the cell over a label
        backend = f"unknown ({_short(err)})"
    return {"threads": torch.get_num_threads(), "backend": backend}


def _interleave_in_worker(cells: list[Cell], seed: int, rounds: int) -> dict:
    """Median ms per cell key, timed round by round across the cells of one comparison group."""
    cpu = {}
    try:
        jobs = {cell.key(): make_workload(cell, seed) for cell in cells}
        medians, errors = time_interleaved(jobs, rounds, cells[0].device, cpu_medians=cpu)
    except Exception as err:  # noqa: BLE001 -- e.g. all workloads at once do not fit: the solo times stand
        return {"medians_ms": {}, "error": _short(err)}
    return {
        "medians_ms": {key: seconds * 1e3 for key, seconds in medians.items()},
        "cpu_medians_ms": {key: seconds * 1e3 for key, seconds in cpu.items()},
        "error": "; ".join(errors.values()),
    }


def _is_oom(err: BaseException) -> bool:
    text = str(err).lower()
    return (
        type(err).__name__ == "OutOfMemoryError"
        or "out of memory" in text
        or "can't allocate memory" in text
        or isinstance(err, MemoryError)
    )


def _short(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


class Worker:
    """A persistent measuring process, restarted when a cell kills it."""

    def __init__(self, threads: int | None, memory_limit_bytes: int | None):
        self._args = (threads, memory_limit_bytes)
        self.threads = threads
        self._context = mp.get_context("spawn")
        self._process = None

    def _start(self):
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker_main, args=(child, *self._args, os.getpid()), daemon=True)
        self._process.start()

    def run(self, cell: Cell, seed: int, timing: dict, limit_s: float | None = None) -> dict:
        """Measure one cell; a worker still busy after `limit_s` seconds is ended and the cell is a 'timeout'."""
        if self._process is None or not self._process.is_alive():
            self._start()
        self._conn.send({"cell": asdict(cell), "seed": seed, "timing": timing})
        peak_rss, started = 0, time.monotonic()
        try:
            while not self._conn.poll(0.2):  # watch the worker's memory while it measures
                with contextlib.suppress(psutil.Error):
                    peak_rss = max(peak_rss, psutil.Process(self._process.pid).memory_info().rss)
                if not self._process.is_alive():
                    break
                if limit_s is not None and time.monotonic() - started > limit_s:
                    self.kill()
                    return {
                        "status": "timeout",
                        "message": f"ended after {limit_s:.0f} s, past its time bound (twice --max-cell-s, plus "
                        "a minute for a first call that builds a kernel)",
                    }
            return self._conn.recv()
        except (EOFError, ConnectionError):
            self._process.join(timeout=5)
            return self._death(self._process.exitcode, peak_rss)

    def interleave(self, cells: list[Cell], seed: int, rounds: int) -> dict:
        """Time the cells of one group round by round in this worker; {} medians when it fails or dies."""
        if self._process is None or not self._process.is_alive():
            self._start()
        self._conn.send({"interleave": [asdict(c) for c in cells], "seed": seed, "rounds": rounds})
        try:
            return self._conn.recv()
        except (EOFError, ConnectionError):
            self._process.join(timeout=5)
            self._process = None
            return {"medians_ms": {}, "error": "worker died while interleaving"}

    def _death(self, code: int | None, peak_rss: int) -> dict:
        """What is known of a worker that died mid-cell: its signal and memory; 'oom' only near the memory limit."""
        self._process = None
        limit = self._args[1] or psutil.virtual_memory().total
        cause = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        memory = f"worker RSS up to {peak_rss / 2**30:.2f} GiB of a {limit / 2**30:.1f} GiB limit"
        if code == -signal.SIGKILL and peak_rss >= 0.5 * limit:
            return {"status": "oom", "message": f"worker killed by {cause}, out of memory ({memory})"}
        return {"status": "error", "message": f"worker died with {cause} ({memory})", "worker_died": True}

    def kill(self) -> None:
        """End the worker now (a cell past its time bound); the next cell starts a fresh one."""
        if self._process is not None:
            self._process.kill()
            self._process.join(timeout=5)
        self._process = None

    def close(self):
        if self._process is not None and self._process.is_alive():
            try:
                self._conn.send(None)
                self._process.join(timeout=5)
            except (OSError, BrokenPipeError):
                pass
            if self._process.is_alive():
                self._process.kill()
