"""Sweeps beyond one machine without a scheduler of our own: deterministic shards and a merge.

    # a SLURM array of N tasks (--array=0-3), each measuring its share into its own resumable file
    python -m bench sweep --preset paper --out results/sweeps/paper.jsonl \
        --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
    # -> results/sweeps/paper.shard-0-of-4.jsonl ... ; then one file, one row per cell:
    python -m bench merge results/sweeps/paper.jsonl results/sweeps/paper.shard-*-of-4.jsonl

Shards split the sorted list of series (a series is one cell across sequence lengths) round
robin, so every N-curve — and the sweep's OOM / time-budget skip-ahead — stays on one host;
`--shard-by family` keeps whole comparison families (every mechanism of a shape) together
instead, so speed-ups compare cells timed on one host, interleaved.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path

from ..results import load_rows, results_writer

SHARD_BY = ("series", "family")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' with 0 <= I < N (SLURM: --array=0-(N-1), then $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N (a SLURM array over 0-{max(count - 1, 0)})")
    return index, count


def _key_of(cell, shard_by: str) -> str:
    fields = asdict(cell)
    fields.pop("seq_len")
    if shard_by == "family":  # every mechanism of a shape, eager and compiled
        for name in ("attention", "options", "compile"):
            fields.pop(name)
    return json.dumps(fields, sort_keys=True)


def shard_cells(cells: list, index: int, count: int, shard_by: str = "series") -> list:
    """The cells of shard `index` of `count`: series (or families) sorted, then dealt round robin."""
    if shard_by not in SHARD_BY:
        raise ValueError(f"--shard-by must be one of {SHARD_BY}, got {shard_by!r}")
    keys = sorted({_key_of(c, shard_by) for c in cells})
    mine = {key for position, key in enumerate(keys) if position % count == index}
    return [c for c in cells if _key_of(c, shard_by) in mine]


def shard_path(out: Path, index: int, count: int) -> Path:
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.shard-{index}-of-{count}.jsonl")


def row_key(row: dict) -> str:
    """The identity of a row's cell: what resume compares (timing cells and training cells)."""
    if row.get("level") == "train":
        from ..training.accuracy import TrainCell

        return "train|" + TrainCell.of_row(row).key()
    from .cells import Cell

    return Cell.of_row(row).key()


_SHARD_NAME = re.compile(r"^(?P<stem>.*)\.shard-(?P<index>\d+)-of-(?P<count>\d+)\.jsonl$")


def missing_shards(sources: list[Path]) -> list[str]:
    """A warning per sharded sweep whose shards are not all among the sources (a partial grid otherwise)."""
    present: dict[tuple[str, int], set[int]] = {}
    for source in sources:
        match = _SHARD_NAME.match(Path(source).name)
        if match:
            key = (str(Path(source).parent / match["stem"]), int(match["count"]))
            present.setdefault(key, set()).add(int(match["index"]))
    lines = []
    for (stem, count), indices in sorted(present.items()):
        missing = sorted(set(range(count)) - indices)
        if missing:
            lines.append(
                f"merge: warning: {Path(stem).name} has {count} shards; missing "
                + ", ".join(f"{Path(stem).name}.shard-{i}-of-{count}.jsonl" for i in missing)
                + ": the merged grid is partial (merge again when they are done)"
            )
    return lines


def merge(out: Path, sources: list[Path], warn=lambda text: print(text, file=sys.stderr)) -> int:
    """Write one row per cell of the sources into `out` (the latest timestamp wins); returns the row count.

    Warns when one comparison group mixes commits, torch versions or devices (its ratios then
    compare unlike things)."""
    with results_writer(out):  # a sweep writing `out` holds this lock: merging under it would drop its rows
        return _merge(out, sources, warn)


def _merge(out: Path, sources: list[Path], warn) -> int:
    for line in missing_shards(sources):
        warn(line)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    latest: dict[str, dict] = {}
    for source in sources:
        for row in load_rows(source):
            key = row_key(row)
            if str(row.get("timestamp", "")) > now:
                warn(f"merge: warning: {source} has a row stamped in the future ({row['timestamp']}): {key}")
            if key not in latest or str(row.get("timestamp", "")) >= str(latest[key].get("timestamp", "")):
                if key in latest and latest[key].get("status") == "ok" and row.get("status") != "ok":
                    warn(f"merge: warning: a later {row.get('status')!r} row replaces an 'ok' row: {key}")
                latest[key] = row
    groups: dict[str, list[dict]] = {}
    for row in latest.values():
        if row.get("level") != "train":
            group = {
                k: row.get(k) for k in ("level", "causal", "seq_len", "batch_size", "dim", "heads", "mode", "dtype")
            }
            groups.setdefault(json.dumps(group, sort_keys=True), []).append(row)
    for group, rows in groups.items():
        for field in ("commit", "torch", "device", "host"):
            values = {str(r.get(field)) for r in rows}
            if len(values) > 1:
                warn(f"merge: warning: one comparison group mixes {field}s {sorted(values)}: {group}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    ordered = sorted(latest.values(), key=lambda r: str(r.get("timestamp", "")))
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered))
    os.replace(tmp, out)
    return len(ordered)
