import itertools
import json
import math
import random

import pytest
import torch
from model_inputs import tiny_config

from bench.data import leave_one_out
from bench.data.synthetic import synthetic_dataset
from bench.schema import STOPPED_AT_MAXIMUM
from bench.training.config import TrainConfig
from bench.training.evaluate import evaluate
from bench.training.metrics import rank_metrics
from bench.training.train import train
from models import BERT4Rec, SASRec
from models.recommender import similar_length_groups


def test_all_positions_refuses_a_non_causal_attention():
    with pytest.raises(ValueError, match="'linformer' has no causal form"):
        SASRec(tiny_config(attention="linformer", attention_options={"k": 4}))
    with pytest.raises(ValueError, match="needs causal attention"):
        SASRec(tiny_config(attention="linrec"), objective="all_positions", causal=False)
    SASRec(tiny_config(attention="linformer", attention_options={"k": 4}), objective="last_position")  # fine


@pytest.mark.parametrize("attention", ["sdpa", "linrec", "performer", "efficient"])
def test_sasrec_all_positions_does_not_leak_the_future(attention):
    """Scores at position t must not change when later items change."""
    torch.manual_seed(0)
    model = SASRec(tiny_config(attention=attention)).eval()
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    changed = items.clone()
    changed[0, 8:] = torch.tensor([20, 21, 22, 23])
    with torch.no_grad():
        a, b = model.encoder(items), model.encoder(changed)
    assert torch.allclose(a[0, :8], b[0, :8], atol=1e-5)


def test_bert4rec_masks_and_appends_mask_at_inference():
    model = BERT4Rec(tiny_config(attention="linrec"), mask_ratio=0.3)
    batch = model.make_batch([[1, 2, 3, 4, 5, 6], [7, 8]], random.Random(0))
    masked = batch["items"] == model.mask_token
    assert masked.any(dim=1).all()  # at least one per sequence
    assert (batch["targets"][masked] > 0).all() and (batch["targets"][~masked] == 0).all()
    assert model.score_next([[1, 2, 3]]).shape == (1, 30)


@pytest.mark.parametrize("norm", ["post", "sasrec"])
@pytest.mark.parametrize("attention", ["sdpa", "linrec"])
def test_scores_ignore_batch_mates_and_padding_length(attention, norm):
    """A history scores the same alone or next to a longer one (more padding in its row)."""
    torch.manual_seed(0)
    model = SASRec(tiny_config(attention=attention, norm=norm)).eval()
    with torch.no_grad():
        alone = model.score_next([[4, 5, 6]])
        batched = model.score_next([[4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def _tiny(tmp_path, **kw):
    values = {
        "dataset": "synthetic",
        "synthetic_users": 300,
        "synthetic_items": 60,
        "seq_len": 20,
        "hidden": 32,
        "heads": 2,
        "layers": 1,
        "inner": 64,
        "dropout": 0.1,
        "epochs": 6,
        "batch_size": 64,
        "lr": 3e-3,
        "seed": 5,
        "out": str(tmp_path / "run"),
        "eval_batch_size": 128,
    }
    values.update(kw)
    return TrainConfig(**values)


@pytest.mark.parametrize(
    "kw",
    [
        {"model": "sasrec", "attention": "linrec"},
        {"model": "sasrec", "objective": "last_position", "attention": "linformer", "attention_options": {"k": 8}},
        {"model": "bert4rec", "attention": "linrec", "epochs": 20, "lr": 5e-3},
    ],
    ids=["sasrec-all", "sasrec-last", "bert4rec"],
)
def test_training_beats_popularity(tmp_path, kw):
    config = _tiny(tmp_path, **kw)
    results = train(config, progress=False)
    ds = synthetic_dataset(300, 60, seed=5)
    split = leave_one_out(ds)
    popularity = torch.bincount(torch.tensor([i for s in split.train for i in s]) - 1, minlength=60).float()
    pop = rank_metrics(popularity.expand(len(split.test), -1), torch.tensor([t - 1 for _, t in split.test]))
    assert results["test"]["all"]["ndcg@10"] > pop["ndcg@10"] * 1.5, (results["test"]["all"]["ndcg@10"], pop["ndcg@10"])
    stored = json.loads((tmp_path / "run" / "results.json").read_text())
    for field in (
        "test",
        "valid",
        "best_epoch",
        "seconds_per_epoch",
        "peak_mem_bytes",
        "config",
        "dataset",
        "commit",
        "torch",
        "device",
        "history",
    ):
        assert field in stored


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    full = train(_tiny(tmp_path / "a", epochs=3, attention="linrec"), progress=False)
    train(_tiny(tmp_path / "b", epochs=2, attention="linrec"), progress=False)  # "interrupted" after 2 epochs
    resumed = train(_tiny(tmp_path / "b", epochs=3, attention="linrec"), resume=True, progress=False)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert resumed["test"] == full["test"]


def test_training_stops_once_validation_is_at_its_maximum(tmp_path, monkeypatch):
    """A later epoch is kept only when strictly better, so at NDCG@10 = 1 the selected model and its test reading
    are final: the long-range tasks often get there long before their budget ends."""
    import bench.training.train as training

    def validation_perfect(*args, ranks_out=None, **kwargs):
        metrics = evaluate(*args, ranks_out=ranks_out, **kwargs)
        if ranks_out is None:  # validation (the test passes ranks_out)
            for protocol in metrics.values():
                protocol["ndcg@10"] = 1.0
        return metrics

    monkeypatch.setattr(training, "evaluate", validation_perfect)
    results = train(_tiny(tmp_path / "run", epochs=4), progress=False)
    assert results["epochs_run"] == 1 and results["best_epoch"] == 1
    assert results["stop_reason"] == STOPPED_AT_MAXIMUM


def test_resume_refuses_a_different_configuration(tmp_path):
    train(_tiny(tmp_path, epochs=1), progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        train(_tiny(tmp_path, epochs=2, hidden=16), resume=True, progress=False)


def test_resume_accepts_a_checkpoint_older_than_a_new_setting_at_its_default(tmp_path):
    train(_tiny(tmp_path, epochs=1), progress=False)
    checkpoint_path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    del checkpoint["config"]["masks_per_user"]  # as written before the setting existed
    torch.save(checkpoint, checkpoint_path)
    assert train(_tiny(tmp_path, epochs=2), resume=True, progress=False)["epochs_run"] == 2
    with pytest.raises(ValueError, match="different configuration"):
        train(_tiny(tmp_path, epochs=3, masks_per_user=2), resume=True, progress=False)


def test_bert4rec_sees_each_user_masks_per_user_times_an_epoch():
    from bench.training.train import build_model

    sequences = [[1, 2, 3], [4, 5]]
    config = TrainConfig(dataset="synthetic", model="bert4rec", masks_per_user=3, attention="sdpa", seq_len=12)
    model = build_model(config, num_items=30)
    assert sorted(map(tuple, model.epoch_examples(sequences))) == sorted(map(tuple, sequences * 3))


def test_recommenders_are_built_by_name_and_leave_the_given_config_alone():
    from models import available_recommenders

    assert available_recommenders() == ["bert4rec", "sasrec"]
    config = tiny_config(attention="sdpa")
    BERT4Rec(config)
    assert config.extra_tokens == 0  # BERT4Rec's [MASK] token lives in its own copy
    with pytest.raises(ValueError, match="unknown recommender 'gru4rec'"):
        TrainConfig(dataset="synthetic", model="gru4rec")
    with pytest.raises(ValueError, match="--masks-per-user must be >= 1"):
        TrainConfig(dataset="synthetic", model="bert4rec", masks_per_user=0)


def test_sampled_protocols_are_labelled_and_full_ranking_is_harder(tmp_path):
    sampled = train(_tiny(tmp_path / "s", epochs=2, protocol="pop100", synthetic_items=300), progress=False)
    assert "SAMPLED" in sampled["protocol"]["note"] and list(sampled["test"]) == ["pop100"]
    full = train(_tiny(tmp_path / "f", epochs=2, protocol="full", synthetic_items=300), progress=False)
    assert (
        full["test"]["seen_excluded"]["ndcg@10"] < sampled["test"]["pop100"]["ndcg@10"]
    )  # same model, 101 candidates vs 300
    with pytest.raises(ValueError, match="fewer than 100 items"):
        train(_tiny(tmp_path / "x", epochs=1, protocol="uni100"), progress=False)


class _FixedScores(torch.nn.Module):
    """A stand-in model: item i (column i - 1) scores 10 - i, so item 1 ranks first."""

    def score_next(self, histories, device=None):
        return (10.0 - torch.arange(1, 10, dtype=torch.float32)).expand(len(histories), -1).clone()


def test_both_protocols_from_one_pass_exclusion_drops_seen_items_but_never_the_target():
    examples = [([1, 2, 3], 3), ([1, 5], 6)]  # target 3 repeats an item of its own history
    ranked = evaluate(_FixedScores(), examples, 9, TrainConfig(dataset="synthetic"), ks=(1, 5))
    assert set(ranked) == {"all", "seen_excluded"}
    # all items: item 3 ranks 3rd, item 6 ranks 6th; seen excluded: 1, 2 (and 5) drop out -> ranks 1 and 4
    assert ranked["all"]["mrr@5"] == pytest.approx((1 / 3 + 0) / 2)
    assert ranked["all"]["recall@1"] == 0
    assert ranked["seen_excluded"]["recall@1"] == pytest.approx(0.5)
    assert ranked["seen_excluded"]["mrr@5"] == pytest.approx((1 + 1 / 4) / 2)


def test_exclude_seen_leaves_the_input_scores_alone():
    from bench.training.metrics import exclude_seen

    scores = torch.arange(6, dtype=torch.float32).expand(2, -1).clone()
    excluded = exclude_seen(
        scores, [[1, 6], [2, 2, 3]], torch.tensor([5, 2])
    )  # user 0's target item 6 is also in its history
    assert torch.equal(scores, torch.arange(6, dtype=torch.float32).expand(2, -1))
    assert excluded[0].tolist() == [-math.inf, 1, 2, 3, 4, 5]
    assert excluded[1].tolist() == [0, -math.inf, 2, 3, 4, 5]


def test_select_protocol_is_checked_and_recorded(tmp_path):
    with pytest.raises(ValueError, match="--select-protocol must be one of"):
        TrainConfig(dataset="synthetic", select_protocol="pop100")
    assert TrainConfig(dataset="synthetic", protocol="uni100").select_protocol == "uni100"
    results = train(_tiny(tmp_path, epochs=2, select_protocol="seen_excluded"), progress=False)
    assert results["protocol"]["selected_on"] == "seen_excluded"
    history = results["history"]
    assert [h["valid_ndcg@10"] for h in history] == [h["valid"]["seen_excluded"]["ndcg@10"] for h in history]


def test_test_input_includes_the_validation_item():
    from bench.data import SequenceDataset

    split = leave_one_out(SequenceDataset("toy", [[1, 2, 3, 4, 5]], 5))
    assert split.valid == [([1, 2, 3], 4)]
    assert split.test == [([1, 2, 3, 4], 5)]


def test_history_windows_make_every_item_a_target_once():
    from models.sasrec import history_windows

    sequence = list(range(1, 12))  # 11 items, 10 targets
    windows = history_windows(sequence, 4)
    assert windows == [[7, 8, 9, 10, 11], [3, 4, 5, 6, 7], [1, 2, 3]]
    targets = [t for w in windows for t in w[1:]]
    assert sorted(targets) == sequence[1:]


def test_recipes_set_defaults_and_flags_override_them():
    from bench.training.config import with_recipe

    config = with_recipe("sasrec-plus", dataset="synthetic", dropout=0.3)
    assert (config.norm, config.embedding_scale, config.dropout, config.recipe) == ("pre", True, 0.3, "sasrec-plus")
    with pytest.raises(ValueError, match="--recipe: unknown recipe .nope.; expected one of recbole"):
        with_recipe("nope", dataset="synthetic")


def test_by_length_batches_cover_every_example_once_with_little_padding():
    from bench.training.train import _batches

    examples = [[1] * n for n in random.Random(0).choices(range(2, 200), k=1000)]
    config = TrainConfig(dataset="synthetic", batch_size=32, batching="by_length")
    batches = _batches(examples, config, random.Random(0))
    assert sorted(map(len, (e for b in batches for e in b))) == sorted(map(len, examples))
    padded = sum(len(b) * max(map(len, b)) for b in batches)
    assert padded < 1.1 * sum(map(len, examples))


def test_trimmed_batches_give_the_same_loss_as_full_width():
    """Cutting a batch to its longest sequence is exact (positions count from the right)."""
    torch.manual_seed(0)
    model = SASRec(tiny_config(attention="linrec")).eval()
    sequences = [[1, 2, 3, 4], [5, 6, 7]]
    trimmed = model.make_batch(sequences, random.Random(0))
    assert trimmed["items"].shape == (2, 3)
    model.trim_batches = model.split_batches = False
    full = model.make_batch(sequences, random.Random(0))
    assert full["items"].shape == (2, 12)
    with torch.no_grad():
        assert torch.allclose(model.training_loss(trimmed), model.training_loss(full), atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "linrec"])
def test_bert4rec_batches_and_scores_cut_to_the_longest_sequence_are_exact(attention):
    """Masks are drawn at full width, so the cut batch holds the same masks; padded keys are masked."""
    torch.manual_seed(0)
    model = BERT4Rec(tiny_config(attention=attention)).eval()
    sequences = [[1, 2, 3, 4], [5, 6, 7], [8, 9]]
    cut = model.make_batch(sequences, random.Random(0))
    assert cut["items"].shape == (3, 4)
    model.trim_batches = model.split_batches = False
    full = model.make_batch(sequences, random.Random(0))
    assert full["items"].shape == (3, 12) and torch.equal(full["targets"][:, -4:], cut["targets"])
    with torch.no_grad():
        assert torch.allclose(model.training_loss(cut), model.training_loss(full), atol=1e-6)
        whole = model.score_next(sequences)
        model.trim_batches = True
        assert torch.allclose(model.score_next(sequences), whole, atol=1e-5)


def test_similar_length_groups_is_the_cheapest_contiguous_split():
    """Checked against every way of cutting the sorted lengths into contiguous groups."""

    def cost(groups, lengths, overhead):
        return sum((end - start) * lengths[end - 1] + overhead for start, end in groups)

    rng = random.Random(0)
    for _ in range(30):
        lengths = sorted(rng.randint(1, 60) for _ in range(rng.randint(1, 8)))
        overhead = rng.choice([0, 5, 40, 1000])
        groups = similar_length_groups(lengths, overhead)
        assert [start for start, _ in groups] == [0] + [end for _, end in groups[:-1]]
        assert groups[-1][1] == len(lengths)
        cheapest = min(
            cost(list(zip((0, *cuts), (*cuts, len(lengths)), strict=True)), lengths, overhead)
            for k in range(len(lengths))
            for cuts in itertools.combinations(range(1, len(lengths)), k)
        )
        assert cost(groups, lengths, overhead) == cheapest
    assert similar_length_groups([3, 3, 50, 50], overhead=0) == [(0, 2), (2, 4)]
    assert similar_length_groups([3, 3, 50, 50], overhead=1000) == [(0, 4)]


@pytest.mark.parametrize(
    ("attention", "objective"),
    [("sdpa", "all_positions"), ("linrec", "all_positions"), ("sdpa", "last_position"), ("linrec", "cloze")],
)
def test_split_batches_give_the_padded_batch_loss_and_gradients(attention, objective):
    """A batch run as groups of similar length is the same loss, with the same gradients, as one padded batch."""
    torch.manual_seed(0)
    config = tiny_config(attention=attention, seq_len=20)
    model = BERT4Rec(config) if objective == "cloze" else SASRec(config, objective=objective)
    model.eval()  # no dropout
    model.split_overhead = 3  # small: several groups, some of them mixing lengths
    rng = random.Random(1)
    sequences = [[rng.randint(1, 30) for _ in range(rng.randint(2, 21))] for _ in range(9)]
    batch = model.make_batch(sequences, random.Random(2))
    lengths = sorted((batch["items"] != 0).sum(1).tolist())
    groups = similar_length_groups(lengths, model.split_overhead)
    assert len(groups) > 2 and any(lengths[start] < lengths[end - 1] for start, end in groups)

    def loss_and_gradients(split: bool):
        model.split_batches = split
        model.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    padded_loss, padded_gradients = loss_and_gradients(False)
    split_loss, split_gradients = loss_and_gradients(True)
    assert torch.allclose(split_loss, padded_loss, atol=1e-6)
    assert len(split_gradients) == len(padded_gradients)
    for split, padded in zip(split_gradients, padded_gradients, strict=True):
        assert torch.allclose(split, padded, atol=1e-6)


def test_batches_stay_whole_for_a_mechanism_whose_training_pass_changes_it():
    """Performer counts training passes to redraw its features: one step must stay one pass."""
    assert SASRec(tiny_config(attention="linrec")).split_batches
    assert not SASRec(tiny_config(attention="linrec"), split_batches=False).split_batches
    performer = SASRec(tiny_config(attention="performer"))
    assert not performer.split_batches
    layers = [m for m in performer.modules() if hasattr(m, "calls_since_redraw")]
    performer.train()
    performer.split_overhead = 0  # would split this batch in two, were splitting allowed
    batch = performer.make_batch([[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12]], random.Random(0))
    performer.training_loss(batch)
    assert layers and all(layer.calls_since_redraw == 1 for layer in layers)


def test_training_results_become_accuracy_rows_in_the_report(tmp_path):
    from bench.reports import report

    train(_tiny(tmp_path, epochs=1), progress=False)
    written = report([tmp_path / "run" / "results.json"], tmp_path / "report")
    names = {p.name for p in written}
    setting = "synthetic-60items_sasrec-all-positions_recbole_d32h2"
    assert {
        f"accuracy_{setting}.md",
        f"learning_curves_{setting}.png",
        f"pareto_{setting}_seen_excluded.png",
        f"pareto_{setting}_all.png",
    } <= names
    table = (tmp_path / "report" / f"accuracy_{setting}.md").read_text()
    assert "NDCG@10 (seen excl.)" in table and "NDCG@10 (all)" in table
