"""Damaged inputs, interrupted runs and misuse: each case failed (silently or with a bare traceback) before its fix."""

import gzip
import json
import os

import pytest
import torch

from bench.data import DataFormatError, guess_format, load_dataset
from bench.results import ResultsFileBusy, ResultsFileError, append_row, load_rows, results_writer

# ------------------------------------------------------------------ results files


def test_a_torn_last_row_is_dropped_before_the_next_append(tmp_path):
    path = tmp_path / "r.jsonl"
    append_row(path, {"a": 1})
    with path.open("a") as handle:
        handle.write('{"a": 2, "b"')  # killed mid-write: no newline
    assert load_rows(path) == [{"a": 1}]
    append_row(path, {"a": 3})  # the re-run of the torn cell
    append_row(path, {"a": 4})
    assert load_rows(path) == [{"a": 1}, {"a": 3}, {"a": 4}]


def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path):
    path = tmp_path / "r.jsonl"
    with results_writer(path):
        with pytest.raises(ResultsFileBusy, match=rf"{path.name} is being written by pid {os.getpid()}"):
            with results_writer(path):
                pass
    with results_writer(path):  # released
        pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff", "not a text file"),
        (b'{"a": 1}\n[1, 2]\n{"b": 2}\n', r":2: expected a JSON object"),
        (b'{"a": 1}\nnot json\n{"b": 2}\n', r":2: not a JSON object"),
    ],
)
def test_unreadable_results_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with pytest.raises(ResultsFileError, match=message):
        load_rows(path)
    with pytest.raises(ResultsFileError, match="is a directory"):
        load_rows(tmp_path)


# ------------------------------------------------------------------ data files


def _gz(path, text):
    with gzip.open(path, "wt") as handle:
        handle.write(text)
    return path


def test_one_line_per_user_is_not_mistaken_for_checkins_when_the_first_user_has_two_items(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("1 10 11\n2 10 12 13 14\n3 11 12 13\n")
    assert guess_format(path) == "user_lines"
    assert load_dataset(str(path)).stats()["interactions"] == 9


def test_one_line_per_user_whose_first_user_has_one_item(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("1 10\n2 10 12 13 14\n")
    assert guess_format(path) == "user_lines"
    assert load_dataset(str(path)).stats()["format"] == "user_lines"


def test_ambiguous_files_are_refused_and_the_format_can_be_named(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("1 10 11\n2 12 13\n")  # two items per user, or one check-in per user?
    with pytest.raises(DataFormatError, match="ambiguous.*--format"):
        load_dataset(str(path))
    assert load_dataset(str(path), fmt="user_lines").num_items == 4
    with pytest.raises(DataFormatError, match="unknown format 'csv'"):
        load_dataset(str(path), fmt="csv")


def test_checkins_are_recognised_by_repeated_users(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("0\t5\t1287503727.0\n0\t6\t1287411463.0\n1\t5\t1287411400.0\n")
    assert guess_format(path) == "checkins"


def test_compression_is_told_by_content_not_by_name(tmp_path):
    gz_named_txt = _gz(tmp_path / "users.txt", "1 10 11 12\n2 11 12\n")
    assert load_dataset(str(gz_named_txt)).num_users == 2
    text_named_gz = tmp_path / "users.txt.gz"
    text_named_gz.write_text("1 10 11 12\n2 11 12\n")
    assert load_dataset(str(text_named_gz)).num_users == 2


def test_damaged_data_files_name_the_file(tmp_path):
    whole = _gz(tmp_path / "whole.gz", "".join(f"{u} 1 2 3 4 5 6 7 8 9\n" for u in range(3000))).read_bytes()
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFormatError, match=r"cut.txt.gz: damaged or truncated gzip"):
        load_dataset(str(truncated), fmt="user_lines")
    binary = tmp_path / "random.txt"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(DataFormatError, match=r"random.txt: line 1 is not UTF-8"):
        load_dataset(str(binary), fmt="user_lines")


def test_an_existing_file_without_suffix_is_read(tmp_path):
    path = tmp_path / "mydata"
    path.write_text("1 10 11 12\n2 11 12\n")
    assert load_dataset(str(path)).num_users == 2


# ------------------------------------------------------------------ attention layers at the edges

from models.attention import available_attentions, build_attention  # noqa: E402

MECHANISMS = sorted(available_attentions())


def _layer(name, causal=False):
    options = {"k": 8} if name == "linformer" else {}
    return build_attention(name, 16, 2, causal=causal, max_len=12, **options).eval()


@pytest.mark.parametrize("name", MECHANISMS)
@pytest.mark.parametrize("shape", [(0, 6), (2, 0)], ids=["batch0", "length0"])
def test_empty_batches_and_sequences_give_empty_outputs(name, shape):
    causal = available_attentions()[name]["causal"]
    x = torch.randn(*shape, 16, requires_grad=True)
    out = _layer(name, causal)(x, torch.ones(shape, dtype=torch.bool))
    assert out.shape == (*shape, 16)
    out.sum().backward()


@pytest.mark.parametrize("name", MECHANISMS)
def test_a_wrong_padding_mask_gets_a_clear_error(name):
    with pytest.raises(ValueError, match=r"padding_mask must be a bool tensor of shape \(B, N\)"):
        _layer(name)(torch.randn(2, 6, 16), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="padding_mask must be a bool tensor"):
        _layer(name)(torch.randn(2, 6, 16), torch.ones(2, 6))


@pytest.mark.parametrize("name", MECHANISMS)
def test_nan_in_padded_positions_reaches_no_real_output(name):
    causal = available_attentions()[name]["causal"]
    layer = _layer(name, causal)
    x = torch.randn(2, 6, 16)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    clean = layer(x, mask)
    x[0, :2] = float("nan")
    dirty = layer(x, mask)
    assert torch.isfinite(dirty[mask]).all()
    assert torch.allclose(dirty[mask], clean[mask], atol=1e-6)


def test_zero_heads_is_refused_clearly():
    with pytest.raises(ValueError, match="dim and heads must be >= 1"):
        build_attention("linrec", 16, 0)


# ------------------------------------------------------------------ training runs


def _tiny_config(tmp_path, **kw):
    from bench.training.config import TrainConfig

    values = {
        "dataset": "synthetic",
        "synthetic_users": 60,
        "synthetic_items": 30,
        "max_len": 10,
        "hidden": 16,
        "heads": 2,
        "layers": 1,
        "inner": 16,
        "epochs": 1,
        "batch_size": 32,
        "out": str(tmp_path / "run"),
        "threads": 1,
    }
    return TrainConfig(**{**values, **kw})


def test_a_finished_run_is_not_overwritten_without_asking(tmp_path):
    from bench.training.train import train

    train(_tiny_config(tmp_path), progress=False, log=False)
    with pytest.raises(ValueError, match="already holds a run.*--resume continues it, --overwrite replaces it"):
        train(_tiny_config(tmp_path), progress=False, log=False)
    assert train(_tiny_config(tmp_path), overwrite=True, progress=False, log=False)["epochs_run"] == 1


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    from bench.training.train import train

    train(_tiny_config(tmp_path), resume=True, progress=False)
    assert "no checkpoint" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"], ids=["empty", "truncated"])
def test_a_damaged_checkpoint_names_the_file(tmp_path, content):
    from bench.training.train import train

    train(_tiny_config(tmp_path), progress=False, log=False)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"checkpoint.pt: not a readable checkpoint"):
        train(_tiny_config(tmp_path, epochs=2), resume=True, progress=False, log=False)


def test_a_crafted_checkpoint_does_not_run_code(tmp_path):
    from bench.training.train import train

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    train(_tiny_config(tmp_path), progress=False, log=False)
    torch.save({"model": Payload()}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train(_tiny_config(tmp_path, epochs=2), resume=True, progress=False, log=False)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("sequences", "message"),
    [
        ([[1]], r"1 user\(s\), 0 with enough items to train"),
        ([[1, 2], [2, 1]], r"0 with the 3\+ items needed for validation"),
    ],
)
def test_data_that_cannot_train_or_evaluate_is_refused_up_front(tmp_path, sequences, message):
    from bench.data import SequenceDataset
    from bench.training.train import train

    dataset = SequenceDataset("tiny", sequences, 2)
    with pytest.raises(ValueError, match=message):
        train(_tiny_config(tmp_path), dataset=dataset, progress=False, log=False)
    assert not (tmp_path / "run" / "results.json").exists()


def test_cuda_without_cuda_is_one_clear_line(tmp_path):
    from bench.environment import check_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=r"--device cuda: this torch .* sees no CUDA device; use --device cpu"):
        check_device("cuda")


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
    from bench.reports.timing import report

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
    from bench.reports.timing import report

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
    from bench.reports.timing import report

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
