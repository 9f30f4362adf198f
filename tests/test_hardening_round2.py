"""Nothing lost, nothing misread, round 2: each fault a second hostile probe found, with what happens now."""

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest

import bench.timing.sweep
from bench.data import DataFormatError, load_dataset
from bench.plugins import PluginError, load_plugins
from bench.reports import report
from bench.results import ResultsFileBusy, folder_owner
from bench.timing.cells import Cell, unsupported_reason
from bench.timing.grid import Grid
from bench.timing.shard import merge
from bench.timing.sweep import run_sweep
from bench.training.accuracy import TrainCell, run_accuracy_sweep
from bench.training.config import TrainConfig
from bench.training.train import train

REPO = Path(__file__).resolve().parents[1]
FAST = {"min_time_s": 0.0, "min_repeats": 1, "max_repeats": 2}


# 1. one writer per run folder


def test_a_second_training_into_the_same_out_is_refused_with_the_holder(tmp_path):
    config = TrainConfig(dataset="synthetic", seq_len=10, epochs=1, out=str(tmp_path / "run"), threads=1)
    with folder_owner(tmp_path / "run", "a training", "--out"):  # the first run, still training
        with pytest.raises(ResultsFileBusy, match=f"pid {os.getpid()}.*--out"):
            train(config, progress=False, log=False)
    assert not (tmp_path / "run" / "results.json").exists()


def test_two_accuracy_drivers_on_one_work_folder_are_refused(tmp_path):
    cells = [TrainCell("synthetic", "sdpa", 10, 16, settings={"epochs": 1})]
    with folder_owner(tmp_path / "work", "an accuracy sweep", "--work-dir"):
        with pytest.raises(ResultsFileBusy, match="--work-dir"):
            run_accuracy_sweep(cells, tmp_path / "other.jsonl", work_dir=tmp_path / "work", log=lambda *_: None)


# 2. SIGINT and SIGTERM


def _deliverable_sigint() -> None:
    """In the child: SIGINT back to its default. A shell starts background jobs with SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler, so a suite run with `&` would send the signal into the void."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, tmp_path):
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_deliverable_sigint,
    )


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_sigterm_to_a_sweep_stops_its_worker_and_says_how_to_resume(tmp_path):
    out = tmp_path / "s.jsonl"
    process = _start(
        ["sweep", "--attention", "sdpa,linrec", "--seq-len", "64,128,256,512,1024,2048", "--batch-size", "2",
         "--dim", "16", "--heads", "2", "--threads", "1", "--no-progress", "--out", str(out)],
        tmp_path,
    )  # fmt: skip
    parent = psutil.Process(process.pid)
    assert _wait_for(lambda: len(parent.children(recursive=True)) >= 1), "the worker never started"
    children = parent.children(recursive=True)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    said, err = process.communicate(timeout=60)
    assert process.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM)" in said and "run the same command again to resume" in said
    assert "Traceback" not in err
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_train_stops_on_a_signal_in_one_line_with_the_checkpoint_to_resume(tmp_path, sig, code):
    process = _start(
        ["train", "--dataset", "synthetic", "--seq-len", "20", "--epochs", "1000", "--patience", "1000",
         "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")],
        tmp_path,
    )  # fmt: skip
    assert _wait_for(lambda: (tmp_path / "run" / "checkpoint.pt").exists(), timeout=240), "no epoch finished"
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err and "--resume" in err and "checkpoint.pt" in err


# 3. cells that can never finish, or cannot fit


def test_a_cell_past_its_time_bound_is_ended_and_recorded_timeout(tmp_path, monkeypatch, registry_restored):
    load_plugins(["misbehaving_plugin"])  # the worker imports it too (through the environment)
    monkeypatch.setattr(bench.timing.sweep, "CELL_GRACE_S", 2.0)
    cells = Grid([("never-returns", {})], seq_len=[8, 16], batch_size=[1], dim=8, heads=1, causal=[True]).cells("cpu")
    started = time.monotonic()
    rows = run_sweep(cells, tmp_path / "s.jsonl", config={}, timing=FAST, max_cell_s=1.0, progress=False)
    assert time.monotonic() - started < 60
    assert [row["status"] for row in rows] == ["timeout", "timeout"]
    assert "time bound" in rows[0]["message"] and rows[1]["message"].startswith("not run")  # the series skipped


def test_a_cell_that_cannot_fit_in_memory_is_refused_before_it_starts():
    cell = Cell("attention", "softmax", True, 1_000_000, 1, 128, 8, "fwd_bwd", "fp32", "cpu")
    assert "more than this machine's" in unsupported_reason(cell)
    small = Cell("attention", "softmax", True, 1024, 1, 128, 8, "fwd_bwd", "fp32", "cpu")
    assert unsupported_reason(small) is None


# 4. threads as the worker ran them


def test_rows_record_the_worker_s_thread_count(tmp_path):
    cells = Grid([("sdpa", {})], seq_len=[8], batch_size=[1], dim=8, heads=1, causal=[True]).cells("cpu")
    (row,) = run_sweep(cells, tmp_path / "s.jsonl", config={}, threads=1, timing=FAST, progress=False)
    assert row["threads"] == 1


# 5. full disk, read-only folder


def test_a_full_disk_is_one_line_naming_the_path_and_earlier_rows_stay(tmp_path, monkeypatch, capsys):
    from bench.cli import main

    out = tmp_path / "s.jsonl"
    args = ["sweep", "--attention", "sdpa", "--seq-len", "8,16", "--batch-size", "1", "--dim", "8", "--heads", "1",
            "--causal", "true", "--no-progress", "--out", str(out)]  # fmt: skip
    main(args[:4] + ["8"] + args[5:])  # one row written earlier
    calls = []

    def full(path, row):
        calls.append(row)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(bench.timing.sweep, "append_row", full)
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert str(stop.value).startswith(f"sweep: cannot write {out}: No space left on device")
    assert len(out.read_text().splitlines()) == 1 and calls


# 6. plugins and NaN outputs


def test_a_plugin_that_raises_or_takes_a_used_name_is_one_line(tmp_path, monkeypatch, registry_restored):
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('broken on import')\n")
    (tmp_path / "twice_plugin.py").write_text(
        "from models.attention import register_attention\n"
        "from models.attention.softmax import SdpaAttention\n"
        "register_attention('sdpa')(type('Again', (SdpaAttention,), {}))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="raising_plugin: importing it raised RuntimeError: broken on import"):
        load_plugins(["raising_plugin"])
    with pytest.raises(PluginError, match="twice_plugin: importing it raised ValueError: attention 'sdpa' is already"):
        load_plugins(["twice_plugin"])


def test_a_mechanism_whose_output_is_nan_is_an_error_row_not_a_time(tmp_path, registry_restored):
    load_plugins(["misbehaving_plugin"])
    cells = Grid([("returns-nan", {})], seq_len=[8], batch_size=[1], dim=8, heads=1, causal=[True]).cells("cpu")
    (row,) = run_sweep(cells, tmp_path / "s.jsonl", config={}, timing=FAST, progress=False)
    assert row["status"] == "error" and "not finite" in row["message"] and row["time_ms"] is None


# 7. rows of the wrong type


def test_report_names_rows_of_the_wrong_type_and_reports_the_rest(tmp_path, capsys):
    cells = Grid([("sdpa", {}), ("linrec", {})], seq_len=[8, 16], batch_size=[1], dim=8, heads=1).cells("cpu")
    out = tmp_path / "s.jsonl"
    run_sweep(cells, out, config={}, timing=FAST, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows[0]["seq_len"] = str(rows[0]["seq_len"])
    rows[1]["time_ms"] = float("nan")
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    written = report([out], tmp_path / "report")
    err = capsys.readouterr().err
    assert f"{out}: row 1: key 'seq_len' is" in err and "expected a whole number" in err
    assert f"{out}: row 2: key 'time_ms' is nan, expected a finite number" in err
    assert written and not any("nan" in p.read_text() for p in written if p.suffix == ".md")


# 8. merging part of a sharded sweep


def test_merge_warns_which_shards_are_missing(tmp_path):
    shard = tmp_path / "paper.shard-0-of-3.jsonl"
    shard.write_text("")
    warnings = []
    merge(tmp_path / "paper.jsonl", [shard], warn=warnings.append)
    assert any("paper.shard-1-of-3.jsonl, paper.shard-2-of-3.jsonl" in w and "partial" in w for w in warnings)


# 9. a byte-order mark, a zip under a .gz name


def test_a_utf8_byte_order_mark_is_read_and_a_zip_is_named(tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf1 5 6 7\n2 6 8\n")
    assert load_dataset(str(bom)).num_users == 2
    bom_gz = tmp_path / "bom.txt.gz"
    bom_gz.write_bytes(gzip.compress(b"\xef\xbb\xbf1 5 6 7\n2 6 8\n"))
    assert load_dataset(str(bom_gz)).num_users == 2
    fake = tmp_path / "data.txt.gz"
    with zipfile.ZipFile(fake, "w") as bundle:
        bundle.writestr("data.txt", "1 5 6 7\n")
    with pytest.raises(DataFormatError, match="a zip archive, not a text or gzip data file"):
        load_dataset(str(fake))
