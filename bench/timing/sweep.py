"""The sweep: a grid of cells, each measured in an isolated worker process.

Results append to a JSON-lines file as each cell finishes; re-running the same
command skips the cells already in the file (resume). A cell that runs out of memory
or fails is recorded (status 'oom' / 'error') and the sweep goes on; larger sequence
lengths of the same series are then recorded as 'oom' / 'skipped' without running.
Ctrl-C stops at once and loses nothing finished.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import psutil
from tqdm import tqdm

from ..environment import environment, stop_code, stop_name
from ..measure import LoadMonitor
from ..results import append_row, load_rows, results_writer
from ..schema import timing_row
from .cells import Cell, tokens, unsupported_reason
from .worker import Worker

# ------------------------------------------------------------------ the sweep

CELL_GRACE_S = 60.0  # beyond twice --max-cell-s: a first call that builds or compiles a kernel


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
    _prepare_mechanisms(todo)  # a kernel's one-time build before the bar starts: it would wreck the first ETA
    # the bar advances by each cell's expected cost, not by cells: the long cells come last in every series, and an
    # ETA counted in cells would promise a quarter of the time the sweep takes
    costs = {cell.key(): _expected_cost(cell) for cell in cells}
    finished = len(cells) - len(todo)
    bar = tqdm(
        total=round(sum(costs.values()), 1),
        initial=round(sum(costs[c.key()] for c in cells if c.key() in done), 1),
        desc=f"{finished}/{len(cells)} cells",
        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]{postfix}",  # tqdm adds ", " itself
        disable=not progress,
        dynamic_ncols=True,
        smoothing=0,  # the average rate over the whole run: group by group, recent cells say little about the rest
    )
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
            finished += 1  # a cell counts when its row is written: after its group's interleaved re-timing
            bar.set_description_str(f"{finished}/{len(cells)} cells", refresh=False)
            bar.update(costs[Cell.of_row(row).key()])
    except KeyboardInterrupt as stop:
        bar.close()
        if rows is not None:
            rows.close()  # stops the worker now, not when the generator is collected
        print(f"\n{stop_name(stop)}: {len(written)} cell(s) written to {out}; run the same command again to resume")
        raise SystemExit(stop_code(stop)) from None
    finally:
        bar.close()
    return written


def _expected_cost(cell: Cell) -> float:
    """A cell's share of a sweep's time, roughly: a fixed part (a second of timing at least, set-up, interleaving)
    and a part that grows with its tokens (a long cell repeats a slow step). Only the progress bar's ETA reads it."""
    return 1.0 + cell.seq_len * cell.batch_size / 4096


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
                yield timing_row(asdict(cell), results[cell], {**env, **worker_env}, seed, config)
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
