"""Training rows for the accuracy reports: a run's results.json as a row, and finished rows as one frame (one line
per run, metrics flattened as '<metric>:<protocol>') with its summary over seeds, and the cell formats and
files the report tables share."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from ..results import attention_label, duplicate_keys

BASELINE = "sdpa"
SUBJECT = "linrec"  # the suite's subject: other mechanisms are tested against it as well as against the baseline
PROTOCOL_NAMES = {"seen_excluded": "seen items excluded", "all": "all items ranked"}


BUDGET_KEYS = {
    "epochs",
    "patience",
    "max_minutes",
    "synthetic_users",
    "synthetic_items",
    "hidden",
    "heads",
    "split_batches",  # how a batch is computed, not what (the same loss)
}  # not a variant of the recipe: the budget, the width, the computation


ORDER_BLIND_LENGTHS = ("min", "p25", "p50", "p75", "p90", "p99", "max")


RUN_FIELDS = (
    "test",
    "valid",
    "best_epoch",
    "epochs_run",
    "stop_reason",
    "seconds_per_epoch",
    "other_load_cores",
    "split_batches",
    "train_seconds",
    "peak_mem_bytes",
    "mem_method",
    "history",
    "protocol",
    "parameters",
    "backend",
)


def _compact(value):
    """Floats to 6 significant digits, recursively: a learning curve of 100 epochs x two protocols stays a few
    KB per row (results files stay under CI's 1 MB limit), far below any difference the reports show."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {key: _compact(item) for key, item in value.items()}
    return value


def compact_history(history: list[dict] | None) -> list[dict] | None:
    """The per-epoch records of a run, compact; the memory method is the row's, not repeated per epoch."""
    if history is None:
        return None
    return [{key: _compact(item) for key, item in epoch.items() if key != "mem_method"} for epoch in history]


def train_row(results: dict) -> dict:
    """A training run's results.json as a row of the sweep's training level."""
    config = results["config"]
    test, valid = results["test"], results["valid"]
    if "ndcg@10" in test:  # written before both protocols were reported: one protocol, named by its flag
        name = (
            "seen_excluded"
            if config.get("exclude_history")
            else ("all" if config.get("protocol", "full") == "full" else config["protocol"])
        )
        test, valid = {name: test}, {name: valid}
    row = {
        "level": "train",
        "dataset": config["dataset"],
        "model": config["model"],
        "objective": config["objective"],
        "attention": config["attention"],
        "options": config["attention_options"],
        "max_len": config["max_len"],
        "batch_size": config["batch_size"],
        "seed": config["seed"],
        "recipe": config.get("recipe") or "recbole",
        "settings": {},
        "label": attention_label(config["attention"], config["attention_options"]),
        "status": "ok",
        "message": "",
        **{k: results.get(k) for k in RUN_FIELDS},
        "test": test,
        **({"test_probes": results["test_probes"]} if results.get("test_probes") else {}),  # long-range tasks
        "valid": valid,
        "history": compact_history(results.get("history")),
        "dataset_stats": results["dataset"],
        "config": config,
        "run_commit": results.get("commit"),
    }
    row.update({k: results.get(k) for k in ("torch", "threads", "host", "device", "timestamp", "commit")})
    row.update({k: results[k] for k in ("diff_sha256", "code_versions") if k in results})
    return row


def _recipe(row: dict) -> str:
    config = row["config"]
    objective = row["objective"].replace("_", "-") if row["model"] == "sasrec" else "cloze"
    return f"{row['model']}-{objective}_{row['recipe']}_d{config['hidden']}h{config['heads']}"


def _setting(row: dict) -> str:
    return f"{row['dataset']}-{row['dataset_stats']['items']}items_{_recipe(row)}"


# statistics that tell two datasets' ratings apart but not their order
_ORDER_BLIND_STATS = ("users", "items", "interactions", "k_core") + tuple(f"length_{q}" for q in ORDER_BLIND_LENGTHS)


def _ratings(row: dict) -> str:
    """Same value for two datasets holding the same ratings (up to order), trained with the same recipe."""
    stats = row["dataset_stats"]
    return ",".join(f"{k}={stats.get(k)}" for k in _ORDER_BLIND_STATS) + f"_{_recipe(row)}"


def _split_batches(row: dict) -> bool:
    """Whether the run's batches were split by length; rows older than the field fall back on the setting
    (None before it existed: whole batches)."""
    if row.get("split_batches") is not None:
        return bool(row["split_batches"])
    return bool(row["config"].get("split_batches", False))


def variant(settings: dict) -> str:
    """The recipe changes a cell makes ('' = the recipe as named); budget and width are not changes."""
    return ",".join(f"{k}={v}" for k, v in sorted((settings or {}).items()) if k not in BUDGET_KEYS)


def train_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per finished run, metrics flattened as '<metric>:<protocol>'."""
    records = []
    for row in rows:
        if row.get("level") != "train" or row.get("status") not in ("ok", "partial"):
            continue
        record = {
            "partial": row.get("status") == "partial",
            "setting": _setting(row),
            "dataset": row["dataset"],
            "recipe": _recipe(row),
            "ratings": _ratings(row),
            "fingerprint": row["dataset_stats"].get("sequences_sha256"),  # None in rows older than the field
            "variant": variant(row.get("settings")),
            # the same mathematics whichever kernel ran (a fused one or its PyTorch reference): one mechanism, its
            # seeds pooled; the kernel is its own column (it moves s/epoch, not accuracy)
            "mechanism": attention_label(row["attention"], row.get("options") or {}),
            "backend": row.get("backend"),
            "seq_len": row["max_len"],
            "batch_size": row["batch_size"],
            "seed": row["seed"],
            "best_epoch": row["best_epoch"],
            "epochs_run": row["epochs_run"],
            "s_per_epoch": row["seconds_per_epoch"],
            "other_load": row.get("other_load_cores"),  # None in rows older than the field
            "split": _split_batches(row),
            # median epoch x epochs: an epoch stretched by a paused process or a burst of load does not count
            "train_minutes": (row["seconds_per_epoch"] or 0) * (row["epochs_run"] or 0) / 60,
            "device": row["device"],
            "history": row["history"],
            "selected_on": (row.get("protocol") or {}).get("selected_on", next(iter(row["test"]))),
            "timestamp": row.get("timestamp", ""),
            "ranks_path": row.get("ranks_path"),  # per-user test ranks (rows since the standard ML-1M file)
        }
        for protocol, metrics in row["test"].items():
            for metric in ("ndcg@10", "recall@10", "mrr@10"):
                record[f"{metric}:{protocol}"] = metrics[metric]
        for protocol, metrics in (row.get("valid") or {}).items():  # at the best epoch: selected on, so optimistic
            record[f"valid_ndcg@10:{protocol}"] = metrics.get("ndcg@10")
        records.append(record)
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    key = ["setting", "variant", "mechanism", "seq_len", "batch_size", "seed"]
    repeated = duplicate_keys(frame.to_dict("records"), lambda row: tuple(row[k] for k in key))
    if repeated:
        print(
            f"report: warning: {len(repeated)} training cell(s) appear more than once (the latest row is used), e.g. "
            f"{repeated[0]}",
            file=sys.stderr,
        )
    return (
        frame.sort_values("timestamp").drop_duplicates(key, keep="last").reset_index(drop=True)
    )  # the latest run wins


def _protocols(frame: pd.DataFrame) -> list[str]:
    present = {c.split(":", 1)[1] for c in frame.columns if c.startswith("ndcg@10:")}
    return [
        p for p in ("seen_excluded", "all", "uni100", "pop100") if p in present and frame[f"ndcg@10:{p}"].notna().any()
    ]


def summary(frame: pd.DataFrame, by=("mechanism", "seq_len", "batch_size")) -> pd.DataFrame:
    """Mean, std and count over seeds per (mechanism, N, batch)."""
    metrics = [c for c in frame.columns if ":" in c]
    grouped = frame.groupby(list(by))
    table = grouped[metrics].agg(["mean", "std"])
    table.columns = [f"{m}|{stat}" for m, stat in table.columns]
    table["seeds"] = grouped.size()
    table["partial"] = grouped["partial"].any() if "partial" in frame else False
    table["best_epoch"] = grouped["best_epoch"].mean()
    table["s_per_epoch"] = grouped["s_per_epoch"].median()
    table["other_load"] = grouped["other_load"].max() if "other_load" in frame else float("nan")
    if "split" in frame:
        table["batches"] = grouped["split"].agg(
            lambda split: "split" if split.all() else "mixed" if split.any() else "whole"
        )
    table["train_minutes"] = grouped["train_minutes"].mean()
    if "device" in frame:
        table["device"] = grouped["device"].agg(_devices)
    return table.reset_index()


def device_label(device: str) -> str:
    """A device name short enough for a table column: 'CPU Intel(R) Xeon(R) Processor' -> 'CPU Intel Xeon'."""
    for noise in ("(R)", "(TM)", "(tm)", " Processor", " CPU @"):
        device = device.replace(noise, "")
    return " ".join(device.split())


def _devices(values) -> str:
    """One device, or every device of a group joined ('mixed' seeds: their s/epoch is a median across machines)."""
    return " + ".join(sorted({device_label(v) for v in values}))


def pipe_table(table: pd.DataFrame) -> str:
    """A markdown pipe table of a frame's columns (pandas' to_markdown would pull in `tabulate`)."""
    header = "| " + " | ".join(map(str, table.columns)) + " |\n|" + "---|" * len(table.columns) + "\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))


def several_devices(table: pd.DataFrame) -> bool:
    """Whether a summary's rows come from more than one device: its tables then name each row's (seconds per
    epoch compare only within one device)."""
    return "device" in table and table["device"].nunique() > 1


def mean_pm(mean: float, std: float, seeds: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.4f} ± {std:.4f}" if seeds > 1 and not math.isnan(std) else f"{mean:.4f}"


def short_protocol(protocol: str) -> str:
    """A protocol's name in a table header."""
    return "seen excl." if protocol == "seen_excluded" else protocol


def write_md_csv(stem: Path, shown: pd.DataFrame, text: list[str]) -> list[Path]:
    """The table as CSV and the page (heading, explanation, table, sections) as Markdown."""
    shown.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text("\n".join(text), encoding="utf-8")
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")]
