"""The long-range level: the generators plant what they say, the ceilings and chance levels are right, cells resume,
and the report reads effective context as documented."""

import math
import random
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from bench.data.longrange import (
    CATEGORY_SIZE,
    EVIDENCE,
    LongRangeTask,
    dcg_at_10,
    uniform_ndcg_at_10,
)
from bench.reports.longrange import effective_context


def _small(task, distance, **kw):
    return LongRangeTask(task, distance, valid_users=16, test_users=200, **kw)


@pytest.mark.parametrize("distance", [8, 64, 512])
def test_recall_target_is_the_only_earlier_copy_k_steps_back(distance):
    dataset = _small("recall", distance).generate()
    for history, target in dataset.split.test:
        assert len(history) + 1 == distance + min(distance, 256)
        assert history[-distance] == target  # the item k steps before the target
        assert history.count(target) == 1  # ... and nowhere else: no nearer evidence
        assert history[-1] == history[-1 - distance] and history.count(history[-1]) == 2  # a copied predecessor
    for sequence in dataset.split.train[:50]:
        planted = [t for t, keep in enumerate(sequence.scored) if keep]
        assert planted and all(t >= distance and sequence[t] == sequence[t - distance] for t in planted)


@pytest.mark.parametrize("distance", [8, 256, 2048])
def test_repeat_target_is_the_play_a_period_back(distance):
    task = _small("repeat", distance)
    dataset = task.generate()
    for history, target in dataset.split.test:
        assert history[-distance] == target
    sequence = dataset.split.train[0]
    planted = np.array(sequence.scored)
    assert not planted[:distance].any()
    # about 10 % of plays are noise: a play and the one a period back are both clean ~81 % of the time
    assert 0.7 < planted[distance:].mean() < 0.9


@pytest.mark.parametrize("distance", [8, 1024])
def test_taste_evidence_is_k_steps_back_and_the_rest_is_noise(distance):
    dataset = _small("taste", distance).generate()
    agree, recent_in_category = 0, []
    for history, target in dataset.split.test:
        category = (target - 1) // CATEGORY_SIZE
        evidence = Counter((item - 1) // CATEGORY_SIZE for item in history[:EVIDENCE])
        agree += evidence.most_common(1)[0][0] == category
        recent = history[EVIDENCE:]
        assert len(recent) == distance - 1  # the last evidence item is exactly k steps before the target
        recent_in_category += [(item - 1) // CATEGORY_SIZE == category for item in recent]
    assert agree >= 0.95 * len(dataset.split.test)  # the evidence says the category
    assert np.mean(recent_in_category) < 4 / (2048 // CATEGORY_SIZE)  # the recent items do not (chance: 1/256)


def test_generation_is_deterministic_and_names_round_trip():
    first, second = _small("recall", 64).generate(), _small("recall", 64).generate()
    assert first.fingerprint() == second.fingerprint()
    assert LongRangeTask.from_name("longrange-taste-k1024-i8192") == LongRangeTask("taste", 1024, items=8192)
    assert LongRangeTask("repeat", 64).name == "longrange-repeat-k64"
    with pytest.raises(ValueError, match="longrange-<task>-k<distance>"):
        LongRangeTask.from_name("longrange-recall")
    with pytest.raises(ValueError, match="multiple of 8"):
        LongRangeTask("recall", 12)


def test_uniform_ndcg_by_hand():
    assert uniform_ndcg_at_10(1) == 1.0
    assert uniform_ndcg_at_10(3) == pytest.approx((1 + 1 / np.log2(3) + 0.5) / 3)
    assert uniform_ndcg_at_10(20) == pytest.approx(sum(1 / np.log2(r + 1) for r in range(1, 11)) / 20)


def test_taste_ceiling_by_hand_and_by_simulation():
    task = LongRangeTask("taste", 8)
    first_block = sum(dcg_at_10(r) for r in range(1, 9))  # the certain category's 8 items at ranks 1-8
    second_block = dcg_at_10(9) + dcg_at_10(10)
    certain = [1 + (i % CATEGORY_SIZE) for i in range(EVIDENCE)]  # every evidence item from category 0
    assert task.taste_ceiling(certain) == pytest.approx(first_block / CATEGORY_SIZE)
    split = [1 + (i % CATEGORY_SIZE) + (CATEGORY_SIZE if i % 2 else 0) for i in range(EVIDENCE)]  # 16 / 16
    assert task.taste_ceiling(split) == pytest.approx(0.5 * (first_block + second_block) / CATEGORY_SIZE)
    # the Bayes-optimal ranking played on generated users scores what the ceiling says, on average
    rng = random.Random(0)
    dataset = LongRangeTask("taste", 8, valid_users=1, test_users=3000).generate()
    scores = []
    for history, target in dataset.split.test:
        hits = Counter((item - 1) // CATEGORY_SIZE for item in history[:EVIDENCE])
        top = max(hits.values())
        best = rng.choice(sorted(c for c, n in hits.items() if n == top))  # ties: any of the most likely
        rank = rng.randint(1, CATEGORY_SIZE) if (target - 1) // CATEGORY_SIZE == best else 99
        scores.append(dcg_at_10(rank))
    assert np.mean(scores) == pytest.approx(dataset.levels["ceiling_ndcg@10"], abs=0.02)


def test_recall_chance_counts_the_items_seen():
    dataset = _small("recall", 64).generate()
    expected = np.mean([uniform_ndcg_at_10(len(set(h))) for h, _ in dataset.split.test])
    assert dataset.levels["chance_ndcg@10"] == pytest.approx(expected)
    assert dataset.levels["ceiling_ndcg@10"] == 1.0


@pytest.mark.parametrize("task", ["recall", "repeat"])
def test_probes_mark_every_test_position_whose_evidence_is_k_back(task):
    dataset = _small(task, 64).generate()
    assert len(dataset.probes) == len(dataset.split.test)
    for probe, (history, target) in zip(dataset.probes, dataset.split.test, strict=True):
        assert list(probe) == [*history, target]  # the test user's whole sequence
        marked = [t for t, keep in enumerate(probe.scored) if keep]
        assert marked[-1] == len(probe) - 1 and len(marked) > 1  # the test target and others before it
        assert all(probe[t] == probe[t - 64] for t in marked)
    assert _small("taste", 64).generate().probes is None  # its one position at distance k is the test target


def test_probe_metrics_at_the_last_position_equal_the_test_protocol():
    """A full pass scores position t as training does; at the last position that is exactly the test's input."""
    import torch

    from bench.data.longrange import ScoredSequence
    from bench.training.config import with_recipe
    from bench.training.evaluate import evaluate, evaluate_probes
    from bench.training.train import build_model

    dataset = _small("recall", 8).generate()
    config = with_recipe("longrange", dataset=dataset.name, seq_len=16)
    torch.manual_seed(0)
    model = build_model(config, dataset.num_items)
    last_only = [ScoredSequence(list(p), [False] * (len(p) - 1) + [True]) for p in dataset.probes]
    probed = evaluate_probes(model, last_only, "cpu", tokens_per_batch=100)  # several batches
    tested = evaluate(model, dataset.split.test, dataset.num_items, config, device="cpu")["all"]
    assert probed["positions"] == len(dataset.split.test)
    assert probed["ndcg@10"] == pytest.approx(tested["ndcg@10"]) and probed["recall@10"] == tested["recall@10"]
    every = evaluate_probes(model, dataset.probes, "cpu")
    assert every["positions"] == sum(sum(p.scored[1:]) for p in dataset.probes)


def test_sasrec_trains_on_the_planted_positions_only():
    from bench.training.config import with_recipe
    from bench.training.train import build_model

    dataset = _small("recall", 64).generate()
    model = build_model(with_recipe("longrange", dataset=dataset.name, seq_len=128), dataset.num_items)
    sequences = dataset.split.train[:4]
    targets = model.make_batch(sequences, random.Random(0))["targets"]  # (4, 127)
    assert int((targets != 0).sum()) == sum(sum(s.scored[1:]) for s in sequences)
    plain = model.make_batch([list(s) for s in sequences], random.Random(0))["targets"]
    assert bool((plain != 0).all())  # a plain list: every position is a target


def test_a_longrange_cell_resumes_where_it_stopped(tmp_path):
    from bench.training.config import with_recipe
    from bench.training.train import train

    settings = {"dataset": "longrange-recall-k8", "seq_len": 16, "batch_size": 32, "threads": 1, "out": str(tmp_path)}
    first = train(with_recipe("longrange", epochs=1, **settings), progress=False, log=False)
    resumed = train(with_recipe("longrange", epochs=2, **settings), resume=True, progress=False, log=False)
    assert first["epochs_run"] == 1 and resumed["epochs_run"] == 2
    assert resumed["history"][0] == first["history"][0]  # the first epoch is kept, not re-run
    assert resumed["dataset"]["levels"]["distance"] == 8
    assert len(resumed["test"]) == 2 and resumed["protocol"]["selected_on"] == "all"
    # every test user's target and the copies before it: more positions than the 1,000 test users
    assert resumed["test_probes"]["positions"] > 1000 and 0 <= resumed["test_probes"]["ndcg@10"] <= 1


def test_fresh_training_users_are_new_every_epoch_the_same_on_a_resume_and_need_a_generated_task(tmp_path):
    from bench.training.config import with_recipe
    from bench.training.train import train

    task = LongRangeTask("mqar", 64)
    second, third = task.fresh_train(2), task.fresh_train(3)
    assert len(second) == task.train_users and all(any(s.scored) for s in second)
    assert [list(s) for s in second] == [list(s) for s in task.fresh_train(2)] and second[0] != third[0]
    assert task.generate().split.test == LongRangeTask("mqar", 64).generate().split.test  # held-out users stay

    settings = {"dataset": "longrange-recall-k8", "seq_len": 16, "batch_size": 32, "threads": 1}
    fresh = {**settings, "train_users": "fresh"}
    whole = train(with_recipe("longrange", epochs=2, **fresh, out=str(tmp_path / "a")), progress=False, log=False)
    train(with_recipe("longrange", epochs=1, **fresh, out=str(tmp_path / "b")), progress=False, log=False)
    resumed = train(
        with_recipe("longrange", epochs=2, **fresh, out=str(tmp_path / "b")), resume=True, progress=False, log=False
    )
    assert [e["loss"] for e in resumed["history"]] == [e["loss"] for e in whole["history"]]
    fixed = train(with_recipe("longrange", epochs=2, **settings, out=str(tmp_path / "c")), progress=False, log=False)
    assert fixed["history"][0]["loss"] == whole["history"][0]["loss"]  # the first epoch is the split's users
    assert fixed["history"][1]["loss"] != whole["history"][1]["loss"]
    with pytest.raises(ValueError, match="--train-users fresh needs a generated task"):
        train(with_recipe("sasrec-plus", dataset="synthetic", train_users="fresh", out=str(tmp_path / "d")))


def _line(accuracy, chance, ceiling=1.0):
    distances = [8, 64, 256, 1024, 4096][: len(accuracy)]
    return pd.DataFrame({"distance": distances, "accuracy": accuracy, "chance": chance, "ceiling": ceiling})


def test_effective_context_reads_half_the_skill_above_chance():
    assert effective_context(_line([1.0, 0.85, 0.29, 0.1], [0.5, 0.05, 0.01, 0.0])) == "256"
    assert effective_context(_line([0.9, 0.9, 0.9], [0.1, 0.1, 0.1])) == ">= 256"
    assert effective_context(_line([0.52, 0.5], [0.5, 0.05])) == "-"  # no skill at the shortest distance
    # a rebound after a fall does not count: the first distance below half ends it; the rebound is named
    assert effective_context(_line([1.0, 0.1, 0.9], [0.0, 0.0, 0.0])) == "8; again at 256"
    assert effective_context(_line([1.0, 0.9, 0.1, 0.9, 0.1], [0.0] * 5)) == "64; again at 1024"
    assert effective_context(_line([1.0, 0.1, 0.1], [0.0, 0.0, 0.0])) == "8"


def _report_row(mechanism, distance, ndcg, chance):
    return {
        "level": "train",
        "status": "ok",
        "dataset": f"longrange-recall-k{distance}",
        "dataset_stats": {"items": 2048, "levels": {"ceiling_ndcg@10": 1.0, "chance_ndcg@10": chance}},
        "attention": mechanism,
        "options": {},
        "seed": 2000,
        "test": {"all": {"ndcg@10": ndcg, "recall@10": ndcg}},
        "best_epoch": 16 if ndcg > 0.5 else 3,
        "epochs_run": 16,
        "history": [{}, {}],
        "seconds_per_epoch": 2.0,
        "device": "CPU test",
        "timestamp": f"2026-12-03T00:00:{distance % 60:02d}",
    }


def test_the_report_draws_each_task_and_tabulates_effective_context(tmp_path):
    from bench.reports.longrange import longrange_report

    rows = [
        _report_row("sdpa", 8, 1.0, 0.49),
        _report_row("sdpa", 64, 0.98, 0.04),
        _report_row("linrec", 8, 0.99, 0.49),
        _report_row("linrec", 64, 0.05, 0.04),
        {"level": "train", "status": "ok", "dataset": "ml-1m"},  # not a long-range row: left to the other reports
    ]
    written = longrange_report(rows, tmp_path)
    assert (tmp_path / "longrange_recall.png") in written
    text = (tmp_path / "longrange.md").read_text()
    assert "| 2048 | linrec | 8 |" in text and "| 2048 | sdpa | >= 64 |" in text
    assert "| linrec | 0.990* | 0.050 |" in text and "| sdpa | 1.000* | 0.980* |" in text  # *: best epoch late
    assert longrange_report(rows[-1:], tmp_path / "none") == []
    # the probes (every test position k back) shown beside the last position, and read for effective context
    probed = {**_report_row("linrec", 64, 0.05, 0.04), "test_probes": {"ndcg@10": 0.95, "positions": 9000}}
    longrange_report([*rows[:3], probed], tmp_path / "probed")
    text = (tmp_path / "probed" / "longrange.md").read_text()
    assert "| linrec | 0.990* | 0.050 (0.950) |" in text
    assert "| 2048 | linrec | 8 (>= 64 at every position k back) |" in text


def test_a_cell_stopped_at_the_maximum_is_not_marked_late(tmp_path):
    """Its best epoch is its last because validation reached 1 there and training stopped: final, not late."""
    from bench.reports.longrange import longrange_frame
    from bench.schema import STOPPED_AT_MAXIMUM

    stopped = {**_report_row("sdpa", 8, 1.0, 0.49), "best_epoch": 5, "epochs_run": 5}
    frame = longrange_frame([stopped, {**stopped, "seed": 2001, "stop_reason": STOPPED_AT_MAXIMUM}])
    assert frame.sort_values("seed")["late"].tolist() == [True, False]


def test_a_longer_budget_is_reported_beside_the_preset_not_in_its_place(tmp_path):
    from bench.reports.longrange import longrange_report
    from bench.training.presets import BUDGET_EPOCHS, preset_cells

    longer = {**_report_row("linrec", 64, 0.97, 0.04), "best_epoch": 40, "epochs_run": 64}
    longer["config"] = {"epochs": BUDGET_EPOCHS}
    longer["timestamp"] = "2026-12-03T01:00:00"  # written after the preset's row: still not its replacement
    rows = [_report_row("linrec", 8, 0.99, 0.49), _report_row("linrec", 64, 0.55, 0.04), longer]
    longrange_report(rows, tmp_path)
    text = (tmp_path / "longrange.md").read_text()
    assert "| linrec | 0.990* | 0.550* |" in text  # the preset's table keeps the 16-epoch cell
    assert "## Longer training" in text
    assert "| recall | 64 | linrec | 2000 | 0.550 (best epoch 16) | 0.970 (best epoch 40) |" in text
    # the effective context reads the preset's budget and names what the longer one changes
    assert "| 2048 | linrec | >= 64 |" in text
    slow = {**longer, "test": {"all": {"ndcg@10": 0.99, "recall@10": 0.99}}}
    longrange_report([*rows[:1], _report_row("linrec", 64, 0.1, 0.04), slow], tmp_path / "slow")
    assert "| 2048 | linrec | 8 (>= 64 trained longer) |" in (tmp_path / "slow" / "longrange.md").read_text()
    cells = preset_cells("longrange-budget")
    assert {c.settings["epochs"] for c in cells} == {BUDGET_EPOCHS}
    assert {c.dataset for c in cells} == {"longrange-recall-k64", "longrange-recall-k256"}
    assert not {c.key() for c in cells} & {c.key() for c in preset_cells("longrange")}  # their own cells


def test_an_older_cell_gets_its_probes_in_its_own_row(tmp_path):
    """scripts/longrange_probes.py: a row written without the probes gains them from the run's checkpoint, in place
    (a copy appended beside it would be the same run written twice)."""
    import importlib.util
    import json
    from pathlib import Path

    from bench.reports.longrange import longrange_frame
    from bench.results import append_row, load_rows
    from bench.schema import train_row
    from bench.training.config import with_recipe
    from bench.training.train import train

    script = Path(__file__).resolve().parents[1] / "scripts" / "longrange_probes.py"
    spec = importlib.util.spec_from_file_location("longrange_probes", script)
    longrange_probes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(longrange_probes)

    run = tmp_path / "run"
    settings = {"dataset": "longrange-recall-k8", "seq_len": 16, "batch_size": 32, "threads": 1, "out": str(run)}
    results = train(with_recipe("longrange", epochs=1, **settings), progress=False, log=False)
    (run / "config.json").write_text(json.dumps(results["config"]))  # as the accuracy sweep leaves it
    old = {k: v for k, v in train_row(results).items() if k != "test_probes"}  # as rows were before the probes
    rows_file = tmp_path / "longrange.jsonl"
    append_row(rows_file, old)
    longrange_probes.add_probes(rows_file, load_rows(rows_file), run)
    (row,) = load_rows(rows_file)
    assert {k: v for k, v in row.items() if k not in ("test_probes", "probes_added")} == json.loads(json.dumps(old))
    assert row["test_probes"] == pytest.approx(results["test_probes"])  # the same checkpoint, the same reading
    frame = longrange_frame([row])
    assert len(frame) == 1 and frame["probes"].iloc[0] == pytest.approx(results["test_probes"]["ndcg@10"])
    longrange_probes.add_probes(rows_file, load_rows(rows_file), run)  # has them now: nothing changes
    assert load_rows(rows_file) == [row]


# mqar: recall without the positional shortcut


def _hit_rates(task: LongRangeTask) -> dict[str, float]:
    """Top-1 hit rates over the test users of three oracles: the best single fixed offset back from the target,
    copying from exactly k back (the old recall's shortcut), and looking the query key up."""
    test = task.generate().split.test
    offsets = np.zeros(task.length + 1)
    k_back = lookup = 0
    for history, target in test:
        sequence = [*history, target]
        last = len(sequence) - 1
        for offset in range(1, last + 1):
            offsets[offset] += sequence[last - offset] == target
        k_back += sequence[last - task.distance] == target
        key = history[-1]
        earlier = [i for i in range(len(history) - 1) if history[i] == key]
        lookup += bool(earlier) and history[earlier[-1] + 1] == target
    return {"fixed offset": offsets.max() / len(test), "k back": k_back / len(test), "lookup": lookup / len(test)}


@pytest.mark.parametrize("distance", [64, 256])
def test_mqar_has_no_positional_shortcut_and_the_key_lookup_finds_every_target(distance):
    task = LongRangeTask("mqar", distance)
    rates = _hit_rates(task)
    assert rates["lookup"] == 1.0
    # one offset finds only the targets drawn at its one distance, 1 of the k/2 + 1 (the best of them, by luck, a
    # few standard errors more); a shortcut would find most (the old recall: all)
    spread = 1 / (distance // 2 + 1)
    bound = spread + 5 * math.sqrt(spread * (1 - spread) / task.test_users)
    assert rates["fixed offset"] <= bound and rates["k back"] <= bound


def test_the_old_recall_task_has_the_shortcut_mqar_removes():
    """The check can fail: on recall, copying from exactly k back finds every test target."""
    assert _hit_rates(LongRangeTask("recall", 64))["k back"] == 1.0


def test_mqar_keys_appear_twice_and_queries_sit_at_distances_between_half_k_and_k():
    task = LongRangeTask("mqar", 256)
    dataset = task.generate()
    for sequence in dataset.sequences[:50]:
        items = list(sequence)
        planted = [i for i, scored in enumerate(getattr(sequence, "scored", [])) if scored] or [len(items) - 1]
        for position in planted:
            key = items[position - 1]
            where = [i for i, item in enumerate(items) if item == key]
            assert len(where) == 2 and task.distance // 2 <= where[1] - where[0] <= task.distance
            assert items[where[0] + 1] == items[position]


def test_round2_chooses_each_mechanism_s_rate_at_the_shortest_distance_then_adds_its_seeds():
    from bench.training.presets import LR_GRID, ROUND2_RECIPE, _longrange_round2, chosen_learning_rates

    grid = _longrange_round2(rows=[])
    assert len(grid) == 2 * 5 * len(LR_GRID) and {c.settings["lr"] for c in grid} == set(LR_GRID)
    assert all(c.settings["train_users"] == "fresh" and c.settings["dropout"] == 0 for c in grid)
    rows = [
        {"level": "train", "status": "ok", "seed": 2000, "dataset": "longrange-mqar-k64", "attention": "sdpa",
         "options": {}, "settings": {"lr": lr, **ROUND2_RECIPE}, "valid": {"all": {"ndcg@10": score}}}
        for lr, score in zip(LR_GRID, (0.2, 0.9, 0.5), strict=True)
    ]  # fmt: skip
    assert chosen_learning_rates(rows) == {("sdpa", "mqar"): 1e-3}
    assert chosen_learning_rates(rows[:2]) == {}  # not every rate has run yet: nothing chosen
    tied = [{**row, "valid": {"all": {"ndcg@10": 1.0}}} for row in reversed(rows[1:])]  # 3e-3 read first
    assert chosen_learning_rates([rows[0], *tied]) == {("sdpa", "mqar"): 1e-3}  # a tie: the smaller rate
    fixed_users = [{**row, "settings": {"lr": row["settings"]["lr"]}} for row in rows]  # before ROUND2_RECIPE
    assert chosen_learning_rates(fixed_users) == {}
    rerun = {**rows[2], "device": "cuda", "valid": {"all": {"ndcg@10": 0.95}}}  # 3e-3 again, on a GPU: mean 0.725
    assert chosen_learning_rates(rows + [rerun]) == chosen_learning_rates([rerun] + rows) == {("sdpa", "mqar"): 1e-3}
    worse_rerun = {**rows[1], "device": "cuda", "valid": {"all": {"ndcg@10": 0.0}}}  # 1e-3 now means 0.45 < 0.5
    assert chosen_learning_rates([worse_rerun, *rows]) == {("sdpa", "mqar"): 3e-3}
    cells = _longrange_round2(rows=rows)
    added = [c for c in cells if c not in grid]
    assert len(added) == 3 * 3 + 1 - 1  # three seeds at 64, 256, 1024 and one at 4,096, less the grid's own cell
    assert all(c.attention == "sdpa" and c.settings["lr"] == 1e-3 for c in added)


def _round2_row(task, mechanism, distance, seed, lr, test, valid, epochs=48):
    row = _report_row(mechanism, distance, test, 0.01)
    from bench.training.presets import ROUND2_RECIPE

    settings = {"lr": lr, "epochs": epochs, **ROUND2_RECIPE}
    row.update(dataset=f"longrange-{task}-k{distance}", seed=seed, settings=settings)
    row.update(valid={"all": {"ndcg@10": valid}}, epochs_run=epochs, best_epoch=10, config={"epochs": epochs})
    row["timestamp"] = f"2026-12-03T00:{distance % 60:02d}:{seed % 60:02d}"
    return row


def test_round2_cells_are_read_apart_from_round1_with_the_chosen_rate_medians_and_ranges(tmp_path):
    from bench.reports.longrange import longrange_report

    grid = [_round2_row("mqar", "sdpa", 64, 2000, lr, 0.5, v) for lr, v in ((3e-4, 0.2), (1e-3, 0.9), (3e-3, 0.5))]
    seeds = [
        _round2_row("mqar", "sdpa", k, seed, 1e-3, test, 0.9)
        for k, tests in ((64, (0.9, 0.95, 0.99)), (256, (0.2, 0.6, 0.7)))
        for seed, test in zip((2000, 2001, 2002), tests, strict=True)
    ]
    round1 = [_report_row("sdpa", 8, 1.0, 0.49), _report_row("sdpa", 64, 0.98, 0.04)]
    longrange_report([*round1, *grid, *seeds], tmp_path)
    text = (tmp_path / "longrange.md").read_text()
    assert "| mqar | sdpa | 0.200 | 0.900 ← | 0.500 | 0.010 |" in text  # the grid, the kept rate marked, chance
    # the seeds of the chosen rate: median [lowest, highest] (n), and the context read from the median line
    assert "| sdpa | 0.950 [0.900, 0.990] (3) | 0.600 [0.200, 0.700] (3) | >= 256 [64; >= 256] |" in text
    assert (tmp_path / "longrange_round2_mqar_heatmap.png").exists()
    assert "| 2048 | sdpa | >= 64 |" in text  # round 1's table holds round 1's cells only
    longrange_report([*round1, *grid[:2]], tmp_path)  # two rates of three: none is chosen yet, no seed table
    text = (tmp_path / "longrange.md").read_text()
    assert "| mqar | sdpa | 0.200 | 0.900 | — |" in text and "Round 2: seeds" not in text  # no rate marked ←
    tied = [_round2_row("mqar", "sdpa", 64, 2000, lr, 0.5, v) for lr, v in ((3e-3, 1.0), (1e-3, 1.0), (3e-4, 0.2))]
    longrange_report([*round1, *tied], tmp_path)
    assert "| mqar | sdpa | 0.200 | 1.000 ← | 1.000 |" in (tmp_path / "longrange.md").read_text()  # the smaller
    first = {**grid[2], "settings": {"lr": 3e-3, "epochs": 48}}  # round 2's first recipe: read apart
    longrange_report([*round1, *grid[:2], first], tmp_path)
    text = (tmp_path / "longrange.md").read_text()
    assert "| mqar | sdpa | 0.200 | 0.900 | — |" in text and "a fixed training set (superseded)" in text


def test_the_recall_diagnosis_changes_one_thing_at_a_time_beside_round1(tmp_path):
    from bench.reports.longrange import longrange_report
    from bench.training.presets import preset_cells

    cells = preset_cells("longrange-diagnosis")
    assert {c.attention for c in cells} == {"mamba", "retention"} and all(c.settings["lr"] for c in cells)
    round1 = [_report_row("mamba", 8, 1.0, 0.49), _report_row("mamba", 64, 0.001, 0.005)]
    slower = {**_report_row("mamba", 64, 0.9, 0.005), "settings": {"lr": 1e-3}}
    wider = {**_report_row("mamba", 64, 0.2, 0.005), "settings": {"lr": 3e-3, "hidden": 128}}
    again = {**_report_row("mamba", 8, 0.95, 0.49), "settings": {"lr": 3e-3}}  # round 1's distance, today's code
    longrange_report([*round1, slower, wider, again], tmp_path)
    text = (tmp_path / "longrange.md").read_text()
    assert "## Recall at k = 64: what stops Mamba and retention (diagnosis)" in text
    assert "| k=8: as round 1 | k=8: round 1 (lr=0.003) | k=64: hidden=128 | k=64: lr=0.001 | k=64: round 1" in text
    assert "| mamba | 0.950* | 1.000* | 0.200 | 0.900* | 0.001 |" in text
    assert "| 2048 | mamba | 8 |" in text  # round 1's effective context is untouched by the diagnosis cells
