"""Honest time and peak-memory measurement of one callable.

Time: warm-up runs, then repeats until both `min_repeats` and `min_time_s` are reached
(or `max_repeats` / `max_time_s`); median and quartiles. CUDA is synchronised around
every repeat.

Peak memory, in bytes above what was live before the measured run:
- CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats.
- CPU (Linux): the process's peak resident set (VmHWM) over its resident set just
  before the run. The peak is reset by writing 5 to /proc/self/clear_refs and freed
  heap memory is returned to the OS first (malloc_trim), so the figure is what the run
  itself touched: tensors, autograd buffers, allocator slack. Run it in a fresh
  worker process (the sweep does) so nothing else shares the heap.
"""

from __future__ import annotations

import ctypes
import gc
import random
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch


@dataclass
class Timing:
    median_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_callable(
    fn: Callable[[], object],
    device: str = "cpu",
    *,
    warmup: int = 1,
    min_repeats: int = 3,
    max_repeats: int = 30,
    min_time_s: float = 1.0,
    max_time_s: float = 60.0,
) -> Timing:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    started = time.perf_counter()
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        if len(times) >= min_repeats and elapsed >= min_time_s:
            break
        if elapsed >= max_time_s:
            break
    return summarize(times)


def summarize(times_s: list[float]) -> Timing:
    ms = sorted(t * 1e3 for t in times_s)
    if len(ms) == 1:
        return Timing(ms[0], ms[0], ms[0], 1)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return Timing(statistics.median(ms), q1, q3, len(ms))


def time_interleaved(
    jobs: dict[str, Callable[[], object]], rounds: int, device: str = "cpu", *, cpu_medians: dict | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """Time several jobs round by round (round 0 warms up), so machine noise hits all alike.

    Each round runs the jobs in a fresh order (seeded, so repeatable): no job always runs first or always
    right after the same neighbour, in step with a periodic disturbance.
    Returns (median seconds per job, error message per job that raised: it is dropped, not fatal).
    cpu_medians, when given, receives each job's median CPU seconds of this process: with one thread,
    what a run costs while other processes take turns on the cores (waiting for a core is not counted).
    """
    times: dict[str, list[float]] = {name: [] for name in jobs}
    cpu_times: dict[str, list[float]] = {name: [] for name in jobs}
    errors: dict[str, str] = {}
    order, names = random.Random(0), list(jobs)
    for round_index in range(rounds + 1):
        order.shuffle(names)
        for name in names:
            run = jobs[name]
            if name in errors:
                continue
            try:
                synchronize(device)
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                synchronize(device)
            except Exception as err:  # noqa: BLE001 -- one job's failure is reported, not fatal
                errors[name] = f"{type(err).__name__}: {err}"[:200]
                continue
            if round_index:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - start_cpu)
    if cpu_medians is not None:
        cpu_medians.update({name: statistics.median(t) for name, t in cpu_times.items() if t})
    return {name: statistics.median(t) for name, t in times.items() if t}, errors


# ------------------------------------------------------------------ memory

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {_STATUS}")


def _release_free_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_supported() -> bool:
    try:
        _status_kib("VmHWM")
        _CLEAR_REFS.write_text("5")
        return True
    except (OSError, RuntimeError):
        return False


@contextmanager
def peak_memory(device: str):
    """Yields a dict whose 'bytes' is filled with the peak above the starting point."""
    result = {"bytes": None, "method": None}
    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result["bytes"] = torch.cuda.max_memory_allocated(device) - before
        result["method"] = "cuda max_memory_allocated"
        return
    if not cpu_peak_supported():
        yield result
        result["method"] = "unavailable (needs Linux /proc/self/clear_refs)"
        return
    _release_free_heap()
    _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    yield result
    result["bytes"] = max(0, _status_kib("VmHWM") - before) * 1024
    result["method"] = "cpu peak RSS (VmHWM) over baseline"


class LoadMonitor:
    """CPU time used by processes other than this job over an interval, in cores.

    The job is this process and its children, or `root` and its children: under torchrun, the
    agent that started this rank, so that the other ranks on the node do not count as load."""

    def __init__(self, root: psutil.Process | None = None):
        self._root = root or psutil.Process()
        self.start()

    @staticmethod
    def _busy_seconds() -> float:
        times = psutil.cpu_times()
        return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))

    def _own_seconds(self) -> float:
        total = 0.0
        for process in [self._root, *self._root.children(recursive=True)]:
            with suppress(psutil.Error):
                cpu = process.cpu_times()
                total += cpu.user + cpu.system
        return total

    def start(self) -> None:
        self._wall, self._busy, self._own = time.monotonic(), self._busy_seconds(), self._own_seconds()

    def other_cores(self) -> float:
        wall = max(time.monotonic() - self._wall, 1e-6)
        return max(0.0, (self._busy_seconds() - self._busy) - (self._own_seconds() - self._own)) / wall
