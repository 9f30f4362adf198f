"""The sweep: a grid of cells, each measured in an isolated worker process.

Results append to a JSON-lines file as each cell finishes; re-running the same
command skips the cells already in the file (resume). A cell that runs out of memory
or fails is recorded (status 'oom' / 'error') and the sweep goes on; larger sequence
lengths of the same series are then recorded as 'oom' / 'skipped' without running.
Ctrl-C stops at once and loses nothing finished.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import multiprocessing as mp
import resource
import signal
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from tqdm import tqdm

from models.attention import list_attentions

from .cells import Cell, linrec_backend_ran, make_workload, measure_cell, tokens, unsupported_reason
from .environment import environment, stop_code, stop_name
from .measure import LoadMonitor, time_interleaved
from .plugins import load_plugins
from .results import append_row, load_rows, results_writer


@dataclass
class Grid:
    """A product of axes; a preset is a list of grids."""

    attention: list[tuple[str, dict]]
    seq_len: list[int]
    batch_size: list[int]
    causal: list[bool] = field(default_factory=lambda: [False, True])
    mode: list[str] = field(default_factory=lambda: ["fwd_bwd"])
    dtype: list[str] = field(default_factory=lambda: ["fp32"])
    dim: int = 128
    heads: int = 8
    level: str = "attention"
    padding: list[float] = field(default_factory=lambda: [0.0])
    attention_dropout: list[float | None] = field(default_factory=lambda: [None])  # None: the level's default
    compile: list[bool] = field(default_factory=lambda: [False])

    def cells(self, device: str) -> list[Cell]:
        axes = itertools.product(
            self.attention,
            self.causal,
            self.mode,
            self.dtype,
            self.padding,
            self.attention_dropout,
            self.compile,
            self.batch_size,
            self.seq_len,
        )
        return [
            Cell(self.level, name, causal, n, b, self.dim, self.heads, mode, dtype, device, dict(opts), pad, drop, comp)
            for (name, opts), causal, mode, dtype, pad, drop, comp, b, n in axes
        ]


def mechanisms(overrides: dict[str, dict] | None = None) -> list[tuple[str, dict]]:
    """Every registered configuration (plugins included), with per-preset option overrides by mechanism."""
    overrides = overrides or {}
    return [(name, {**options, **overrides.get(name, {})}) for name, options in list_attentions().values()]


def presets() -> dict[str, list[Grid]]:
    """Built when asked, so mechanisms registered by plugins are in every preset."""
    every = mechanisms()
    return {
        # a few minutes on a 2-core CPU: every mechanism once, the crossover region, a batch sweep
        "quick": [
            Grid(mechanisms({"linformer": {"k": 64}}), seq_len=[64, 256, 1024, 4096], batch_size=[4], dim=64, heads=4),
            Grid([("sdpa", {}), ("linrec", {})], seq_len=[256], batch_size=[1, 16], dim=64, heads=4, causal=[True]),
        ],
        # the paper-style study (hidden 128, 8 heads of 16): N from 50 to 8192 at B=8, and a batch sweep
        "paper": [
            Grid(every, seq_len=[50, 200, 512, 1024, 2048, 4096, 8192], batch_size=[8], mode=["fwd_bwd", "infer"]),
            Grid(every, seq_len=[200], batch_size=[1, 32, 128], mode=["fwd_bwd"]),
            # kernel level (projections excluded) out to N=16384, for the memory comparison with fused attention
            Grid(
                [("sdpa", {}), ("linrec", {}), ("linrec", {"variant": "official"}), ("linear", {})],
                seq_len=[256, 1024, 4096, 16384],
                batch_size=[8],
                level="kernel",
            ),
            # whole recommender steps (SASRec causal / BERT4Rec bidirectional, 3,706 items), the authors' width;
            # with RecBole's dropout on attention (None: 0.2) and without: dropout on the probabilities takes sdpa
            # off its fused CPU kernel, so the two answer different questions
            Grid(
                [m for m in every if m[0] != "linformer"],
                seq_len=[50, 200, 1024, 4096],
                batch_size=[32],
                level="model",
                mode=["fwd_bwd", "infer"],
                attention_dropout=[None, 0.0],
            ),
        ],
        # for a lent GPU: longer sequences, bigger batches, bf16 too
        "gpu": [
            Grid(
                every,
                seq_len=[50, 200, 512, 1024, 2048, 4096, 8192, 16384, 32768],
                batch_size=[8],
                mode=["fwd_bwd", "infer"],
                dtype=["fp32", "bf16"],
            ),
            Grid(every, seq_len=[200], batch_size=[1, 32, 256, 2048], mode=["fwd_bwd"]),
            Grid(
                [("sdpa", {}), ("linrec", {}), ("linear", {})],
                seq_len=[1024, 4096, 16384, 65536],
                batch_size=[8],
                level="kernel",
                mode=["fwd_bwd"],
            ),
        ],
    }


def preset_cells(preset: str, device: str) -> list[Cell]:
    grids = presets()
    if preset not in grids:
        raise ValueError(f"--preset: unknown preset {preset!r}; expected one of {', '.join(grids)}")
    cells = []
    for grid in grids[preset]:
        cells += [c for c in grid.cells(device) if c not in cells]
    return cells


# ------------------------------------------------------------------ worker process


def _worker_main(conn, threads: int | None, memory_limit_bytes: int | None) -> None:
    import torch

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
    """What ran, read in the worker: its thread count (the parent's may differ) and LinRec's backend."""
    import torch

    try:
        backend = linrec_backend_ran(cell)
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


CELL_GRACE_S = 60.0  # beyond twice --max-cell-s: a first call that builds or compiles a kernel


class Worker:
    """A persistent measuring process, restarted when a cell kills it."""

    def __init__(self, threads: int | None, memory_limit_bytes: int | None):
        self._args = (threads, memory_limit_bytes)
        self.threads = threads
        self._context = mp.get_context("spawn")
        self._process = None

    def _start(self):
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker_main, args=(child, *self._args), daemon=True)
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
                        "message": f"ended after {limit_s:.0f} s, its time bound (--max-cell-s x 2 + "
                        f"{CELL_GRACE_S:.0f} s for the first call)",
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


# ------------------------------------------------------------------ the sweep


def _series(cell: Cell) -> tuple:
    """Cells that differ only in sequence length."""
    d = asdict(cell)
    d.pop("seq_len")
    return tuple(sorted((k, str(v)) for k, v in d.items()))


def run_sweep(
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
) -> list[dict]:
    """Measure every cell not yet in `out`; returns the rows written by this call."""
    out = Path(out)
    with results_writer(out):
        return _run_locked(
            cells,
            out,
            config=config,
            seed=seed,
            threads=threads,
            timing=timing,
            max_cell_s=max_cell_s,
            memory_fraction=memory_fraction,
            progress=progress,
        )


def comparison_group(cell: Cell) -> tuple:
    """Cells whose times are compared with each other (speed-ups vs sdpa): all but the mechanism."""
    d = asdict(cell)
    for name in ("attention", "options", "compile"):  # eager and compiled cells are timed side by side
        d.pop(name)
    return tuple(sorted((k, str(v)) for k, v in d.items()))


BUSY_CORES = 0.3  # CPU used by other processes while a group was timed, in cores, above which its rows are flagged
QUIET_WAIT_S = 60.0  # how long a busy group waits for the machine to quieten before its one re-measurement
INTERLEAVE_S = 2.0  # interleaved timing per group: rounds enough for this many seconds (5 to 30 rounds)


def _wait_for_quiet(limit_s: float, window_s: float = 2.0) -> float:
    """Wait (up to limit_s) until other processes use less than BUSY_CORES; returns the last load seen."""
    deadline, load = time.monotonic() + limit_s, math.inf
    while time.monotonic() < deadline:
        monitor = LoadMonitor()
        time.sleep(window_s)
        load = monitor.other_cores()
        if load < BUSY_CORES:
            break
    return load


def written_keys(out: Path) -> set[str]:
    """Keys of the cells already in a results file (what resume skips)."""
    return {Cell.of_row(row).key() for row in (load_rows(out) if out.exists() else [])}


def _run_locked(
    cells, out: Path, *, config, seed, threads, timing, max_cell_s, memory_fraction, progress
) -> list[dict]:
    done = written_keys(out)
    todo = [c for c in cells if c.key() not in done]
    written = []
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", disable=not progress, dynamic_ncols=True)
    rows = None
    try:
        rows = measured_rows(
            todo,
            config=config,
            seed=seed,
            threads=threads,
            timing=timing,
            max_cell_s=max_cell_s,
            memory_fraction=memory_fraction,
            on_status=bar.set_postfix_str,
        )
        for row in rows:
            append_row(out, row)
            written.append(row)
            bar.update()  # a cell counts when its row is written: after its group's interleaved re-timing
    except KeyboardInterrupt as stop:
        bar.close()
        if rows is not None:
            rows.close()  # stops the worker now, not when the generator is collected
        print(f"\n{stop_name(stop)}: {len(written)} cell(s) written to {out}; run the same command again to resume")
        raise SystemExit(stop_code(stop)) from None
    finally:
        bar.close()
    return written


def _describe(cell: Cell) -> str:
    return f"{cell.label} {'causal' if cell.causal else 'bidir'} N={cell.seq_len} B={cell.batch_size} {cell.mode}"


def measured_rows(
    cells: list[Cell], *, config, seed, threads, timing, max_cell_s, memory_fraction, on_status=lambda text: None
):
    """Measure `cells` in one isolated worker, yielding each comparison group's rows when the group is done.
    `on_status` hears what is being done now (a progress bar's text): a cell timed alone, a group interleaved,
    a busy group waiting for quiet before its re-timing.

    Groups run in increasing N within each family, so each series grows in N (the OOM / time-budget
    skip-ahead holds). The local sweep writes what this yields; a Ray task streams it to its driver."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in sorted(cells, key=lambda c: (_series_family(c), c.seq_len, c.label)):
        groups.setdefault(comparison_group(cell), []).append(cell)
    timing = {"min_time_s": 1.0, "max_time_s": max_cell_s, **(timing or {})}
    memory_limit = (
        int(psutil.virtual_memory().total * memory_fraction)
        if not any(c.device.startswith("cuda") for c in cells)
        else None
    )
    _prepare_mechanisms(cells)
    worker = Worker(threads, memory_limit)
    failed_series: dict[tuple, str] = {}
    try:
        for group in groups.values():
            monitor = LoadMonitor()
            results = {}
            for cell in group:
                on_status(f"timing {_describe(cell)}")
                results[cell] = _solo(worker, cell, seed, timing, failed_series, max_cell_s)
            solo_load = monitor.other_cores()
            _interleave_group(worker, group, results, seed, max_cell_s, solo_load, on_status)
            for cell in group:
                env = environment(cell.device)  # per row: timestamp and load average change
                worker_env = results[cell].pop("worker_env", {})  # threads and backend as the worker ran them
                yield {
                    **_cell_fields(cell),
                    **_empty_measurement(),
                    **results[cell],
                    **env,
                    **worker_env,
                    "seed": seed,
                    "config": config,
                }
    finally:
        worker.close()


def _prepare_mechanisms(cells: list[Cell]) -> None:
    """Build what a mechanism's first call would (LinRec's C++ kernel) before the worker times anything: a
    minute of compiling inside a cell would count against its time budget."""
    from models.attention import attention_class

    for name, device in sorted({(c.attention, c.device) for c in cells}):
        try:
            attention_class(name).prepare(device)
        except KeyError:
            pass  # an unknown mechanism: its cells are recorded as unsupported


def _series_family(cell: Cell) -> tuple:
    """The series without its mechanism: what orders the groups."""
    d = asdict(cell)
    for name in ("seq_len", "attention", "options", "compile"):
        d.pop(name)
    return tuple(sorted((k, str(v)) for k, v in d.items()))


def _solo(worker: Worker, cell: Cell, seed: int, timing: dict, failed_series: dict, max_cell_s: float) -> dict:
    """One cell alone in the worker: status, memory and a first time (crash- and OOM-isolated)."""
    reason = unsupported_reason(cell)
    if reason:
        return {"status": "unsupported", "message": reason}
    if _series(cell) in failed_series:
        status, message = failed_series[_series(cell)].split("|", 1)
        return {"status": status, "message": f"not run: {message}"}
    limit_s = 2 * max_cell_s + CELL_GRACE_S
    result = worker.run(cell, seed, timing, limit_s)
    if result.pop("worker_died", False):  # killed from outside or crashed, not for memory: one more try
        first = result["message"]
        result = worker.run(cell, seed, timing, limit_s)
        result.pop("worker_died", None)
        result["message"] = (result.get("message") or "") + f" (retried once after: {first})"
    if result["status"] == "oom":
        failed_series[_series(cell)] = f"oom|N={cell.seq_len} ran out of memory"
    elif result["status"] == "timeout":
        failed_series[_series(cell)] = f"timeout|N={cell.seq_len} ran past its time bound"
    elif result["status"] == "ok" and result["time_ms"] / 1e3 * (1 + result["repeats"]) > max_cell_s:
        failed_series[_series(cell)] = (
            f"skipped|N={cell.seq_len} already took {result['time_ms'] / 1e3:.1f} s per run (budget {max_cell_s:.0f} "
            "s per cell)"
        )
    return result


def _interleave_group(
    worker: Worker,
    group: list[Cell],
    results: dict,
    seed: int,
    max_cell_s: float,
    solo_load: float,
    on_status=lambda text: None,
) -> None:
    """Re-time the group's ok cells round by round so load that comes and goes hits them alike.

    The interleaved median replaces the solo one (kept as time_ms_solo). When other processes
    used more than BUSY_CORES meanwhile, the group waits for quiet and is re-timed once; rows
    still measured under load are flagged busy."""
    ok = [c for c in group if results[c]["status"] == "ok"]
    for cell in group:
        results[cell].update(
            timing="solo", other_load_cores=round(solo_load, 3), busy=solo_load > BUSY_CORES if cell in ok else False
        )
    if len(ok) < 2:
        return
    per_round_s = sum(results[c]["time_ms"] for c in ok) / 1e3
    rounds = min(30, max(5, math.ceil(INTERLEAVE_S / max(per_round_s, 1e-6))))
    if per_round_s * (rounds + 1) > max_cell_s:  # too slow to interleave within the budget: the solo times stand
        return
    for attempt in range(2):
        again = "re-timing" if attempt else "interleaving"
        on_status(f"{again} {len(ok)} cells side by side, {rounds} rounds (N={group[0].seq_len})")
        monitor = LoadMonitor()
        measured = worker.interleave(ok, seed, rounds)
        load = monitor.other_cores()
        medians = measured["medians_ms"]
        if not all(c.key() in medians for c in ok):
            for cell in ok:
                results[cell]["message"] = (
                    results[cell]["message"] + f" interleaving failed: {measured['error']}"
                ).strip()
            return
        # Busy, on one CPU thread: CPU time, which leaves out the turns other processes took on the core (wall
        # time under load jumps by whole scheduler slices, unevenly across cells). Several threads: wall time.
        cpu_time = load > BUSY_CORES and worker.threads == 1 and group[0].device == "cpu"
        for cell in ok:
            solo = results[cell]["time_ms_solo"] if "time_ms_solo" in results[cell] else results[cell]["time_ms"]
            wall = medians[cell.key()]
            time_ms = measured.get("cpu_medians_ms", {}).get(cell.key(), wall) if cpu_time else wall
            results[cell].update(
                time_ms=time_ms,
                time_ms_wall=wall,
                time_ms_solo=solo,
                timing=f"interleaved x{rounds}" + (", cpu time (busy)" if cpu_time else ""),
                other_load_cores=round(load, 3),
                busy=load > BUSY_CORES,
                remeasured=attempt > 0,
                tokens_per_s=tokens(cell) / (time_ms / 1e3),
            )
        if load <= BUSY_CORES or attempt:
            return
        on_status(f"busy ({load:.1f} other cores): waiting up to {QUIET_WAIT_S:.0f} s for quiet, then re-timing")
        _wait_for_quiet(QUIET_WAIT_S)


def _cell_fields(cell: Cell) -> dict:
    fields = asdict(cell)
    fields["device_type"] = fields.pop("device")
    return fields


def _empty_measurement() -> dict:
    return {
        "message": "",
        "time_ms": None,
        "time_ms_p25": None,
        "time_ms_p75": None,
        "repeats": 0,
        "peak_mem_bytes": None,
        "mem_method": None,
        "tokens_per_s": None,
        "first_call_ms": None,
    }
