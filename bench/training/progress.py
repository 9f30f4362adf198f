"""Where an accuracy sweep stands: read from its results file and work folder, nothing trained or written.

A preset of the training level can take days of CPU time and is stopped and resumed many times, so
`python -m bench accuracy --status` says, cell by cell, what is finished (its test reading), what is part-way
(epoch, best epoch and its validation NDCG@10, seconds per epoch, and how many epochs early stopping and the
budget still allow) and what waits, and whether a driver is training in the work folder now.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from ..results import ResultsFileBusy, folder_owner, load_rows, result_parts
from .accuracy import TrainCell, check_done_in, selected_test

RECENT_EPOCHS = 5  # seconds per epoch: the median of the last few, so one slow (loaded) epoch does not rule it


@dataclass(frozen=True)
class CellProgress:
    cell: TrainCell
    state: str  # finished | oom | unsupported | part-way | waiting
    detail: str  # one line: the test reading, the training's position, or the last failure


def _final_rows(out: Path, done_in=()) -> dict[str, dict]:
    """The latest row of each cell in the results file (and its parts), then the finished ones of `done_in` where
    `out` has none; a missing `out` has none."""
    rows: dict[str, dict] = {}
    for path in [*check_done_in(done_in), out]:  # the sweep's own file last: its rows win
        for part in result_parts(path):
            for row in load_rows(part):
                finished_elsewhere = path != out and row.get("status") in ("ok", "oom", "unsupported")
                if row.get("level") == "train" and (path == out or finished_elsewhere):
                    rows[TrainCell.of_row(row).key()] = {**row, "read_from": str(path)}
    return rows


def _test_reading(row: dict) -> str:
    protocol, test = selected_test(row)
    if not test:
        return row.get("message", "")
    reading = f"test NDCG@10 {test['ndcg@10']:.4f} R@10 {test['recall@10']:.4f} ({protocol})"
    return f"{reading}, best epoch {row.get('best_epoch')}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _training_position(cell: TrainCell, checkpoint: Path) -> str:
    """Epoch, best so far and what is left, from the checkpoint the cell resumes from. The budget is the cell's
    (what the driver will resume with), not the one saved in the checkpoint."""
    from .checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)["state"]
    config = cell.train_config(checkpoint.parent)
    epoch, history = state["epoch"], state["history"]
    line = f"epoch {epoch}/{config.epochs}, best {state['best_epoch']} (valid {state['best_valid']:.4f})"
    if not history:
        return line
    per_epoch = statistics.median(record["epoch_seconds"] for record in history[-RECENT_EPOCHS:])
    most = max(0, config.epochs - epoch)
    fewest = max(0, min(most, config.patience - state["bad_epochs"]))  # no improvement from here on
    line += f", {per_epoch:.0f} s/epoch"
    if fewest == 0:
        return line + "; ends when resumed (it is tested then)"
    if fewest == most:
        return line + f"; {most} epoch(s) left ({_duration(most * per_epoch)})"
    return line + (
        f"; {fewest} to {most} epochs left ({_duration(fewest * per_epoch)} to {_duration(most * per_epoch)})"
    )


def cell_progress(cells: list[TrainCell], out: Path, work_dir: Path, done_in=()) -> list[CellProgress]:
    rows = _final_rows(Path(out), done_in)
    progress = []
    for cell in cells:
        row = rows.get(cell.key())
        status = row.get("status") if row else None
        checkpoint = Path(work_dir) / cell.slug() / "checkpoint.pt"
        if status in ("ok", "oom", "unsupported"):
            state = "finished" if status == "ok" else status
            detail = _test_reading(row) if status == "ok" else row["message"]
            elsewhere = f" (in {row['read_from']})" if row["read_from"] != str(out) else ""
            progress.append(CellProgress(cell, state, detail + elsewhere))
        elif checkpoint.exists():  # a 'partial' snapshot row does not finish a cell
            try:
                position = _training_position(cell, checkpoint)
            except ValueError as err:  # one unreadable checkpoint does not hide the other cells
                position = str(err)
            progress.append(CellProgress(cell, "part-way", position))
        else:
            last = f"last try: {status}: {row['message']}" if row else ""
            progress.append(CellProgress(cell, "waiting", last))
    return progress


def driver_holding(work_dir: Path) -> str | None:
    """The driver training in `work_dir` now ('pid 1234'), or None; probing takes the folder's lock for an instant."""
    if not Path(work_dir).is_dir():
        return None
    try:
        with folder_owner(work_dir, "a status reading", "--work-dir"):
            return None
    except ResultsFileBusy as busy:
        return busy.holder


def format_progress(progress: list[CellProgress], out: Path, work_dir: Path) -> str:
    width, digits = max((len(p.cell.slug()) for p in progress), default=0), len(str(len(progress)))
    lines = [
        f"[{number:>{digits}}/{len(progress)}] {p.cell.slug():<{width}}  {p.state:<9} {p.detail}".rstrip()
        for number, p in enumerate(progress, 1)
    ]
    counts = {state: sum(p.state == state for p in progress) for state in dict.fromkeys(p.state for p in progress)}
    holder = driver_holding(work_dir)
    lines.append(
        ", ".join(f"{n} {state}" for state, n in counts.items())
        + f"; rows in {out}, checkpoints in {work_dir}"
        + (f"; a driver is training there now ({holder})" if holder else "; no driver is training there now")
    )
    return "\n".join(lines)
