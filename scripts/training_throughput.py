"""Seconds per training epoch before and after the throughput changes, side by side, same settings.

    python scripts/training_throughput.py --dataset ml-1m --attention sdpa,linrec --threads 1,2 \
        --out results/training-throughput/ml-1m

"before": random batches, every batch padded to N, cross-entropy through autograd on the
          materialised (targets x items) logits (how the suite trained until then);
"after":  length-bucketed batches cut to their longest sequence, evaluation sorted by
          length and cut the same way (both exact: positions count from the right, padded
          keys are masked), and the chunked item loss of models/item_loss.py (same values
          and gradients). Everything else is the SASRec+ recipe at N = 200, batch 128.
Configurations run interleaved (before, after, before, after, ...) so drifting load hits
both alike; each epoch is also split into its parts (batch making, encoder forward, item
scoring + cross-entropy, backward, optimiser step) with the evaluation of the validation
users timed apart. Run it on a quiet machine (pause background training: kill -STOP PID).

With the port recipe's random batches, one long history pads the whole batch to N; "split" runs each
batch as groups of similar length instead (models/recommender.py, the same loss and gradients):

    python scripts/training_throughput.py --recipe sasrec-plus-port --variants unsplit,split \
        --attention sdpa,linrec --threads 1 --seq-len 200,800 --out results/training-throughput/ml-1m-split

BERT4Rec (bidirectional; its batches are cut and split the same way, masks drawn at full width first):

    python scripts/training_throughput.py --model bert4rec --recipe recbole --variants unsplit,split \
        --attention sdpa,linrec --threads 1 --rounds 2 --out results/training-throughput/ml-1m-split-bert4rec

Every mechanism at its default (best) CPU path, one epoch each, with its peak memory: the cost axis of the
accuracy-against-cost figure (python -m bench report --committed):

    python scripts/training_throughput.py --recipe sasrec-plus-port --variants split --threads 1 \
        --attention sdpa,linrec,linrec:variant=official,linear,efficient,performer:nb_features=64,retention,lru,mamba \
        --out results/training-throughput/ml-1m-mechanisms

The same script compares attention paths at the current recipe (issue 10: a LinRec epoch against `sdpa`):

    python scripts/training_throughput.py --recipe sasrec-plus-port --variants after \
        --attention sdpa,linrec,linrec:backend=torch --attention-dropout recipe,0 --threads 1,2 \
        --out results/training-throughput/ml-1m-fused
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.cli import resolve_attention
from bench.data import leave_one_out
from bench.environment import environment
from bench.measure import peak_memory
from bench.training.config import with_recipe
from bench.training.evaluate import evaluate
from bench.training.train import _batches, build_model, get_dataset
from models.attention import attention_class

VARIANTS = {
    "before": {"batching": "random", "trim": False, "chunked_loss": False, "split": False},
    "after": {"batching": "by_length", "trim": True, "chunked_loss": True, "split": False},
    "unsplit": {"batching": "random", "trim": True, "chunked_loss": True, "split": False},
    "split": {"batching": "random", "trim": True, "chunked_loss": True, "split": True},
}


def one_epoch(config, dataset, split, trim: bool, chunked_loss: bool, split_batches: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(config, dataset.num_items)
    model.trim_batches, model.split_batches = trim, split_batches
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = random.Random(seed)
    examples = model.epoch_examples(split.train)
    rng.shuffle(examples)
    # a split batch interleaves encoder passes and one loss, and BERT4Rec's loss reads its masks: their forward
    # is timed as a whole
    whole_forward = split_batches or config.model != "sasrec"
    forward = ("forward",) if whole_forward else ("encoder", "scores+ce")
    parts = dict.fromkeys(("batch", *forward, "backward", "step"), 0.0)
    model.train()
    started = time.perf_counter()
    with peak_memory("cpu") as peak:  # the epoch's peak resident memory above where it started
        _epoch(model, optimizer, examples, config, rng, parts, whole_forward, chunked_loss)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    valid = evaluate(model, split.valid, dataset.num_items, config)
    return {
        "train_s": train_seconds,
        "eval_s": time.perf_counter() - started,
        "parts_s": parts,
        "peak_mem_bytes": peak["bytes"],
        "backend": attention_class(config.attention).backend_for(config.attention_options, "cpu"),
        "valid_ndcg@10_all": valid["all"]["ndcg@10"],
    }


def _epoch(model, optimizer, examples, config, rng, parts, whole_forward, chunked_loss) -> None:
    for sequences in _batches(examples, config, rng):
        t0 = time.perf_counter()
        batch = model.make_batch(sequences, rng)
        t1 = time.perf_counter()
        if whole_forward:
            loss = model.training_loss(batch)
            t2 = t3 = time.perf_counter()
        else:
            states = model.encoder(batch["items"])  # (B, n, hidden)
            t2 = time.perf_counter()
            real = batch["targets"] != 0
            if chunked_loss:
                loss = model.encoder.item_loss(states[real], batch["targets"][real])
            else:
                loss = F.cross_entropy(model.encoder.item_scores(states[real]), batch["targets"][real] - 1)
            t3 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        spans = ((t0, t1), (t1, t3)) if whole_forward else ((t0, t1), (t1, t2), (t2, t3))
        for name, (a, b) in zip(parts, (*spans, (t3, t4), (t4, t5)), strict=True):
            parts[name] += b - a


def warm_up(config, dataset, split) -> None:
    """One untimed training step: a first call may build code once per machine (the fused LinRec's C++ extension
    compiles on first use), which would otherwise land in the first configuration's epoch."""
    model = build_model(config, dataset.num_items)
    examples = model.epoch_examples(split.train)[:8]
    model.training_loss(model.make_batch(examples, random.Random(0))).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--attention", default="sdpa,linrec")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seq-len", default="200", help="comma list of N")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (one epoch per configuration each)")
    parser.add_argument("--out", default="results/training-throughput/ml-1m")
    parser.add_argument("--recipe", default="sasrec-plus")
    parser.add_argument("--model", default="sasrec", choices=("sasrec", "bert4rec"))
    parser.add_argument("--variants", default="before,after", help=f"among {','.join(VARIANTS)}")
    parser.add_argument(
        "--attention-dropout", default="recipe", help="comma list: 'recipe' (the recipe's own) and/or rates"
    )
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    if args.model != "sasrec" and "before" in variants:  # its loss is the model's own (chunked) item loss
        parser.error(f"--variants before: SASRec only (--model {args.model} has no un-chunked loss to time)")
    lengths = args.seq_len.split(",")
    dropouts = [None if d == "recipe" else float(d) for d in args.attention_dropout.split(",")]
    dataset = get_dataset(with_recipe(args.recipe, dataset=args.dataset))
    split = leave_one_out(dataset)
    for attention in args.attention.split(","):
        name_, options = resolve_attention(attention)
        warm_up(
            with_recipe(
                args.recipe, dataset=args.dataset, model=args.model, attention=name_, attention_options=options
            ),
            dataset,
            split,
        )
    rows = []
    for round_ in range(args.rounds):  # every configuration once per round, so drifting load hits all alike
        for threads, seq_len in itertools.product(map(int, args.threads.split(",")), map(int, lengths)):
            torch.set_num_threads(threads)
            for attention in args.attention.split(","):
                name_, options = resolve_attention(attention)
                for dropout in dropouts:
                    for name, variant in variants.items():
                        settings = {"attention_dropout": dropout} if dropout is not None else {}
                        run_config = with_recipe(
                            args.recipe,
                            dataset=args.dataset,
                            model=args.model,
                            attention=name_,
                            attention_options=options,
                            batching=variant["batching"],
                            seq_len=seq_len,
                            **settings,
                        )
                        trim, chunked, split_batches = variant["trim"], variant["chunked_loss"], variant["split"]
                        result = one_epoch(run_config, dataset, split, trim, chunked, split_batches, seed=round_)
                        effective_dropout = (
                            run_config.dropout if run_config.attention_dropout is None else run_config.attention_dropout
                        )
                        rows.append(
                            {
                                "attention": attention,
                                "attention_dropout": effective_dropout,
                                "threads": threads,
                                "seq_len": seq_len,
                                "variant": name,
                                "round": round_,
                                **result,
                            }
                        )
                        print(
                            f"{attention:20s} att.dropout {effective_dropout} {threads} thread(s) N={seq_len} "
                            f"{name:7s} train {result['train_s']:6.1f} s  eval {result['eval_s']:5.1f} s  "
                            + "  ".join(f"{k} {v:.1f}" for k, v in result["parts_s"].items())
                            + f"  valid NDCG@10 {result['valid_ndcg@10_all']:.4f}",
                            flush=True,
                        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": dataset.stats(),
        "recipe": args.recipe,
        "model": args.model,
        "seq_len": [int(n) for n in lengths],
        "batch_size": with_recipe(args.recipe).batch_size,
        "variants": variants,
        **environment("cpu"),
    }
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    if len(variants) != 2:
        _attention_table(rows, out)
        return
    old, new = variants
    lines = [
        f"| attention | threads | N | {old}: train + eval s/epoch | {new}: train + eval s/epoch | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for attention, threads, seq_len in dict.fromkeys((r["attention"], r["threads"], r["seq_len"]) for r in rows):
        total = {}
        for name in variants:
            key = (attention, threads, seq_len, name)
            runs = [r for r in rows if (r["attention"], r["threads"], r["seq_len"], r["variant"]) == key]
            total[name] = statistics.median(r["train_s"] + r["eval_s"] for r in runs)
        lines.append(
            f"| {attention} | {threads} | {seq_len} | {total[old]:.1f} | {total[new]:.1f} | "
            f"{total[old] / total[new]:.2f}x |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _attention_table(rows: list[dict], out: Path) -> None:
    """Seconds per epoch (train + evaluation, median over rounds) per attention path, and the ratio to sdpa."""
    keys = sorted({(r["threads"], r["attention_dropout"], r["variant"]) for r in rows})
    lines = [
        "| threads | attention dropout | attention | train s | eval s | s/epoch | sdpa / this |",
        "|---|---|---|---|---|---|---|",
    ]
    for threads, dropout, variant in keys:
        same = [r for r in rows if (r["threads"], r["attention_dropout"], r["variant"]) == (threads, dropout, variant)]
        totals = {}
        for attention in dict.fromkeys(r["attention"] for r in same):
            runs = [r for r in same if r["attention"] == attention]
            totals[attention] = (
                statistics.median(r["train_s"] for r in runs),
                statistics.median(r["eval_s"] for r in runs),
            )
        base = sum(totals["sdpa"]) if "sdpa" in totals else None
        for attention, (train_s, eval_s) in totals.items():
            ratio = f"{base / (train_s + eval_s):.2f}x" if base else "-"
            lines.append(
                f"| {threads} | {dropout} | {attention} | {train_s:.1f} | {eval_s:.1f} | "
                f"{train_s + eval_s:.1f} | {ratio} |"
            )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
