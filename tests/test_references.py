"""The main job judges its speed-ups only against the committed reference of its own setup (CPU model, threads,
torch, LinRec backend); against another it names what differs and does not judge."""

import json
from pathlib import Path

from bench.reports.committed import REFERENCE_GLOB, compare_speedups, measured_setup, setup_differences
from bench.reports.rows import load_frame

REPO = Path(__file__).resolve().parents[1]


def _rows(path, speedup_at_256, device="CPU AMD EPYC", threads=1, backend="cpp"):
    rows = []
    for n, sdpa_ms in ((64, 10.0), (256, 40.0)):
        linrec_ms = sdpa_ms / (speedup_at_256 if n == 256 else 1.0)
        for mechanism, ms in (("sdpa", sdpa_ms), ("linrec", linrec_ms)):
            rows.append(
                {
                    "level": "attention", "attention": mechanism, "options": {}, "causal": True, "seq_len": n,
                    "batch_size": 4, "dim": 64, "heads": 4, "mode": "fwd_bwd", "dtype": "fp32", "device": device,
                    "device_type": "cpu", "status": "ok", "time_ms": ms, "timestamp": "t", "peak_mem_bytes": 1,
                    "threads": threads, "torch": "2.13.0+cpu", "backend": backend if mechanism == "linrec" else None,
                }
            )  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_setup_is_read_from_the_rows_and_differences_are_named(tmp_path):
    ours = measured_setup(load_frame([_rows(tmp_path / "a.jsonl", 2.0)]))
    assert ours == {
        "device": "CPU AMD EPYC", "cpu_capability": None, "threads": 1, "torch": "2.13.0+cpu", "backend": "cpp"
    }  # fmt: skip
    capabilities = setup_differences({**ours, "cpu_capability": "AVX2"}, {**ours, "cpu_capability": "AVX512"})
    assert capabilities == ["cpu_capability AVX512 there, AVX2 here"]  # one model name, two kinds of machine
    theirs = {**ours, "device": "CPU Intel Xeon", "threads": 2, "backend": None}  # older rows: no backend
    assert setup_differences(ours, theirs) == [
        "device CPU Intel Xeon there, CPU AMD EPYC here",
        "threads 2 there, 1 here",
    ]


def test_the_matching_reference_is_chosen_and_judged_the_other_named_in_one_line(tmp_path):
    new = _rows(tmp_path / "new.jsonl", 4.0)
    same = _rows(tmp_path / "quick-cpu-amd-epyc.jsonl", 2.0)  # 4x here against 2x there: beyond 1.5x
    other = _rows(tmp_path / "quick-cpu.jsonl", 4.0, device="CPU Intel Xeon", threads=2)
    lines = compare_speedups(new, [other, same])
    assert lines[0].startswith(f"speed-ups vs sdpa against the reference of this setup ({same})")
    assert "2 cell(s) compared, 1 differ by more than 1.5x" in lines[0]
    assert "linrec causal N=256 B=4: 4.00x here, 2.00x in the reference" in lines[1]
    assert (
        lines[2] == f"not compared: {other} (device CPU Intel Xeon there, CPU AMD EPYC here; threads 2 there, 1 here)"
    )


def test_without_a_matching_reference_differences_are_counted_not_judged(tmp_path):
    new = _rows(tmp_path / "new.jsonl", 4.0, threads=1)
    other_threads = _rows(tmp_path / "quick-cpu-amd-epyc-2t.jsonl", 2.0, threads=2)
    other_cpu = _rows(tmp_path / "quick-cpu.jsonl", 2.0, device="CPU Intel Xeon", threads=1)
    lines = compare_speedups(new, [other_cpu, other_threads])
    # the same CPU model first: a thread count differs, the CPU does not
    assert lines[0].startswith(f"no committed reference matches this setup; the closest, {other_threads}")
    assert "(threads 2 there, 1 here)" in lines[0] and "1 of 2 speed-ups differ by more than 1.5x" in lines[0]
    assert "not judged" in lines[0] and "python -m bench sweep --preset quick --threads 1" in lines[0]
    assert not any("here," in line and "in the reference" in line for line in lines)  # no per-cell verdicts


def test_the_committed_references_give_each_cpu_model_seen_one_reference_at_the_main_jobs_one_thread():
    setups = [measured_setup(load_frame([p])) for p in sorted((REPO / "results" / "sweeps").glob(REFERENCE_GLOB))]
    keys = [tuple(setup.values()) for setup in setups]
    assert len(set(keys)) == len(keys), "two committed references share one setup: the main job could not choose"
    one_thread = {setup["device"] for setup in setups if setup["threads"] == 1}
    assert {"CPU Intel(R) Xeon(R) Processor", "CPU AMD EPYC"} <= one_thread


def test_a_busy_run_gets_no_verdict_and_mechanisms_without_a_reference_are_named(tmp_path):
    new = _rows(tmp_path / "new.jsonl", 4.0)
    rows = [json.loads(line) for line in new.read_text().splitlines()]
    rows.append({**rows[-1], "attention": "mamba", "label": "mamba"})
    new.write_text("".join(json.dumps({**row, "busy": True}) + "\n" for row in rows))
    same = _rows(tmp_path / "quick-cpu-amd-epyc.jsonl", 2.0)
    lines = compare_speedups(new, [same])
    assert "timed while other processes used the CPU" in lines[0] and "no verdict" in lines[0]
    assert any(line.startswith("not in the reference") and "mamba" in line for line in lines)
