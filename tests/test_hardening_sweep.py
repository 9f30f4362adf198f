"""Damaged inputs and misuse in the sweep, timing under load and the main job: each case failed (silently or with a
bare traceback) before its fix."""

import json
import os

import pytest
import torch

from bench.results import ResultsFileBusy, ResultsFileError, load_rows, results_writer

# ------------------------------------------------------------------ the sweep


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seq-len", "0"], "--seq-len 0"),
        (["--batch-size", "-2"], "--batch-size -2"),
        (["--heads", "0"], "--heads 0"),
        (["--dim", "10", "--heads", "3"], "not divisible"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--seq-len", "0"], "--"),
    ],
)
def test_impossible_grids_are_refused_at_the_command_line(tmp_path, flags, message):
    from bench.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["sweep", "--out", str(tmp_path / "s.jsonl"), "--no-progress", *flags])
    assert message in str(stop.value) and str(stop.value).startswith("sweep: ")
    assert not (tmp_path / "s.jsonl").exists()


def test_a_sweep_refuses_a_results_file_another_sweep_is_writing(tmp_path):
    from bench.timing.cells import Cell
    from bench.timing.sweep import run_sweep

    out = tmp_path / "s.jsonl"
    cell = Cell("attention", "sdpa", False, 16, 1, 16, 2, "fwd", "fp32", "cpu")
    with results_writer(out):
        with pytest.raises(ResultsFileBusy):
            run_sweep([cell], out, config={}, progress=False)
    assert not out.exists() or load_rows(out) == []


def test_a_worker_killed_from_outside_is_not_called_out_of_memory():
    import signal

    from bench.timing.worker import Worker

    worker = Worker(threads=1, memory_limit_bytes=8 * 2**30)
    killed = worker._death(-signal.SIGKILL, peak_rss=200 * 2**20)
    assert (
        killed["status"] == "error"
        and killed["worker_died"]
        and "SIGKILL" in killed["message"]
        and "0.20 GiB" in killed["message"]
    )
    assert worker._death(-signal.SIGTERM, peak_rss=0)["status"] == "error"
    assert worker._death(-signal.SIGKILL, peak_rss=7 * 2**30)["status"] == "oom"


def test_report_warns_about_cells_written_twice(tmp_path, capsys):
    from bench.reports import report

    row = {
        "level": "attention",
        "attention": "sdpa",
        "options": {},
        "causal": False,
        "seq_len": 16,
        "batch_size": 1,
        "dim": 16,
        "heads": 2,
        "mode": "fwd",
        "dtype": "fp32",
        "device": "cpu",
        "status": "ok",
        "time_ms": 1.0,
        "timestamp": "t",
        "peak_mem_bytes": 1,
    }
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "timestamp": "u"}) + "\n")
    report([path], tmp_path / "out")
    assert "measured more than once" in capsys.readouterr().err


def test_report_names_a_file_whose_rows_lack_keys(tmp_path):
    from bench.reports import report

    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"level": "attention", "status": "ok"}) + "\n")
    with pytest.raises(ResultsFileError, match=r"s.jsonl: row 1 lacks attention"):
        report([path], tmp_path / "out")


def test_a_comparison_group_is_timed_interleaved_and_its_load_recorded(tmp_path):
    from bench.timing.cells import Cell
    from bench.timing.sweep import run_sweep

    cells = [Cell("attention", name, True, 32, 2, 16, 2, "fwd_bwd", "fp32", "cpu") for name in ("sdpa", "linrec")]
    rows = run_sweep(
        cells, tmp_path / "s.jsonl", config={}, timing={"min_time_s": 0.05, "max_time_s": 1.0}, progress=False
    )
    for row in rows:
        assert row["status"] == "ok" and row["timing"].startswith("interleaved x")
        assert (
            row["time_ms_solo"] > 0
            and row["time_ms"] > 0
            and row["other_load_cores"] >= 0
            and isinstance(row["busy"], bool)
        )


@pytest.mark.parametrize("threads", [1, 2])
def test_a_busy_one_thread_group_is_timed_in_cpu_time(tmp_path, monkeypatch, threads):
    from bench.timing import sweep
    from bench.timing.cells import Cell

    monkeypatch.setattr(sweep.LoadMonitor, "other_cores", lambda self: 1.5)  # as if two hogs ran throughout
    cells = [Cell("attention", name, True, 32, 2, 16, 2, "fwd_bwd", "fp32", "cpu") for name in ("sdpa", "linrec")]
    rows = sweep.run_sweep(
        cells,
        tmp_path / "s.jsonl",
        config={},
        threads=threads,
        timing={"min_time_s": 0.05, "max_time_s": 1.0},
        progress=False,
    )
    for row in rows:
        assert row["busy"] and row["time_ms_wall"] > 0
        if threads == 1:  # waiting for a core is left out; several threads: their CPU times would add up
            assert row["timing"].endswith("cpu time (busy)") and row["time_ms"] != row["time_ms_wall"]
        else:
            assert "cpu time" not in row["timing"] and row["time_ms"] == row["time_ms_wall"]


def test_load_monitor_sees_another_busy_process():
    import os
    import signal
    import subprocess
    import sys
    import time

    from bench.timing.sweep import LoadMonitor

    # the hog must not be our child: the monitor counts this process tree as its own work
    loop = "import time\nend = time.time() + 5\nwhile time.time() < end: pass"
    launcher = subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "{loop}" >/dev/null 2>&1 & echo $!'], capture_output=True, text=True
    )
    hog = int(launcher.stdout.split()[0])
    try:
        time.sleep(0.3)
        monitor = LoadMonitor()
        time.sleep(1.0)
        assert monitor.other_cores() > 0.5  # the hog takes most of a core (generous: CI is busy too)
    finally:
        os.kill(hog, signal.SIGKILL)


def test_load_monitor_rooted_at_the_launcher_counts_its_other_children_as_the_jobs_own():
    """Under torchrun the other ranks are siblings of this one: rooted at the launcher, they are not load."""
    import subprocess
    import sys
    import time

    import psutil

    from bench.measure import LoadMonitor
    from bench.training.distributed import Replicas, job_process

    assert job_process(Replicas()).pid == os.getpid()
    assert job_process(Replicas(world=2, launched=True)).pid == os.getppid()
    # a launcher (like torchrun's agent) with a busy child (like another rank)
    loop = "import time\nend = time.time() + 60\nwhile time.time() < end: pass"
    launcher = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {loop!r}])"]
    )
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 30
        while not psutil.Process(launcher.pid).children() and time.monotonic() < deadline:
            time.sleep(0.1)  # python starts slowly on a busy machine
        (rank,) = psutil.Process(launcher.pid).children()
        # (the launcher is this test's child: the reference monitor is rooted at an idle process instead)
        start, busy = time.monotonic(), sum(rank.cpu_times()[:2])
        everyone, job = LoadMonitor(root=psutil.Process(idle.pid)), LoadMonitor(root=psutil.Process(launcher.pid))
        time.sleep(1.0)
        total, outside_job = everyone.other_cores(), job.other_cores()
        rank_cores = (sum(rank.cpu_times()[:2]) - busy) / (time.monotonic() - start)
        assert rank_cores > 0.05  # the busy child ran (it takes a core on an idle machine; CI is busy)
        # rooted at its launcher, the busy child's CPU is the job's own, not load
        assert abs((total - outside_job) - rank_cores) < 0.1 + 0.2 * rank_cores
    finally:
        for child in psutil.Process(launcher.pid).children(recursive=True):
            child.kill()
        for process in (launcher, idle):
            process.kill()
            process.wait()


def _timing_row(mechanism, n, time_ms, **extra):
    return {
        "level": "attention",
        "attention": mechanism,
        "options": {},
        "causal": True,
        "seq_len": n,
        "batch_size": 4,
        "dim": 64,
        "heads": 4,
        "mode": "fwd_bwd",
        "dtype": "fp32",
        "device": "cpu",
        "status": "ok",
        "time_ms": time_ms,
        "timestamp": "t",
        "peak_mem_bytes": 2**20,
        **extra,
    }


def test_the_main_job_compares_its_speedups_with_the_reference(tmp_path):
    from bench.reports.committed import compare_speedups

    reference, new = tmp_path / "ref.jsonl", tmp_path / "new.jsonl"
    reference.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                _timing_row("sdpa", 64, 10),
                _timing_row("linrec", 64, 10),
                _timing_row("sdpa", 256, 40),
                _timing_row("linrec", 256, 20),
            ]
        )
    )
    new.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                _timing_row("sdpa", 64, 5),
                _timing_row("linrec", 64, 5.5),
                _timing_row("sdpa", 256, 40),
                _timing_row("linrec", 256, 80),
            ]
        )
    )
    lines = compare_speedups(new, reference)
    assert "2 cell(s) compared, 1 differ by more than 1.5x" in lines[0]
    assert "linrec causal N=256 B=4: 0.50x here, 2.00x in the reference" in lines[1]


def test_the_main_job_never_reuses_a_run_folder_silently(tmp_path):
    from bench.cli import main

    (tmp_path / "sweep.jsonl").write_text("")
    with pytest.raises(SystemExit, match="exists; --resume continues it"):
        main(["main", "--out", str(tmp_path), "--no-progress"])


def test_busy_rows_are_marked_in_tables(tmp_path):
    from bench.reports import report

    path = tmp_path / "s.jsonl"
    rows = [
        _timing_row("sdpa", 64, 10),
        _timing_row("linrec", 64, 5, busy=True),
        _timing_row("sdpa", 256, 40),
        _timing_row("linrec", 256, 20),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report([path], tmp_path / "out")
    table = next((tmp_path / "out").glob("*_time.md")).read_text()
    assert "5.00 (2.00x) †" in table and "measured while other processes used the CPU" in table
