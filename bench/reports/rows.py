"""Reading stored results for a report: JSON-lines files (or a training run's results.json), rows checked for the
keys and types a report reads, timing rows as one frame with the latest measurement of each cell."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from ..results import ResultsFileError, load_rows
from ..schema import (
    TIMING_KEYS,
    TRAIN_KEYS,
    attention_label,
    duplicate_keys,
    effective_attention_dropout,
    fallback_note,
    train_row,
    type_problem,
    upgrade,
    without_repeated_runs,
)


def _typed_rows(path: Path, rows: list[dict], warn=lambda text: print(text, file=sys.stderr)) -> list[dict]:
    """The rows whose values have the types a report reads; each other row is named (file, row, key) and left
    out, so one hand-edited or damaged row neither stops the report nor lands in the wrong cell."""
    kept = []
    for number, row in enumerate(rows, 1):
        problem = type_problem(row)
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
    rows = without_repeated_runs(_typed_rows(path, [upgrade(row) for row in load_rows(path)]), str(path))
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
    """The timing rows of these results files as one frame (timing_frame)."""
    return timing_frame([row for path in paths for row in read_rows(Path(path)) if row.get("level") != "train"])


def timing_frame(rows: list[dict]) -> pd.DataFrame:
    """Timing rows as one frame: a `mechanism` label per row, one row per cell (its latest measurement)."""
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
