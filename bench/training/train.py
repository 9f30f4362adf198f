"""Training and evaluation of SASRec / BERT4Rec with any attention.

Leave-one-out by time; early stopping on validation NDCG@10; a checkpoint after every
epoch (model, optimiser, RNG states, history) so `--resume` continues exactly where
an interrupted run stopped; the best epoch's weights are evaluated on the test set.

Full ranking reports two protocols from one scoring pass, always:
  all            every item is ranked (RecBole's protocol for sequential models)
  seen_excluded  items already in the user's history are removed from the ranking, the
                 target excepted (SASRec+, gSASRec, LRURec)
`select_protocol` says which one early stopping reads. Sampled protocols (`uni100`,
`pop100`) are opt-in and labelled; they always exclude the history.

Named recipes (`RECIPES`, `--recipe`) bundle published training settings; every setting
of a recipe can still be overridden one by one, which is how the ablation is run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from models import EncoderConfig, recommender_class
from models.attention import AttentionLayer, attention_class

from ..data import SequenceDataset, leave_one_out, load_dataset
from ..data.longrange import is_longrange, longrange_dataset
from ..data.synthetic import synthetic_dataset
from ..environment import check_device, environment
from ..measure import LoadMonitor, peak_memory
from ..results import folder_owner
from ..schema import STOPPED_AT_MAXIMUM
from . import distributed
from .checkpoint import load_checkpoint, save_epoch, start_state
from .config import TrainConfig, run_header
from .evaluate import TEST_RANKS_FILE, evaluate, evaluate_probes, write_test_ranks


def get_dataset(config: TrainConfig) -> SequenceDataset:
    if config.dataset == "synthetic":
        return synthetic_dataset(config.synthetic_users, config.synthetic_items, seed=config.seed)
    if is_longrange(config.dataset):
        return longrange_dataset(config.dataset)
    return load_dataset(config.dataset, config.data_dir, min_count=config.min_count, fmt=config.data_format)


def build_model(config: TrainConfig, num_items: int):
    encoder = EncoderConfig(
        num_items=num_items,
        seq_len=config.seq_len,
        hidden=config.hidden,
        heads=config.heads,
        layers=config.layers,
        inner=config.inner,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        attention=config.attention,
        attention_options=dict(config.attention_options),
        norm=config.norm,
        activation=config.activation,
        embedding_scale=config.embedding_scale,
        embedding_norm=config.embedding_norm,
        feed_forward_dropout=config.feed_forward_dropout,
        layer_norm_eps=config.layer_norm_eps,
        attention_init=config.attention_init,
        positions=config.positions,
    )
    recommender = recommender_class(config.model)
    return recommender(encoder, **{name: getattr(config, name) for name in recommender.train_options})


# ------------------------------------------------------------------ evaluation


# ------------------------------------------------------------------ training


def _batches(examples: list[list[int]], config: TrainConfig, rng: random.Random) -> list[list[list[int]]]:
    """The epoch's batches. by_length: shuffled examples are sorted by length within pools of 50
    batches, cut into batches and the batches shuffled (less padding, still random)."""
    size = config.batch_size
    if config.batching == "random":
        return [examples[start : start + size] for start in range(0, len(examples), size)]
    batches, pool = [], size * 50
    for start in range(0, len(examples), pool):
        ordered = sorted(examples[start : start + pool], key=len)
        batches += [ordered[i : i + size] for i in range(0, len(ordered), size)]
    rng.shuffle(batches)
    return batches


def _train_epoch(
    model,
    trainer,
    optimizer,
    examples,
    rng,
    config: TrainConfig,
    label: str,
    progress: bool,
    device: str,
    replicas: distributed.Replicas,
) -> tuple[list[float], float]:
    """One pass over the shuffled examples; returns the batch losses and the seconds it took.

    trainer is the model itself or its DistributedDataParallel wrapper: the loss goes through it."""
    model.train()
    started, losses = time.time(), []
    batches = _batches(examples, config, rng)
    bar = tqdm(batches, desc=label, disable=not progress or not replicas.writer, leave=False, dynamic_ncols=True)
    for sequences in bar:
        batch = model.make_batch(sequences, rng, device)  # the global batch, identical on every rank
        share, weight = distributed.share(batch, replicas)
        loss = trainer(share, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if replicas.world > 1:  # the weighted shares add up to world x the global batch's mean loss
        losses = [total / replicas.world for total in distributed.all_reduce(losses, replicas)]
    return losses, time.time() - started


def _train_users(config: TrainConfig, dataset: SequenceDataset, split, epoch: int) -> list:
    """The epoch's training sequences: the split's, or with `train_users = "fresh"` a generated task's new draw
    (the first epoch keeps the split's, so a fixed and a fresh run start alike)."""
    if config.train_users == "fixed" or epoch == 1:
        return split.train
    return dataset.fresh_train(epoch)


def _check_trainable(model, split, dataset: SequenceDataset) -> None:
    """Refuse, with the counts, data on which nothing can be trained or evaluated."""
    trainable = sum(len(s) >= model.min_train_length() for s in split.train)
    evaluable = len(split.valid)
    if trainable == 0 or evaluable == 0:
        raise ValueError(
            f"{dataset.name}: {dataset.num_users} user(s), {trainable} with enough items to train "
            f"(>= {model.min_train_length()} after holding out 2), {evaluable} with the 3+ items needed for validation "
            "and test; need at least one of each"
        )


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: bool = True,
    dataset: SequenceDataset | None = None,
) -> dict:
    """Train to early stopping (or the epoch / time budget), then test the best epoch. Returns the results dict.

    resume: continue OUT/checkpoint.pt (a fresh start, said so, when there is none); overwrite: replace a
    finished or interrupted run in OUT (refused otherwise). progress: a per-step progress bar; log: one line
    per epoch (loss, time, valid metrics). Under torchrun, one data-parallel replica (bench.training.distributed).
    """
    check_device(config.device)
    replicas, device = distributed.setup(config.device)
    try:
        # one writer per run folder: a second training given the same --out is refused with the holder's pid
        owner = folder_owner(config.out, "a training", "--out") if replicas.writer else contextlib.nullcontext()
        with owner:
            return _train(
                config,
                replicas,
                device,
                resume=resume,
                overwrite=overwrite,
                progress=progress,
                log=log,
                dataset=dataset,
            )
    finally:
        distributed.teardown(replicas)


def _open_folder(config, replicas, *, resume: bool, overwrite: bool) -> Path:
    """The run folder, refused when it holds another run that is neither resumed nor overwritten."""
    out = Path(config.out)
    earlier = [name for name in ("checkpoint.pt", "best.pt", "results.json") if (out / name).exists()]
    if earlier and not resume and not overwrite:
        raise ValueError(
            f"--out {out} already holds a run ({', '.join(earlier)}): --resume continues it, --overwrite replaces it, "
            "or choose another --out"
        )
    distributed.barrier(replicas)  # every rank has looked before rank 0 clears anything
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif replicas.launched:
        torch.set_num_threads(distributed.default_threads(replicas))
    return out


def _stop_reason(config, state: dict) -> str | None:
    if state["bad_epochs"] >= config.patience:
        return "early stopping"
    if state["best_valid"] >= 1.0:  # NDCG@10's maximum: only a strictly better epoch is kept, so none ever would be
        return STOPPED_AT_MAXIMUM
    if config.max_minutes is not None and state["train_seconds"] / 60 >= config.max_minutes:
        return "time budget"
    return None


def _epoch_record(epoch, losses, epoch_seconds, load, valid, state, peak_bytes, peak, config) -> dict:
    return {
        "epoch": epoch,
        "loss": sum(losses) / len(losses),
        "epoch_seconds": epoch_seconds,
        "other_load_cores": round(load.other_cores(), 2),
        "valid_ndcg@10": valid[config.select_protocol]["ndcg@10"],
        "valid": {name: {m: metrics[m] for m in ("ndcg@10", "recall@10", "mrr@10")} for name, metrics in valid.items()},
        "elapsed_train_seconds": state["train_seconds"],
        "peak_mem_bytes": int(peak_bytes) if peak["bytes"] is not None else None,
        "mem_method": peak["method"],
    }


def _log_epoch(record: dict, valid: dict, improved: bool) -> None:
    shown = "  ".join(f"{name} NDCG@10 {m['ndcg@10']:.4f} R@10 {m['recall@10']:.4f}" for name, m in valid.items())
    print(
        f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  {record['epoch_seconds']:6.1f} s  valid "
        f"{shown}{'  *' if improved else ''}",
        flush=True,
    )


def _train(config, replicas, device, *, resume, overwrite, progress, log, dataset) -> dict:
    log = log and replicas.writer
    out = _open_folder(config, replicas, resume=resume, overwrite=overwrite)
    best_path = out / "best.pt"
    dataset = dataset or get_dataset(config)
    split = leave_one_out(dataset)
    if config.train_users == "fresh" and dataset.fresh_train is None:
        raise ValueError(f"--train-users fresh needs a generated task (longrange-*), got dataset {dataset.name!r}")
    popularity = torch.bincount(torch.tensor([i for s in split.train for i in s]) - 1, minlength=dataset.num_items)

    torch.manual_seed(config.seed)
    model = build_model(config, dataset.num_items).to(device)
    _check_trainable(model, split, dataset)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if replicas.world > 1:  # replicas start equal (same seed; DDP also broadcasts) but draw different dropout masks
        torch.manual_seed(config.seed * 1000 + replicas.rank)
    state = start_state(config, model, optimizer, replicas, out, resume=resume, log=log)
    trainer = model
    if replicas.launched:
        trainer = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.startswith("cuda") else None
        )

    evaluate_on = functools.partial(
        evaluate, model, num_items=dataset.num_items, config=config, item_popularity=popularity, device=device,
        replicas=replicas,
    )  # fmt: skip

    causal = any(layer.causal for layer in model.modules() if isinstance(layer, AttentionLayer))
    options = {**config.attention_options, "causal": causal}
    backend = attention_class(config.attention).backend_for(options, device)
    if log:  # one line saying what is about to train, before the first (long) epoch
        print(run_header(config, dataset, device, backend, torch.get_num_threads()), flush=True)
    started = time.time()
    stop_reason = "epochs"
    job = distributed.job_process(replicas)  # whose CPU use is this run's own, not load
    while state["epoch"] < config.epochs:
        stop_reason = _stop_reason(config, state) or stop_reason
        if stop_reason != "epochs":
            break
        epoch = state["epoch"] + 1
        rng = random.Random(config.seed * 1000 + epoch)  # batches depend on (seed, epoch) only: resumable
        examples = model.epoch_examples(_train_users(config, dataset, split, epoch))
        rng.shuffle(examples)
        load = LoadMonitor(job)  # other processes' CPU use during the epoch: a loaded epoch is a slow one
        with peak_memory(device) as peak:  # per epoch, so a resumed run still reports the whole run's peak
            losses, epoch_seconds = _train_epoch(
                model, trainer, optimizer, examples, rng, config, f"epoch {epoch}", progress, device, replicas
            )
            valid = evaluate_on(split.valid, seed=config.seed)
        # the slowest replica's time and the largest one's memory: what the run costs
        epoch_seconds, peak_bytes = distributed.all_reduce([epoch_seconds, peak["bytes"] or 0], replicas, op="max")
        state["train_seconds"] += epoch_seconds
        record = _epoch_record(epoch, losses, epoch_seconds, load, valid, state, peak_bytes, peak, config)
        state["history"].append(record)
        improved = record["valid_ndcg@10"] > state["best_valid"]
        if improved:
            state.update(best_valid=record["valid_ndcg@10"], best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        save_epoch(out, model, optimizer, state, config, replicas, improved)
        if log:
            _log_epoch(record, valid, improved)

    model.load_state_dict(load_checkpoint(best_path)["model"])
    valid = evaluate_on(split.valid, seed=config.seed)
    test_ranks: dict[str, list[int]] = {}
    test = evaluate_on(split.test, seed=config.seed + 1, ranks_out=test_ranks)
    probes = evaluate_probes(model, dataset.probes, device) if dataset.probes else None
    stop_reason = stop_reason if state["epoch"] < config.epochs else "epochs"
    results = _results(config, model, dataset, state, test, valid, probes, stop_reason, backend, device, replicas)
    results["wall_seconds_this_call"] = time.time() - started
    if replicas.writer:
        write_test_ranks(out / TEST_RANKS_FILE, dataset, split, test_ranks)
        tmp = out / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(out / "results.json")  # atomic: a reader never sees half a file
    distributed.barrier(replicas)
    return results


def _results(config, model, dataset, state, test, valid, probes, stop_reason, backend, device, replicas) -> dict:
    """What a finished run reports (results.json): metrics, cost, protocol, config and the code that trained it."""
    epochs = state["history"]
    loads = [e["other_load_cores"] for e in epochs if e.get("other_load_cores") is not None]
    results = {
        "test": test,
        **({"test_probes": probes} if probes else {}),  # long-range: every test position at distance k, every item
        "valid": valid,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "stop_reason": stop_reason,
        # median: an epoch slowed by a paused process or a burst of load on a shared machine does not move it
        "seconds_per_epoch": statistics.median(e["epoch_seconds"] for e in epochs) if epochs else None,
        "train_seconds": state["train_seconds"],
        # cores other processes used meanwhile (median over epochs; None for runs older than the field): times
        # taken under load are not comparable with quiet ones
        "other_load_cores": statistics.median(loads) if loads else None,
        # the batches ran as groups of similar length: faster per epoch than whole batches, the same loss
        "split_batches": model.split_batches,
        "peak_mem_bytes": max(
            (e.get("peak_mem_bytes") or 0 for e in epochs), default=None
        ),  # over all epochs, resumed ones included
        "mem_method": epochs[-1].get("mem_method") if epochs else None,
        "history": epochs,
        "world_size": replicas.world,
        "parameters_digest": distributed.check_replicas(model, replicas),
        "protocol": {
            "split": "leave-one-out by time",
            "ranking": config.protocol,
            "reported": list(test),
            "selected_on": config.select_protocol,
            "ties": "pessimistic",
            "test_input": "the whole history before the test item, validation item included",
            "note": "full ranking: 'all' ranks every item, 'seen_excluded' drops the history's items (target kept)"
            if config.protocol == "full"
            else "SAMPLED: 100 negatives, not comparable with full ranking",
        },
        "config": asdict(config),
        "dataset": dataset.stats(),
        "parameters": sum(p.numel() for p in model.parameters()),
        # the kernel that ran, where there is a choice ("auto" falls back to PyTorch when a fused one is missing)
        "backend": backend,
        **environment(device),
        # the code that trained it, as read when the run (first) started; resumes on other code listed after it
        **state["code_versions"][0],
        "code_versions": state["code_versions"],
    }
    return results
