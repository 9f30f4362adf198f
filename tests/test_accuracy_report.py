"""The accuracy report's readings of training rows: gaps against the seed spread, the tie-order table, devices,
timings, variants, unfinished cells."""

import pandas as pd
import pytest

from bench.reports.accuracy import accuracy_report, gaps_to_baseline
from bench.reports.training_rows import train_frame, variant
from bench.results import load_rows
from bench.schema import compact_history
from bench.training.accuracy import TrainCell, done_keys, run_accuracy_sweep


def _row(mechanism, seed, ndcg):
    return {
        "level": "train",
        "status": "ok",
        "attention": mechanism,
        "options": {},
        "seq_len": 200,
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
        for ext in ("md", "csv", "tex")
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
    rows += [{**_row("linrec", 1, 0.16), "device": epyc, "seq_len": 800}]
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
    assert [r["status"] for r in load_rows(out)] == ["ok"]  # the snapshot is gone: one row per run
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


def test_two_variants_of_a_preset_setting_get_a_report_each_and_an_ablation_table(tmp_path):
    """The authors' setting with whole-history windows and with the last window only: neither is the recipe as
    named, each keeps its own report, and the ablation table sets them side by side."""
    own = {"inner": 256, "select_protocol": "all"}
    rows = [
        {**_row(name, 2000, ndcg), "settings": {**own, **windows}}
        for windows, ndcg in (({}, 0.28), ({"train_windows": "all"}, 0.30))
        for name in ("sdpa", "linrec")
    ]
    accuracy_report(rows, tmp_path)
    last = tmp_path.glob("accuracy_*inner-256_select_protocol-all.md")
    whole = tmp_path.glob("accuracy_*inner-256_select_protocol-all_train_windows-all.md")
    assert len(list(last)) == 1 and len(list(whole)) == 1
    (ablation,) = tmp_path.glob("ablation_*.csv")
    table = pd.read_csv(ablation, dtype=str).fillna("")
    gains = table.loc[table["change"].str.contains("train_windows=all"), [c for c in table if c.startswith("Δ")]]
    # measured against the last-window row each extends, not left blank for want of a plain recipe
    assert (gains.iloc[:, 0] == "+0.0200").all() and len(gains) == 2
    assert (table.loc[~table["change"].str.contains("train_windows"), gains.columns[0]] == "").all()


def test_the_ablation_pairs_a_change_with_the_run_it_changes_over_the_same_users(tmp_path):
    """With per-user ranks on both sides, the ablation's Δ is a paired test, starred where significant."""
    import gzip
    import json

    users = [str(u) for u in range(300)]

    def ranks(name, hits):
        path = tmp_path / f"{name}.json.gz"
        with gzip.open(path, "wt") as handle:  # hits of 300 users at rank 1, the rest missed (rank 20)
            json.dump({"users": users, "ranks": {"seen_excluded": [1] * hits + [20] * (300 - hits)}}, handle)
        return str(path)

    own = {"inner": 256, "select_protocol": "all"}
    rows = [
        {**_row("sdpa", 2000, 0.30), "settings": {**own, "train_windows": "all"}, "ranks_path": ranks("whole", 150)},
        {**_row("sdpa", 2000, 0.28), "settings": own, "ranks_path": ranks("last", 100)},
    ]
    accuracy_report(rows, tmp_path / "out")
    (ablation,) = (tmp_path / "out").glob("ablation_*.csv")
    table = pd.read_csv(ablation, dtype=str).fillna("")
    whole = table.loc[table["change"].str.contains("train_windows"), "Δ (seen excl.)"].item()
    assert whole.startswith("+0.1667 [") and whole.endswith("*")  # 50 more users of 300 hit at rank 1
