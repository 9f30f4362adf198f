"""The sweep's training level: cells, rows, resume at the cell level and inside a cell, reports."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from bench.reports import report
from bench.results import append_to_parts, folder_owner, load_rows, result_parts
from bench.training.accuracy import TrainCell, done_keys, run_accuracy_sweep
from bench.training.presets import preset_cells


def test_quick_preset_end_to_end_then_resume_skips_everything(tmp_path):
    out, work = tmp_path / "acc.jsonl", tmp_path / "work"
    rows = run_accuracy_sweep(preset_cells("quick"), out, work_dir=work, jobs=2, threads=1, log=lambda *_: None)
    assert len(rows) == len(preset_cells("quick")) and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert set(row["test"]) == {"all", "seen_excluded"} and row["protocol"]["selected_on"] == "seen_excluded"
        assert (
            row["test"]["seen_excluded"]["ndcg@10"] >= row["test"]["all"]["ndcg@10"]
        )  # exclusion only removes competitors
        for key in (
            "commit",
            "torch",
            "threads",
            "device",
            "host",
            "seed",
            "seconds_per_epoch",
            "other_load_cores",
            "peak_mem_bytes",
            "history",
            "best_epoch",
        ):
            assert row[key] is not None, key
        epoch = row["history"][-1]  # the learning curve, compact: 6 significant digits, no repeated strings
        assert "mem_method" not in epoch and len(repr(epoch["valid"]["seen_excluded"]["ndcg@10"])) <= 12
        assert epoch["other_load_cores"] >= 0 and row["other_load_cores"] >= 0  # the two cells load each other
        assert row["split_batches"] is True  # SASRec with sdpa / LinRec: batches run as groups of similar length
    assert run_accuracy_sweep(preset_cells("quick"), out, work_dir=work, log=lambda *_: None) == []
    written = {p.name for p in report([out], tmp_path / "report")}
    setting = "synthetic-200items_sasrec-all-positions_sasrec-plus_d64h1"
    assert f"accuracy_vs_len_{setting}.png" in written and f"accuracy_{setting}.md" in written
    table = (tmp_path / "report" / f"accuracy_{setting}.md").read_text()
    assert "Gap to sdpa" in table and "| other load |" in table
    # every finished cell kept its per-user test ranks beside the results file; the report pairs them with sdpa's
    for row in rows:
        assert (out.parent / row["ranks_file"]).is_file() and row["dataset_stats"]["file_sha256"] == ""
    assert "Against sdpa, over seeds" in table and "Δ vs sdpa over seeds (seen excl.)" in table
    assert "**one run** vs sdpa" in table  # one seed a side: no verdict, whatever the p-values
    assert "Within-run view: paired against sdpa" in table and "Wilcoxon p = " in table
    assert "significant" not in table
    # and by history length, from the same ranks (synthetic histories are short: every user in the first range)
    assert "## By history length (seen items excluded)" in table and "| NDCG@10 < 100 |" in table
    assert "| batches |" in table and "| split |" in table and "| whole |" not in table


def test_a_cell_killed_mid_training_continues_from_its_checkpoint_and_writes_one_row(tmp_path):
    cell = TrainCell("synthetic", "linrec", 20, 16, settings={"epochs": 4, "patience": 4, "synthetic_users": 400})
    out, work = tmp_path / "acc.jsonl", tmp_path / "work"
    cell_dir = work / cell.slug()
    cell_dir.mkdir(parents=True)
    config = cell.train_config(cell_dir, threads=1)
    (cell_dir / "config.json").write_text(json.dumps(asdict(config)))
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.training.accuracy", str(cell_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (cell_dir / "checkpoint.pt").exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)  # mid-training: after the first epoch's checkpoint
    child.wait()
    assert (cell_dir / "checkpoint.pt").exists() and not (cell_dir / "results.json").exists()
    rows = run_accuracy_sweep([cell], out, work_dir=work, threads=1, log=lambda *_: None)
    assert [r["status"] for r in rows] == ["ok"] and len(load_rows(out)) == 1
    history = rows[0]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    log = (cell_dir / "train.log").read_text()
    assert (
        "epoch   1 " not in log and log.count("epoch   2 ") == 1
    )  # epoch 1 came from the checkpoint, not trained again
    assert cell.key() in done_keys(out)


def test_failed_and_unsupported_cells_are_rows_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "acc.jsonl"
    broken = tmp_path / "broken.txt"  # found, but not a data file: the cell fails while it trains
    broken.write_text("this is not a dataset\n")
    cells = [
        TrainCell("synthetic", "linformer", 20, 16, options={"k": 4}, settings={"epochs": 1}),  # no causal form
        TrainCell(str(broken), "sdpa", 20, 16, settings={"epochs": 1}),
        TrainCell("synthetic", "sdpa", 20, 16, settings={"epochs": 1}),
    ]
    rows = run_accuracy_sweep(cells, out, work_dir=tmp_path / "work", threads=1, log=lambda *_: None)
    assert [r["status"] for r in rows] == ["unsupported", "error", "ok"]
    assert "broken.txt" in rows[1]["message"]
    assert rows[1]["commit"] and rows[1]["torch"]
    # a later run over a selection counts that selection's cells, whatever else the results file holds
    unsupported = [TrainCell("synthetic", "linformer", n, 16, options={"k": 4}) for n in (30, 40)]
    lines = []
    run_accuracy_sweep(unsupported[:1], out, work_dir=tmp_path / "work", log=lines.append)
    run_accuracy_sweep(unsupported, out, work_dir=tmp_path / "work", log=lines.append)
    assert [line.split("]")[0] for line in lines] == ["[1/1", "[2/2"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--preset", "paper", "--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such directory"),
        (["--preset", "quick", "--only", "nothing-like-this"], "no cell of preset 'quick' matches"),
        (["--preset", "nope"], "unknown accuracy preset 'nope'"),
        (["--preset", "quick", "--device", "cuda:0"], "--device cuda:0"),
    ],
)
def test_what_every_cell_would_fail_on_is_refused_before_anything_trains(tmp_path, flags, message):
    from bench.cli import main

    if "cuda:0" in flags and __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit) as stop:
        main(["accuracy", *flags, "--out", str(tmp_path / "acc.jsonl"), "--work-dir", str(tmp_path / "work")])
    assert str(stop.value).startswith("accuracy: ") and message in str(stop.value)
    assert not (tmp_path / "acc.jsonl").exists() and not (tmp_path / "work").exists()


def test_a_count_below_one_is_refused_when_parsed(capsys, tmp_path, monkeypatch):
    from bench.cli import main

    monkeypatch.chdir(tmp_path)  # a refused call must leave nothing in the working folder (no unused.jsonl.lock)

    for flags in (["--jobs", "0"], ["--threads", "-1"]):
        with pytest.raises(SystemExit) as stop:
            main(["accuracy", *flags])
        assert stop.value.code == 2 and "expected a whole number >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        run_accuracy_sweep([TrainCell("synthetic", "sdpa", 20, 16)], "unused.jsonl", jobs=0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="--dropout must be in"):
        TrainCell("synthetic", "sdpa", 20, 16, settings={"dropout": 1.0}).train_config("unused")


def test_a_results_file_past_its_part_size_continues_in_numbered_parts(tmp_path):
    out = tmp_path / "acc.jsonl"
    (tmp_path / "acc.backup.jsonl").write_text("")  # not a part
    written = [append_to_parts(out, {"n": n}, part_bytes=1) for n in range(3)]
    assert [p.name for p in written] == ["acc.jsonl", "acc.2.jsonl", "acc.3.jsonl"]
    assert result_parts(out) == written
    assert [row["n"] for part in result_parts(out) for row in load_rows(part)] == [0, 1, 2]


def test_the_sweep_resumes_across_parts(tmp_path, monkeypatch):
    monkeypatch.setattr("bench.results.PART_BYTES", 1)  # every row opens a new part
    out = tmp_path / "acc.jsonl"
    cells = [TrainCell("synthetic", "linformer", n, 16, options={"k": 4}) for n in (20, 30)]  # no causal form
    rows = run_accuracy_sweep(cells, out, work_dir=tmp_path / "work", log=lambda *_: None)
    assert [r["status"] for r in rows] == ["unsupported"] * 2
    assert [p.name for p in result_parts(out)] == ["acc.jsonl", "acc.2.jsonl"]
    assert done_keys(out) == {c.key() for c in cells}
    assert run_accuracy_sweep(cells, out, work_dir=tmp_path / "work", log=lambda *_: None) == []


def test_committed_accuracy_reports_read_every_part(tmp_path):
    from bench.reports.committed import committed_sources

    (tmp_path / "sweeps").mkdir()
    names = {"accuracy-paper-cpu.jsonl", "accuracy-paper-cpu.2.jsonl"}
    for name in names:
        (tmp_path / "sweeps" / name).write_text("")
    assert {p.name for p in committed_sources("accuracy", tmp_path)} == names


def test_status_reads_each_cell_as_finished_part_way_or_waiting_without_training(tmp_path):
    import dataclasses

    from bench.training.progress import cell_progress, format_progress
    from bench.training.train import train

    small = {"epochs": 3, "patience": 3, "synthetic_users": 200}
    finished, part_way, failed, untouched = (
        TrainCell("synthetic", "sdpa", 20, 16, seed=seed, settings=small) for seed in (1, 2, 3, 4)
    )
    out, work = tmp_path / "acc.jsonl", tmp_path / "work"
    run_accuracy_sweep([finished], out, work_dir=work, threads=1, log=lambda *_: None)
    cell_dir = work / part_way.slug()
    cell_dir.mkdir(parents=True)
    train(dataclasses.replace(part_way.train_config(cell_dir, threads=1), epochs=1), progress=False, log=False)
    append_to_parts(out, {"level": "train", **asdict(failed), "status": "error", "message": "exit 1: boom"})
    cells = [finished, part_way, failed, untouched]
    progress = cell_progress(cells, out, work)
    assert [p.state for p in progress] == ["finished", "part-way", "waiting", "waiting"]
    assert progress[0].detail.startswith("test NDCG@10 ") and "(seen_excluded), best epoch " in progress[0].detail
    # the budget is the cell's (3 epochs), not the shortened one the checkpoint was written with
    assert progress[1].detail.startswith("epoch 1/3, best 1 (valid ") and "; 2 epoch(s) left (" in progress[1].detail
    assert progress[2].detail == "last try: error: exit 1: boom" and progress[3].detail == ""
    text = format_progress(progress, out, work)
    assert text.splitlines()[-1].startswith("1 finished, 1 part-way, 2 waiting; ")
    assert text.endswith("no driver is training there now") and len(load_rows(out)) == 2  # nothing written
    assert cell_progress([part_way], out, work)[0].detail == progress[1].detail  # reading it trained nothing
    torn = work / untouched.slug() / "checkpoint.pt"
    torn.parent.mkdir()
    torn.write_bytes(b"torn mid-write")
    (unreadable,) = cell_progress([untouched], out, work)
    assert unreadable.state == "part-way" and "checkpoint.pt: not a readable checkpoint" in unreadable.detail
    with folder_owner(work, "an accuracy sweep", "--work-dir"):  # a driver at work there
        assert format_progress(progress, out, work).endswith(f"a driver is training there now (pid {os.getpid()})")


def test_status_from_the_command_line(tmp_path):
    out, work = tmp_path / "acc.jsonl", tmp_path / "work"
    flags = ["--preset", "quick", "--out", str(out), "--work-dir", str(work), "--status"]
    shown = subprocess.run([sys.executable, "-m", "bench", "accuracy", *flags], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == len(preset_cells("quick")) + 1 and all(" waiting" in line for line in lines[:-1])
    assert lines[-1].startswith(f"{len(preset_cells('quick'))} waiting; ") and not out.exists() and not work.exists()


def test_cells_finished_in_another_results_file_are_skipped_and_read_as_finished_there(tmp_path):
    from bench.training.progress import cell_progress

    small = {"epochs": 1, "patience": 1, "synthetic_users": 200}
    theirs, ours = (TrainCell("synthetic", "sdpa", 20, 16, seed=seed, settings=small) for seed in (1, 2))
    elsewhere, out, work = tmp_path / "other-machine.jsonl", tmp_path / "acc.jsonl", tmp_path / "work"
    (finished,) = run_accuracy_sweep([theirs], elsewhere, work_dir=tmp_path / "w2", threads=1, log=lambda *_: None)
    append_to_parts(elsewhere, {"level": "train", **asdict(ours), "status": "error", "message": "exit 1"})
    rows = run_accuracy_sweep([theirs, ours], out, work_dir=work, threads=1, done_in=[elsewhere], log=lambda *_: None)
    assert [TrainCell.of_row(r) for r in rows] == [ours]  # an error there is not finished: trained here
    assert not (work / theirs.slug()).exists()
    first, second = cell_progress([theirs, ours], out, work, done_in=[elsewhere])
    assert first.state == "finished" and first.detail.endswith(f"(in {elsewhere})")
    assert second.state == "finished" and "(in " not in second.detail
    with pytest.raises(ValueError, match=r"--skip-done-in: .*typo.jsonl is not a file; expected a results file"):
        run_accuracy_sweep([ours], out, work_dir=work, done_in=[tmp_path / "typo.jsonl"], log=lambda *_: None)
    assert finished["status"] == "ok"


def test_the_authors_setting_trains_every_interaction_and_keeps_the_last_window_cells_as_its_ablation():
    """RecBole's prefix augmentation makes every training interaction a target: the authors' cells train on windows
    covering the whole history; the cells that ran on the last window alone keep their names (and rows)."""
    authors = [c for c in preset_cells("paper") if c.recipe == "recbole" and c.settings.get("hidden") == 128]
    whole = [c for c in authors if c.train_config("x").train_windows == "all"]
    last = [c for c in authors if c.train_config("x").train_windows == "last"]
    assert {(c.dataset, c.attention, c.options.get("variant")) for c in whole} == {
        (d, a, v)
        for d in ("ml-1m", "gowalla-subset")
        for a, v in (("sdpa", None), ("linrec", None), ("linrec", "official"))
    }
    assert {c.slug() for c in last} >= {
        "ml-1m-sasrec-all_positions-recbole-sdpa-N200-B128-s2000-heads8-hidden128-inner256-select_protocolall",
        "gowalla-subset-sasrec-all_positions-recbole-linrec-N100-B128-s2000-heads8-hidden128-inner256-min_count5-select_protocolall",
    }  # fmt: skip
