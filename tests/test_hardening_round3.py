"""Nothing lost, nothing misread, round 3: each fault a third probe found, with what happens now (the kernel build's
faults, a stale lock and a truncated library, are in test_first_run.py)."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.environment import positive_float
from bench.reports import report
from bench.results import ResultsFileBusy, results_writer
from bench.timing import gate
from bench.timing.shard import merge

REPO = Path(__file__).resolve().parents[1]


def _row(**changes):
    row = {
        "level": "attention", "attention": "sdpa", "options": {}, "causal": True, "mode": "fwd_bwd", "dtype": "fp32",
        "dim": 16, "heads": 2, "padding": 0.0, "attention_dropout": None, "compile": False, "seq_len": 16,
        "batch_size": 2, "device": "CPU AMD EPYC", "device_type": "cpu", "status": "ok", "time_ms": 1.0,
        "peak_mem_bytes": 1000, "mem_method": "x", "torch": "2.13.0+cpu", "cpu_capability": "AVX2", "threads": 1,
        "timestamp": "2026-12-01T00:00:00+00:00", "commit": "abc",
    }  # fmt: skip
    row.update(changes)
    return row


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# 2. the speed gate refuses, before measuring, what it cannot check


def _gate_args(baseline, **changes):
    values = dict(baseline=str(baseline), update_baseline=False, rounds=1, tolerance=None, threads=1)
    values.update(attention=None, slowdown=None)
    values.update(changes)
    return argparse.Namespace(**values)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"ratios": {}}', "has no 'ratios'"),
        ("", "not readable JSON"),
        ('{"ratios": {"linrec|causal": 0.1', "not readable JSON"),
        ("[1, 2]", "has no 'ratios'"),
        ('{"ratios": {"linrec|causal": NaN}}', "not positive numbers"),
        ('{"ratios": {"linrec|causal": 0.2}}', "does not cover"),
    ],
)
def test_the_gate_refuses_an_unusable_baseline_before_measuring(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.setattr(gate, "measure_ratios", lambda *a, **k: pytest.fail("measured with an unusable baseline"))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(content)
    assert gate.main(_gate_args(baseline, slowdown="linrec=8")) == 2
    assert message in capsys.readouterr().out


def test_the_gate_refuses_a_directory_and_a_missing_baseline(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gate, "measure_ratios", lambda *a, **k: pytest.fail("measured"))
    assert gate.main(_gate_args(tmp_path)) == 2 and "is a directory" in capsys.readouterr().out
    assert gate.main(_gate_args(tmp_path / "none.json")) == 2 and "not found" in capsys.readouterr().out


def test_the_gate_refuses_a_slowdown_it_cannot_apply(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gate, "measure_ratios", lambda *a, **k: pytest.fail("measured"))
    assert gate.main(_gate_args(tmp_path / "b.json", slowdown="linrc=8")) == 2
    assert "expected MECHANISM=N" in capsys.readouterr().out


def test_the_committed_baselines_cover_every_gated_mechanism():
    built_in = [job for job in gate.gated() if job[0] != "outside-relu"]  # not the tests' own plugin (conftest)
    _, reference = gate.committed_reference([gate._key(*job) for job in built_in])
    assert all(ratio > 0 for ratio, _, _ in reference.values())


def test_a_ratio_from_another_cpu_kind_gets_a_wider_tolerance(tmp_path, monkeypatch):
    def write(name, device, capability, ratios):
        payload = {"device": device, "cpu_capability": capability, "gate_threads": 1, "ratios": ratios}
        (tmp_path / name).write_text(json.dumps(payload))

    write("baseline-a.json", "CPU A", "AVX2", {"x|causal": 0.5})
    write("baseline-b.json", "CPU B", "AVX512", {"x|causal": 0.9, "y|causal": 0.3})
    monkeypatch.setattr(gate, "machine_kind", lambda: {"device": "CPU A", "cpu_capability": "AVX2"})
    _, reference = gate.committed_reference(["x|causal", "y|causal"], tmp_path)
    assert reference == {"x|causal": (0.5, 1.0, "baseline-a.json"), "y|causal": (0.3, 2.0, "baseline-b.json")}
    monkeypatch.setattr(gate, "machine_kind", lambda: {"device": "CPU C", "cpu_capability": "AVX2"})
    _, reference = gate.committed_reference(["x|causal"], tmp_path)
    assert reference == {"x|causal": (0.9, 2.0, "baseline-b.json")}  # no baseline of this kind: the largest
    with pytest.raises(gate.GateRefused, match="no committed baseline covers z"):
        gate.committed_reference(["z|causal"], tmp_path)


# 3. reports keep machines and torch builds apart


@pytest.mark.parametrize(
    "field, values, names",
    [
        ("cpu_capability", ("AVX2", "AVX512"), ("avx2", "avx512")),
        ("device", ("CPU AMD EPYC", "CPU Intel Xeon"), ("amd", "intel")),
        ("torch", ("2.13.0+cpu", "2.14.1+cpu"), ("2-13-0", "2-14-1")),
    ],
)
def test_rows_of_two_cpu_kinds_or_torch_builds_get_their_own_tables(tmp_path, field, values, names):
    rows = [
        _row(attention=name, seq_len=n, time_ms=t, **{field: value})
        for value in values
        for name, t in (("sdpa", 2.0), ("linrec", 1.0))
        for n in (16, 32)
    ]
    written = report([_write(tmp_path / "rows.jsonl", rows)], tmp_path / "out")
    tables = sorted(p.name for p in written if p.name.endswith("_time.md"))
    assert len(tables) == 2 and all(any(name in t for t in tables) for name in names), tables
    assert len(set(written)) == len(written) and all(p.exists() for p in written)  # nothing overwritten


# 5. merge takes the writer's lock


def test_merge_into_a_file_a_sweep_is_writing_is_refused(tmp_path):
    out = _write(tmp_path / "sweep.jsonl", [_row()])
    source = _write(tmp_path / "shard.jsonl", [_row(seq_len=32)])
    with results_writer(out):  # the sweep, still writing
        with pytest.raises(ResultsFileBusy, match="being written by"):
            merge(out, [source])
    assert len(out.read_text().splitlines()) == 1  # its row is still there


def test_merge_warns_when_a_failure_replaces_a_finished_row(tmp_path):
    good = _write(tmp_path / "a.jsonl", [_row()])
    late = _write(tmp_path / "b.jsonl", [_row(status="timeout", timestamp="2026-12-02T00:00:00+00:00")])
    future = _write(tmp_path / "c.jsonl", [_row(seq_len=64, timestamp="2999-01-01T00:00:00+00:00")])
    warnings = []
    merge(tmp_path / "out.jsonl", [good, late, future], warn=warnings.append)
    assert any("replaces an 'ok' row" in w for w in warnings) and any("in the future" in w for w in warnings)


# 8, 9. reports under an ASCII locale; an empty results file


def test_report_writes_utf8_under_an_ascii_locale(tmp_path):
    rows = _write(tmp_path / "rows.jsonl", [_row(attention=a, seq_len=n) for a in ("sdpa", "linrec") for n in (16, 32)])
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}
    command = [sys.executable, "-m", "bench", "report", str(rows), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(p.stat().st_size > 0 for p in (tmp_path / "out").glob("*.csv"))


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_report_on_an_empty_results_file_is_one_line(tmp_path, content):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(content)
    command = [sys.executable, "-m", "bench", "report", str(rows), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr and "no result rows" in done.stderr


# 10. NaN and infinite limits


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "0", "-1", "soon"])
def test_limits_must_be_finite_and_positive(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)


@pytest.mark.parametrize("flags", [["sweep", "--max-cell-s", "nan"], ["train", "--max-minutes", "nan"]])
def test_a_nan_limit_is_refused_on_the_command_line(flags):
    done = subprocess.run(
        [sys.executable, "-m", "bench", *flags], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "expected a finite number" in done.stderr


# 6, 7. SIGKILL to a driver leaves nothing running


def _children_after_kill(command, tmp_path, wait_for_child_s=120.0):
    """Start a driver, wait until it has a child, SIGKILL the driver; the children still alive after a while."""
    import signal
    import time

    import psutil

    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + wait_for_child_s
        children = []
        while time.monotonic() < deadline and not children:
            time.sleep(0.5)
            children = psutil.Process(driver.pid).children(recursive=True)
        assert children, "the driver started no child"
        time.sleep(2)  # the child is past its start
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=60)
        return alive
    finally:
        if driver.poll() is None:
            driver.kill()


@pytest.mark.parametrize(
    "command",
    [
        ["accuracy", "--preset", "quick", "--threads", "1"],
        ["sweep", "--attention", "sdpa", "--seq-len", "2048", "--batch-size", "16", "--threads", "1", "--no-progress"],
    ],
    ids=["accuracy", "sweep"],
)
def test_a_killed_driver_takes_its_children_with_it(tmp_path, command):
    out = ["--out", str(tmp_path / "rows.jsonl")] + (
        ["--work-dir", str(tmp_path / "work")] if "accuracy" in command else []
    )
    alive = _children_after_kill([sys.executable, "-m", "bench", *command, *out], tmp_path)
    for process in alive:
        process.kill()
    assert not alive, f"still running after the driver died: {[p.pid for p in alive]}"


def test_a_stop_before_the_first_epoch_does_not_promise_a_checkpoint(tmp_path, monkeypatch, capsys):
    import bench.training.train
    from bench.cli import main

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.training.train, "train", stopped)
    monkeypatch.setattr("bench.cli.raise_on_sigterm", lambda: None)  # this test process keeps its own handler
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "synthetic", "--out", str(tmp_path / "run"), "--no-progress"])
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert "nothing was kept" in err and "--resume" not in err


# provenance: a run written twice is counted once, and not written twice


def test_a_run_written_twice_is_read_once_with_a_warning(capsys):
    from bench.schema import without_repeated_runs

    run = {
        "level": "train", "status": "ok", "dataset": "d", "attention": "sdpa", "options": {}, "seq_len": 10,
        "batch_size": 2, "seed": 1, "recipe": "r", "model": "sasrec", "objective": "o", "settings": {},
        "timestamp": "2026-12-01T00:00:00+00:00", "train_seconds": 12.5,
    }  # fmt: skip
    rows = [run, dict(run), {**run, "seed": 2}, {**run, "timestamp": "2026-12-02T00:00:00+00:00"}]
    assert len(without_repeated_runs(rows, "here", warn=print)) == 3  # the same cell trained again is another run
    assert "written twice" in capsys.readouterr().out


def test_a_rewrite_drops_and_replaces_rows_in_every_part_and_keeps_the_others_bytes(tmp_path):
    from bench.results import append_to_parts, result_parts, rewrite_parts

    path = tmp_path / "rows.jsonl"
    for seed in range(6):
        append_to_parts(path, {"seed": seed, "z": 1, "a": 2}, part_bytes=40)  # a few rows per part
    (path.parent / "rows.2.jsonl").write_text('{"z": 1, "seed": 9}\n')  # written by hand: key order not sorted
    before = {p.name: p.read_text() for p in result_parts(path)}
    with results_writer(path):
        changed = rewrite_parts(path, lambda r: None if r["seed"] == 1 else {**r, "z": 0} if r["seed"] == 4 else r)
    assert changed == 2
    after = {p.name: p.read_text() for p in result_parts(path)}
    seeds = [json.loads(line)["seed"] for text in after.values() for line in text.splitlines()]
    assert 1 not in seeds and 4 in seeds and '"z": 0' in "".join(after.values())
    assert after["rows.2.jsonl"] == before["rows.2.jsonl"]  # untouched part, untouched bytes
    assert not list(tmp_path.glob("*.rewrite"))


def test_the_committed_results_hold_each_run_once_and_every_ranks_file_they_name():
    """A run written twice (a copy appended with its probes) and a snapshot its finished row superseded were both
    in the committed rows once; so were ranks named under a side file's folder that the merge did not carry."""
    from bench.results import load_rows, result_parts
    from bench.schema import run_identity
    from bench.training.accuracy import TrainCell

    for path in sorted((REPO / "results" / "sweeps").glob("*.jsonl")):
        if path.stem.rsplit(".", 1)[-1].isdigit():
            continue  # a part: read with the file it continues
        rows = [row for part in result_parts(path) for row in load_rows(part)]
        identities = [run_identity(r) for r in rows if run_identity(r) is not None]
        assert len(identities) == len(set(identities)), f"{path.name}: a run written twice"
        train = [r for r in rows if r.get("level") == "train"]
        finished = [TrainCell.of_row(r) for r in train if r.get("status") in ("ok", "oom")]
        superseded = [r for r in train if r.get("status") == "partial" and TrainCell.of_row(r) in finished]
        assert not superseded, f"{path.name}: a snapshot of a run whose finished row is there"
        for row in rows:
            assert not row.get("ranks_file") or (path.parent / row["ranks_file"]).is_file(), row["ranks_file"]


# a newcomer's typos: one line with the closest names, nothing left behind


@pytest.mark.parametrize(
    "flags, closest",
    [
        (["sweep", "--preset", "quik"], "'quick'"),
        (["main", "--preset", "quik"], "'quick'"),
        (["accuracy", "--preset", "quik"], "'quick'"),
        (["train", "--dataset", "ml100k"], "'ml-100k'"),
        (["train", "--dataset", "synthetic", "--recipe", "sasrec-plus-prot"], "'sasrec-plus-port'"),
        (["train", "--dataset", "synthetic", "--protocol", "ful"], "'full'"),
    ],
)
def test_a_misspelt_name_is_one_line_with_the_closest_names(tmp_path, flags, closest):
    out = tmp_path / "run"
    extra = ["--out", str(out)] if flags[0] in ("train", "main") else ["--out", str(out / "rows.jsonl")]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *flags, *extra], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"did you mean {closest}" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists(), f"left behind: {sorted(p.name for p in out.iterdir())}"


def test_status_counts_cells_finished_in_another_committed_results_file():
    """The mixers' N = 200 cells of the paper preset live in accuracy-mixers-cpu.jsonl: finished, not 'waiting'."""
    command = [sys.executable, "-m", "bench", "accuracy", "--preset", "paper", "--status"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if "plus-port-mamba-N200-B128-s2000 " in line)
    assert "finished" in line and "accuracy-mixers-cpu.jsonl" in line


def test_a_cell_still_trained_by_an_orphan_is_waited_for_then_left_alone_without_a_row(tmp_path, monkeypatch):
    import bench.training.accuracy as accuracy
    from bench.results import folder_owner
    from bench.training.accuracy import CellsInUse, TrainCell, run_accuracy_sweep

    monkeypatch.setattr(accuracy, "IN_USE_WAIT_S", 1.0)
    cell = TrainCell("synthetic", "sdpa", 10, 16, settings={"epochs": 1})
    lines = []
    with folder_owner(tmp_path / "work" / cell.slug(), "a training", "--out"):  # the orphan, still training
        with pytest.raises(CellsInUse, match="1 cell"):
            run_accuracy_sweep([cell], tmp_path / "rows.jsonl", work_dir=tmp_path / "work", log=lines.append)
    assert not (tmp_path / "rows.jsonl").exists() or not (tmp_path / "rows.jsonl").read_text().strip()
    assert any("still in use by pid" in line for line in lines)
