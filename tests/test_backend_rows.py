"""Rows say which kernel ran where there is a choice (LinRec's fused C++ kernel or its PyTorch path, Mamba's and
retention's CUDA packages), and reports mark rows that asked for the default path and got the slower fallback."""

import json

from bench.reports.rows import load_frame
from bench.schema import fallback_note
from bench.timing.grid import Grid
from bench.timing.sweep import run_sweep
from bench.training.config import TrainConfig
from bench.training.train import train
from models.attention.kernels.linrec import linrec_backend_for
from models.attention.kernels.linrec_cpp import extension_error

FAST = {"min_time_s": 0.0, "min_repeats": 1, "max_repeats": 2}


def test_timing_rows_record_the_backend_that_ran(tmp_path):
    mechanisms = [
        ("linrec", {}),
        ("linrec", {"backend": "torch"}),
        ("sdpa", {}),
        ("mamba", {}),
        ("lru", {}),
        ("retention", {}),
        ("retention", {"backend": "torch"}),
    ]
    cells = Grid(mechanisms, seq_len=[16], batch_size=[2], dim=16, heads=2, causal=[True]).cells("cpu")
    rows = run_sweep(cells, tmp_path / "s.jsonl", config={}, timing=FAST, progress=False)
    by_label = {(row["attention"], json.dumps(row["options"])): row["backend"] for row in rows}
    assert by_label[("linrec", "{}")] == ("cpp" if extension_error() is None else "torch")
    assert by_label[("linrec", '{"backend": "torch"}')] == "torch"
    assert by_label[("sdpa", "{}")] is None
    from models.attention.kernels import scan_cpp

    scans = "cpp" if scan_cpp.extension_error() is None else "torch"
    assert by_label[("mamba", "{}")] == by_label[("lru", "{}")] == scans  # the fused C++ scans on a CPU
    assert by_label[("retention", "{}")] == scans  # its causal form's C++ walk on a CPU; fla on CUDA
    assert by_label[("retention", '{"backend": "torch"}')] == "torch"


def test_training_results_record_the_backend(tmp_path):
    config = TrainConfig(dataset="synthetic", attention="linrec", seq_len=10, epochs=1, threads=1, out=str(tmp_path))
    results = train(config, progress=False, log=False)
    assert results["backend"] == linrec_backend_for({}, "cpu")


def test_a_fallback_to_the_pytorch_path_is_marked_in_reports(tmp_path):
    row = {"attention": "linrec", "options": {}, "backend": "torch", "device_type": "cpu"}
    assert fallback_note(row) == " (PyTorch path)"
    assert fallback_note({**row, "backend": "cpp"}) == ""
    assert fallback_note({**row, "options": {"backend": "torch"}}) == ""  # asked for it: nothing fell back
    assert fallback_note({**row, "options": {"variant": "official"}}) == ""  # no fused kernel for it: nothing fell back
    assert fallback_note({**row, "backend": None}) == ""  # older rows: not recorded
    base = {"level": "kernel", "causal": True, "seq_len": 8, "batch_size": 1, "dim": 8, "heads": 1, "mode": "fwd",
            "dtype": "fp32", "device": "CPU", "device_type": "cpu", "status": "ok", "time_ms": 1.0,
            "peak_mem_bytes": 1, "timestamp": "t"}  # fmt: skip
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({**base, **row}) + "\n" + json.dumps({**base, "attention": "sdpa", "options": {}}) + "\n"
    )
    assert set(load_frame([path])["mechanism"]) == {"linrec (PyTorch path)", "sdpa"}
