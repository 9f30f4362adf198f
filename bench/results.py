"""Results are JSON lines: one object per finished cell, appended and flushed at once."""

from __future__ import annotations

import json
import os
from pathlib import Path


def attention_label(name: str, options: dict) -> str:
    """'linrec' or 'linrec[variant=official]': a mechanism with its non-default options."""
    if not options:
        return name
    return name + "[" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "]"


def append_row(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_rows(path: Path) -> list[dict]:
    """All rows of a results file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist")
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                break  # interrupted while writing the last row: it will be re-run
            raise ValueError(f"{path}:{number}: not a JSON object ({err.msg})") from None
    return rows
