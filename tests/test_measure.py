import pytest

from bench.measure import cpu_peak_supported, summarize, time_callable
from bench.timing.cells import Cell, make_workload, unsupported_reason
from bench.timing.sweep import run_sweep

FAST = {"min_time_s": 0.0, "min_repeats": 2, "max_repeats": 3}


def test_summary_is_median_and_quartiles():
    timing = summarize([0.001, 0.002, 0.003, 0.004, 0.100])
    assert timing.median_ms == pytest.approx(3.0)
    assert timing.p25_ms == pytest.approx(2.0)
    assert timing.p75_ms == pytest.approx(4.0)
    assert timing.repeats == 5


def test_timer_warms_up_and_repeats():
    calls = []
    timing = time_callable(lambda: calls.append(1), warmup=2, min_repeats=4, min_time_s=0.0)
    assert len(calls) == 2 + timing.repeats and timing.repeats == 4


def _worker_peaks(tmp_path, attention, causal, mode, lengths, batch=1, heads=4):
    """Peak memory as the sweep measures it: each cell in the isolated worker process."""
    cells = [Cell("kernel", attention, causal, n, batch, 16 * heads, heads, mode, "fp32", "cpu") for n in lengths]
    rows = run_sweep(cells, tmp_path / "mem.jsonl", config={}, timing=FAST, progress=False)
    return [row["peak_mem_bytes"] for row in sorted(rows, key=lambda r: r["seq_len"])]


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs Linux /proc/self/clear_refs")
def test_cpu_peak_memory_of_materialised_softmax_grows_4x_when_n_doubles(tmp_path):
    peaks = _worker_peaks(tmp_path, "softmax", False, "fwd", (2048, 4096))
    assert 3.5 < peaks[1] / peaks[0] < 4.5, peaks


@pytest.mark.skipif(not cpu_peak_supported(), reason="needs Linux /proc/self/clear_refs")
def test_cpu_peak_memory_of_causal_linrec_grows_about_linearly(tmp_path):
    # tensors of 33-67 MB: above glibc's largest mmap threshold, so every one is mapped and unmapped
    # on its own (small heap-served tensors made this ratio wander to 2.7x in one run)
    peaks = _worker_peaks(tmp_path, "linrec", True, "fwd_bwd", (8192, 16384), batch=8, heads=8)
    assert 1.5 < peaks[1] / peaks[0] < 2.6, peaks


@pytest.mark.parametrize("level", ["attention", "kernel"])
@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd", "infer"])
def test_every_level_and_mode_runs(level, mode):
    run = make_workload(Cell(level, "linrec", True, 32, 2, 16, 2, mode, "fp32", "cpu"))
    run()
    run()


def test_unsupported_cells_are_explained():
    assert "no causal form" in unsupported_reason(
        Cell("attention", "linformer", True, 32, 1, 16, 2, "fwd", "fp32", "cpu")
    )
    assert "unknown attention" in unsupported_reason(
        Cell("attention", "nope", False, 32, 1, 16, 2, "fwd", "fp32", "cpu")
    )
    assert "mode" in unsupported_reason(Cell("attention", "sdpa", False, 32, 1, 16, 2, "train", "fp32", "cpu"))
    assert unsupported_reason(Cell("attention", "sdpa", False, 32, 1, 16, 2, "fwd", "fp32", "cpu")) is None


def test_interleaved_rounds_vary_the_order_of_the_jobs():
    from bench.measure import time_interleaved

    calls = []
    jobs = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    medians, errors = time_interleaved(jobs, rounds=12)
    assert set(medians) == set("abcd") and not errors
    rounds = [tuple(calls[i : i + 4]) for i in range(0, len(calls), 4)]
    assert len(rounds) == 13 and all(sorted(r) == list("abcd") for r in rounds)
    assert len({r[0] for r in rounds}) > 1 and len(set(rounds)) > 3  # not one fixed order


def test_interleaved_cpu_medians_leave_out_time_spent_off_the_cpu():
    import time as _time

    from bench.measure import time_interleaved

    cpu = {}
    medians, _ = time_interleaved({"sleeps": lambda: _time.sleep(0.02)}, rounds=3, cpu_medians=cpu)
    assert medians["sleeps"] >= 0.02 and cpu["sleeps"] < 0.01  # waiting is wall time, not CPU time
