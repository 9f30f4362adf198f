"""Reading stored results for a report: JSON-lines files (or a training run's results.json), rows checked for the
keys and types a report reads, timing rows as one frame with the latest measurement of each cell."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from ..results import (
    ResultsFileError,
    attention_label,
    duplicate_keys,
    effective_attention_dropout,
    fallback_note,
    load_rows,
    without_repeated_runs,
)
from .training_rows import train_row

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
    "max_len",
    "batch_size",
    "seed",
    "status",
    "dataset",
    "model",
    "objective",
    "recipe",
)


# key -> what a row must hold there (when the key is present): a row that holds something else is named and left out
_COUNTS = ("seq_len", "batch_size", "dim", "heads", "max_len", "seed", "repeats")


_MEASURES = ("time_ms", "time_ms_p25", "time_ms_p75", "peak_mem_bytes", "tokens_per_s", "padding")


def _type_problem(row: dict) -> str | None:
    for key in _COUNTS:
        if key in row and (isinstance(row[key], bool) or not isinstance(row[key], int)):
            return f"key {key!r} is {row[key]!r} ({type(row[key]).__name__}), expected a whole number"
    for key in _MEASURES:
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


def _typed_rows(path: Path, rows: list[dict], warn=lambda text: print(text, file=sys.stderr)) -> list[dict]:
    """The rows whose values have the types a report reads; each other row is named (file, row, key) and left
    out, so one hand-edited or damaged row neither stops the report nor lands in the wrong cell."""
    kept = []
    for number, row in enumerate(rows, 1):
        problem = _type_problem(row)
        if problem:
            warn(f"report: warning: {path}: row {number}: {problem}; row left out")
        else:
            kept.append(row)
    return kept


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSON-lines results file, or of a training run's results.json; malformed input names the file."""
    if path.suffix == ".json" and path.is_file():
        try:
            return [train_row(json.loads(path.read_text(encoding="utf-8")))]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ResultsFileError(f"{path}: not a training run's results.json ({type(err).__name__}: {err})") from None
    rows = without_repeated_runs(_typed_rows(path, load_rows(path)), str(path))
    for number, row in enumerate(rows, 1):
        if row.get("ranks_file"):  # stored relative to its results file; a report may run from anywhere
            row["ranks_path"] = str(path.parent / row["ranks_file"])
        required = TRAIN_KEYS if row.get("level") == "train" else TIMING_KEYS
        missing = [key for key in required if key not in row]
        if missing and row.get("status", "ok") == "ok" or missing and "level" not in row:
            raise ResultsFileError(
                f"{path}: row {number} lacks {', '.join(missing)}; expected rows written by 'python -m bench sweep' "
                "or 'accuracy'"
            )
    return rows


def load_frame(paths: list[Path]) -> pd.DataFrame:
    rows = [row for path in paths for row in read_rows(Path(path)) if row.get("level") != "train"]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    # axes added later: rows written before them hold the defaults (no padding, the level's attention dropout)
    frame["padding"] = frame["padding"].fillna(0.0) if "padding" in frame else 0.0
    given = frame["attention_dropout"] if "attention_dropout" in frame else [None] * len(frame)
    frame["attention_dropout"] = [
        effective_attention_dropout(level, None if pd.isna(p) else p)
        for level, p in zip(frame["level"], given, strict=True)
    ]
    compiled = frame["compile"].fillna(False) if "compile" in frame else [False] * len(frame)
    frame["mechanism"] = [
        attention_label(row["attention"], row["options"] or {}, bool(c)) + fallback_note(row)
        for row, c in zip(frame.to_dict("records"), compiled, strict=True)
    ]
    identity = ["level", "mechanism", "causal", "seq_len", "batch_size", "dim", "heads", "mode", "dtype", "device"]
    identity += ["padding", "attention_dropout"] + (["dataset"] if "dataset" in frame else [])
    # one CPU model name covers machines of two vector capabilities, and torch builds differ: never one cell
    identity += [k for k in ("cpu_capability", "torch") if k in frame]
    frame["cell"] = frame[identity].astype(object).fillna("").astype(str).agg("|".join, axis=1)
    repeated = duplicate_keys(frame.to_dict("records"), lambda row: row["cell"])
    if repeated:
        print(
            f"report: warning: {len(repeated)} cell(s) measured more than once (the latest row is used), e.g. "
            f"{repeated[0]}",
            file=sys.stderr,
        )
    return frame.sort_values("timestamp").drop_duplicates("cell", keep="last")  # the latest measurement wins
