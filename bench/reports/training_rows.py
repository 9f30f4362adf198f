"""Training rows for the accuracy reports: a run's results.json as a row, and finished rows as one frame (one line
per run, metrics flattened as '<metric>:<protocol>') with its summary over seeds, and the cell formats and
files the report tables share."""

from __future__ import annotations

import math
import sys

import pandas as pd

from ..schema import attention_label, duplicate_keys

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
            "users": row["dataset_stats"].get("users"),
            "items": row["dataset_stats"].get("items"),
            "recipe": _recipe(row),
            "ratings": _ratings(row),
            "fingerprint": row["dataset_stats"].get("sequences_sha256"),  # None in rows older than the field
            "variant": variant(row.get("settings")),
            # the same mathematics whichever kernel ran (a fused one or its PyTorch reference): one mechanism, its
            # seeds pooled; the kernel is its own column (it moves s/epoch, not accuracy)
            "mechanism": attention_label(row["attention"], row.get("options") or {}),
            "backend": row.get("backend"),
            "seq_len": row["seq_len"],
            "commit": row.get("commit"),  # the code that trained it (pinned at start in newer rows)
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


def protocols_of(frame: pd.DataFrame) -> list[str]:
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
        table["device"] = grouped["device"].agg(devices_of)
    return table.reset_index()


def device_label(device: str) -> str:
    """A device name short enough for a table column: 'CPU Intel(R) Xeon(R) Processor' -> 'CPU Intel Xeon'."""
    for noise in ("(R)", "(TM)", "(tm)", " Processor", " CPU @"):
        device = device.replace(noise, "")
    return " ".join(device.split())


def devices_of(values) -> str:
    """One device, or every device of a group joined ('mixed' seeds: their s/epoch is a median across machines)."""
    return " + ".join(sorted({device_label(v) for v in values}))


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
