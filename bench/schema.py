"""What a result row is: the one vocabulary of the suite's rows, written by timing and training, read by reports.

Two kinds of rows, one JSON object per line (bench/results.py stores them):

- a **timing row** (`level` "layer" or "model"): one cell of a sweep, a mechanism at one sequence length and batch
  size, with its time and peak memory;
- a **training row** (`level` "train"): one trained run, its config, test and validation metrics and learning curve.

One name per quantity, everywhere (rows, code, tables, plots):

    seq_len      N, the sequence length a layer or model runs at (the items a recommender reads)
    batch_size   B, sequences per step
    dim, heads   model width and attention heads (training rows: config.hidden / config.heads)
    time_ms      median wall time of one step; peak_mem_bytes its peak memory
    attention    the mechanism's registered name; options its non-default options; label both, for people

NOTE: rows written before the suite settled on `seq_len` call a training run's N `max_len`; `upgrade` renames it on
reading, so every committed row reads the same. A layer's own `max_len` option (Linformer's projection size, the
longest sequence it accepts) is a capacity, not N, and keeps its name.
"""

from __future__ import annotations

import json
import math
import sys

# names rows used before: old name -> the name it is now
LEGACY_NAMES = {"max_len": "seq_len"}


def upgrade(record: dict) -> dict:
    """A row or run config with today's names (a copy; its nested `config` too)."""
    record = {LEGACY_NAMES.get(key, key): value for key, value in record.items()}
    if isinstance(record.get("config"), dict):
        record["config"] = {LEGACY_NAMES.get(key, key): value for key, value in record["config"].items()}
    return record


TIMING_KEYS = (
    "level",
    "attention",
    "options",
    "causal",
    "seq_len",
    "batch_size",
    "dim",
    "heads",
    "mode",
    "dtype",
    "device",
    "status",
    "time_ms",
    "peak_mem_bytes",
    "timestamp",
)


TRAIN_KEYS = (
    "level",
    "attention",
    "seq_len",
    "batch_size",
    "seed",
    "status",
    "dataset",
    "model",
    "objective",
    "recipe",
)


# what a row must hold under these keys (when present): a report names a row that holds something else and leaves it out
COUNT_KEYS = ("seq_len", "batch_size", "dim", "heads", "seed", "repeats")


MEASURE_KEYS = ("time_ms", "time_ms_p25", "time_ms_p75", "peak_mem_bytes", "tokens_per_s", "padding")


def type_problem(row: dict) -> str | None:
    for key in COUNT_KEYS:
        if key in row and (isinstance(row[key], bool) or not isinstance(row[key], int)):
            return f"key {key!r} is {row[key]!r} ({type(row[key]).__name__}), expected a whole number"
    for key in MEASURE_KEYS:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"key {key!r} is {value!r} ({type(value).__name__}), expected a number"
        if not math.isfinite(value):
            return f"key {key!r} is {value}, expected a finite number"
    if "causal" in row and not isinstance(row["causal"], bool):
        return f"key 'causal' is {row['causal']!r}, expected true or false"
    return None


# what a timing row holds before (or without) a measurement: a cell that was not run still has every key
EMPTY_MEASUREMENT = {
    "message": "",
    "time_ms": None,
    "time_ms_p25": None,
    "time_ms_p75": None,
    "repeats": 0,
    "peak_mem_bytes": None,
    "mem_method": None,
    "tokens_per_s": None,
    "first_call_ms": None,
}


def timing_row(cell: dict, measured: dict, environment: dict, seed: int, config: dict) -> dict:
    """A sweep cell's row: the cell (its device kind as device_type: `device` names the machine), what was
    measured (status, times, memory; EMPTY_MEASUREMENT where nothing was), where and by what code."""
    fields = dict(cell)
    fields["device_type"] = fields.pop("device")
    return {**fields, **EMPTY_MEASUREMENT, **measured, **environment, "seed": seed, "config": config}


MODEL_DROPOUT = 0.2  # model cells: RecBole's dropout (embeddings, residual branches, attention unless set)


def effective_attention_dropout(level: str, attention_dropout: float | None) -> float:
    """What a cell's attention dropout is: model cells default to MODEL_DROPOUT everywhere, layers to none."""
    if attention_dropout is not None:
        return attention_dropout
    return MODEL_DROPOUT if level == "model" else 0.0


def attention_label(name: str, options: dict, compiled: bool = False) -> str:
    """'linrec', 'linrec[variant=official]', 'sdpa (compiled)': a mechanism with its non-default options."""
    label = name if not options else name + "[" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "]"
    return label + " (compiled)" if compiled else label


def fallback_note(row: dict) -> str:
    """' (PyTorch path)' for a LinRec, LRU or Mamba row that asked for the default path on a CPU but ran the PyTorch
    one (the C++ kernel could not be built there, or did not exist yet): its times are not the fused kernel's. ''
    otherwise, and for rows older than the backend field. The released formula (variant=official) and the blockwise
    backward (recompute_heads) have no fused kernel: their PyTorch path is the default one, not a fallback."""
    options = row.get("options") or {}
    fused_exists = options.get("variant", "paper") == "paper" and not options.get("recompute_heads")
    asked_default = options.get("backend", "auto") == "auto" and not options.get("compile") and fused_exists
    on_cpu = str(row.get("device_type") or row.get("device") or "cpu").lower().startswith("cpu")
    # LinRec's walk and the LRU's and Mamba's scans have a fused C++ path on a CPU (rows before the scans had one
    # ran their PyTorch paths, and say so too)
    ran_torch = row.get("attention") in ("linrec", "lru", "mamba") and row.get("backend") == "torch"
    return " (PyTorch path)" if asked_default and on_cpu and ran_torch else ""


def parse_attention_spec(spec: str) -> tuple[str, dict]:
    """'performer:nb_features=64:redraw_interval=0' -> ('performer', {...}); values are JSON when they parse."""
    name, *pairs = spec.split(":")
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"{spec!r}: option {pair!r} must be key=value")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


# a training's stop_reason when validation NDCG@10 reached 1: its best epoch is its last, and final (not "late")
STOPPED_AT_MAXIMUM = "validation at its maximum"

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
    results = upgrade(results)
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
        "seq_len": config["seq_len"],
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


def run_identity(row: dict) -> str | None:
    """What makes a finished training row one run: its cell, when it finished and how long it trained. The same run
    written twice (a driver and a merge, say) has the same identity; None for rows that are not finished runs."""
    if row.get("level") != "train" or row.get("status") != "ok":
        return None
    row = upgrade(row)
    cell = {k: row.get(k) for k in ("dataset", "attention", "options", "seq_len", "batch_size", "seed", "recipe")}
    cell.update(model=row.get("model"), objective=row.get("objective"), settings=row.get("settings"))
    return json.dumps([cell, row.get("timestamp"), row.get("train_seconds")], sort_keys=True, default=str)


def without_repeated_runs(rows: list[dict], where: str, warn=lambda text: print(text, file=sys.stderr)) -> list[dict]:
    """The rows with each training run once: a run written twice is kept once, with a warning naming it."""
    seen, kept = set(), []
    for row in rows:
        identity = run_identity(row)
        if identity is not None and identity in seen:
            warn(
                f"warning: {where}: the run {row.get('label') or row.get('attention')} seed {row.get('seed')} on "
                f"{row.get('dataset')} is written twice; counted once"
            )
            continue
        seen.add(identity)
        kept.append(row)
    return kept


def duplicate_keys(rows: list[dict], key) -> list[str]:
    """The keys (key(row)) that occur more than once, in order of first repeat."""
    seen, repeated = set(), []
    for row in rows:
        value = key(row)
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated
