"""Reports from stored rows, one entry: `report(paths, out)` reads the rows once and hands them to its siblings,

    timing.py      speed and memory curves and tables (timing rows)
    accuracy.py    accuracy tables with seed-aware verdicts, learning curves, accuracy by history length (training
                   rows; long-range rows go on to longrange.py)
    committed.py   every committed report, results/README.md, the main job's reference
    site.py        the static results site (results/site/) over the committed reports
    readme.py      the README's generated results block

which share style.py (one palette, one table writer) and rows.py (reading and checking rows)."""

from __future__ import annotations

from pathlib import Path


def report(paths: list[Path], out: Path) -> list[Path]:
    """Every plot and table for the given results files into `out`; returns the files written."""
    from ..results import ResultsFileError
    from .accuracy import accuracy_report
    from .rows import read_rows, timing_frame
    from .timing import timing_report

    rows = [row for path in paths for row in read_rows(Path(path))]
    if not rows:
        raise ResultsFileError(f"no result rows in {', '.join(map(str, paths))} (empty or blank lines only)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = accuracy_report([row for row in rows if row.get("level") == "train"], out)
    frame = timing_frame([row for row in rows if row.get("level") != "train"])
    return written + (timing_report(frame, out) if not frame.empty else [])
