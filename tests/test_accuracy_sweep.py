"""The sweep's training level: cells, rows, resume at the cell level and inside a cell, reports."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from bench.reports.accuracy import accuracy_report, gaps_to_baseline
from bench.reports.timing import report
from bench.reports.training_rows import compact_history, train_frame, variant
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
    assert "Paired tests against sdpa" in table and "paired Δ vs sdpa (seen excl.)" in table
    assert "Wilcoxon p = " in table
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


def _row(mechanism, seed, ndcg):
    return {
        "level": "train",
        "status": "ok",
        "attention": mechanism,
        "options": {},
        "max_len": 200,
        "batch_size": 128,
        "seed": seed,
        "dataset": "toy",
        "model": "sasrec",
        "objective": "all_positions",
        "recipe": "sasrec-plus",
        "best_epoch": 3,
        "epochs_run": 5,
        "seconds_per_epoch": 1.0,
        "train_seconds": 5.0,
        "device": "cpu",
        "history": [],
        "config": {"hidden": 64, "heads": 1},
        "dataset_stats": {"items": 10},
        "protocol": {"selected_on": "seen_excluded"},
        "timestamp": f"t{seed}",
        "test": {"seen_excluded": {"ndcg@10": ndcg, "recall@10": 0.3, "mrr@10": 0.1}},
    }


def test_compact_history_rounds_to_six_significant_digits_and_keeps_every_key():
    history = [
        {"epoch": 1, "loss": 7.627871831258138, "mem_method": "rss", "valid": {"all": {"ndcg@10": 0.0113316321}}}
    ]
    assert compact_history(history) == [{"epoch": 1, "loss": 7.62787, "valid": {"all": {"ndcg@10": 0.0113316}}}]
    assert compact_history(None) is None


@pytest.mark.parametrize(
    ("linrec", "verdict"), [((0.170, 0.171, 0.169), "exceeds"), ((0.179, 0.181, 0.176), "is within")]
)
def test_gap_to_sdpa_is_judged_against_the_seed_spread(linrec, verdict):
    rows = [_row("sdpa", s, v) for s, v in zip((1, 2, 3), (0.180, 0.182, 0.178), strict=False)]
    rows += [_row("linrec", s, v) for s, v in zip((1, 2, 3), linrec, strict=False)]
    (line,) = gaps_to_baseline(train_frame(rows), "seen_excluded")
    assert verdict in line and "3 and 3 seeds" in line


def test_runs_still_training_are_left_out_of_the_gap_when_finished_runs_exist():
    rows = [_row("sdpa", s, v) for s, v in ((1, 0.180), (2, 0.182))] + [_row("linrec", s, 0.170) for s in (1, 2)]
    rows += [{**_row("sdpa", 3, 0.120), "status": "partial"}, {**_row("linrec", 3, 0.100), "status": "partial"}]
    (line,) = gaps_to_baseline(train_frame(rows), "seen_excluded")
    assert "-0.0110" in line and "2 and 2 seeds" in line and "exceeds" in line and "2 run(s) still training" in line


def test_one_seed_is_said_to_be_one_seed():
    (line,) = gaps_to_baseline(train_frame([_row("sdpa", 1, 0.18), _row("linrec", 1, 0.17)]), "seen_excluded")
    assert "one seed on each side" in line and "-0.0100" in line


@pytest.mark.parametrize(("linrec", "verdict"), [(0.170, "exceeds"), (0.178, "is within")])
def test_one_seed_against_several_is_read_against_the_known_spread_only(linrec, verdict):
    rows = [_row("sdpa", s, v) for s, v in zip((1, 2, 3), (0.180, 0.182, 0.178), strict=True)]
    (line,) = gaps_to_baseline(train_frame([*rows, _row("linrec", 1, linrec)]), "seen_excluded")
    assert f"{verdict} twice sdpa's seed-to-seed std (0.0020; 3 seeds); linrec has one seed" in line
    # the mean gap and the gap over the seed both ran (sdpa's seed 1: 0.180) side by side
    assert f"over the seed(s) both ran (1): {linrec - 0.180:+.4f}" in line


@pytest.mark.parametrize("same_file", [False, True])
def test_the_same_ratings_in_two_orders_get_a_table_with_the_gap_against_the_spread(tmp_path, same_file):
    def row(dataset, seed, ndcg, valid):
        fingerprint = "f" if same_file else dataset
        return {
            **_row("sdpa", seed, ndcg),
            "dataset": dataset,
            "dataset_stats": {"items": 10, "sequences_sha256": fingerprint},
            "valid": {"seen_excluded": {"ndcg@10": valid, "recall@10": 0.3, "mrr@10": 0.1}},
        }

    # test: the third file-order seed scores high, the gap is within the spread; validation: it is not
    rows = [row("file_order", s, v, w) for s, v, w in ((1, 0.166, 0.170), (2, 0.164, 0.168), (3, 0.180, 0.172))]
    rows += [row("ratings_order", s, v, w) for s, v, w in ((1, 0.181, 0.188), (2, 0.180, 0.187), (3, 0.182, 0.189))]
    rows.append({**_row("sdpa", 1, 0.2), "dataset": "unrelated", "dataset_stats": {"items": 11}})
    written = [p.name for p in accuracy_report(rows, tmp_path) if p.name.startswith("order_")]
    if same_file:
        assert written == []
        return
    assert written == [
        f"order_file_order_vs_ratings_order_{stem}.{ext}"  # names with underscores kept whole
        for ext in ("md", "csv")
        for stem in ["sasrec-all-positions_sasrec-plus_d64h1"]
    ]
    text = (tmp_path / written[0]).read_text()
    assert "sdpa, N=200, batch 128: ratings_order +0.0110 NDCG@10 vs file_order; the gap is within twice" in text
    assert "ratings_order +0.0180 validation NDCG@10 vs file_order; the gap exceeds twice" in text
    assert "| 0.1700 ± 0.0020 |" in text and "| 0.1880 ± 0.0010 |" in text  # validation means ± std
    assert "unrelated" not in text


def test_rows_from_two_devices_say_which_device_trained_each(tmp_path):
    xeon, epyc = "CPU Intel(R) Xeon(R) Processor", "CPU AMD EPYC"
    rows = [{**_row("sdpa", 1, 0.18), "device": xeon}, {**_row("sdpa", 2, 0.17), "device": epyc}]
    rows += [{**_row("linrec", 1, 0.16), "device": epyc, "max_len": 800}]
    accuracy_report(rows, tmp_path)
    (page,) = tmp_path.glob("accuracy_*.md")
    text = page.read_text()
    assert "Devices: CPU AMD EPYC (2 runs), CPU Intel Xeon (1 run)" in text
    assert "| device | s/epoch |" in text
    assert "| CPU AMD EPYC + CPU Intel Xeon |" in text and "| CPU AMD EPYC |" in text  # seeds of two machines
    ablation = [*rows, {**_row("sdpa", 1, 0.18), "device": epyc, "settings": {"dropout": 0.2}}]
    accuracy_report(ablation, tmp_path)
    assert "| device | s/epoch |" in next(tmp_path.glob("ablation_*.md")).read_text()
    accuracy_report(rows[:1], tmp_path)  # one device: named once above the table, no column
    text = page.read_text()
    assert f"Device: {xeon}." in text and "| device |" not in text


def test_seconds_per_epoch_are_joined_only_between_rows_timed_alike():
    from bench.reports.accuracy_plots import timed_alike
    from bench.reports.training_rows import summary

    def row(batch, device, split):
        return {**_row("sdpa", 1, 0.17), "batch_size": batch, "device": device, "split_batches": split}

    frame = train_frame(
        [row(32, "CPU AMD EPYC", True), row(128, "CPU Intel Xeon", False), row(512, "CPU AMD EPYC", True)]
    )
    groups = {tuple(how.values()): sorted(rows["batch_size"]) for how, rows in timed_alike(summary(frame))}
    assert groups == {("CPU AMD EPYC", "split"): [32, 512], ("CPU Intel Xeon", "whole"): [128]}


def test_a_variant_names_what_changes_the_model_not_the_budget_width_or_batch_computation():
    assert variant({"epochs": 3, "hidden": 128, "heads": 8, "split_batches": False, "dropout": 0.2}) == "dropout=0.2"
    assert variant({}) == ""


def test_a_snapshot_of_an_unfinished_cell_is_partial_and_the_finished_row_supersedes_it(tmp_path):
    import dataclasses

    from bench.reports.training_rows import train_frame
    from bench.training.accuracy import snapshot_unfinished
    from bench.training.train import train

    cell = TrainCell("synthetic", "sdpa", 20, 16, settings={"epochs": 3, "patience": 3, "synthetic_users": 200})
    out, work = tmp_path / "acc.jsonl", tmp_path / "work"
    cell_dir = work / cell.slug()
    cell_dir.mkdir(parents=True)
    stopped_early = dataclasses.replace(cell.train_config(cell_dir, threads=1), epochs=1)
    train(stopped_early, progress=False, log=False)
    (cell_dir / "results.json").unlink()
    (partial,) = snapshot_unfinished([cell], out, work_dir=work, threads=1, log=lambda *_: None)
    assert partial["status"] == "partial" and partial["epochs_run"] == 1 and "snapshot" in partial["stop_reason"]
    assert cell.key() not in done_keys(out)
    assert train_frame(load_rows(out))["partial"].tolist() == [True]
    (finished,) = run_accuracy_sweep([cell], out, work_dir=work, threads=1, log=lambda *_: None)
    assert finished["status"] == "ok" and finished["epochs_run"] == 3
    frame = train_frame(load_rows(out))
    assert frame["partial"].tolist() == [False] and frame["epochs_run"].tolist() == [3]


def test_a_preset_whose_every_run_changes_the_recipe_alike_still_gets_its_report(tmp_path):
    """The LinRec authors' setting and the Gowalla cells change the recipe the same way in every run (width,
    selection, k-core): no run of the recipe as named exists, yet their table must be written."""
    own = {"inner": 256, "select_protocol": "all", "min_count": 5}
    rows = [{**_row(name, 2000, ndcg), "settings": own} for name, ndcg in (("sdpa", 0.3), ("linrec", 0.28))]
    accuracy_report(rows, tmp_path)
    (page,) = tmp_path.glob("accuracy_*inner-256_min_count-5_select_protocol-all.md")
    assert "| linrec |" in page.read_text() and not list(tmp_path.glob("ablation_*"))


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
