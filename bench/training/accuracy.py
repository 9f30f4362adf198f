"""The sweep's training level: each cell is a whole training run, each row its accuracy.

A cell names a dataset, a recommender and objective, an attention with its options, the
sequence length N, the batch size, a seed and a training recipe (bench.training.train.RECIPES) with
an optional budget. Cells run one per child process (`python -m bench.training.accuracy CELL_DIR`),
`jobs` at a time, each in its own folder under the work directory:

    WORK_DIR/<cell slug>/config.json      what the child trains
                         checkpoint.pt    written after every epoch (resume inside a cell)
                         results.json     written when the run ends
                         train.log        one line per epoch

The driver is the only writer of the results file (JSON lines, appended and fsynced as the
timing sweep does). Re-running the same command skips cells whose row is written and
continues an interrupted cell from its checkpoint, so a cell killed mid-training costs at
most one epoch. A child that runs out of memory or fails is recorded ('oom' / 'error')
and the sweep goes on.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..environment import REPO_ROOT, check_device, die_with_parent, environment, git_commit, stop_code, stop_name
from ..plugins import load_plugins
from ..results import append_to_parts, folder_owner, load_rows, result_parts, results_writer, rewrite_parts
from ..schema import attention_label, run_identity, train_row, upgrade

DEFAULT_WORK_DIR = REPO_ROOT / "runs" / "accuracy"


@dataclass(frozen=True)
class TrainCell:
    dataset: str
    attention: str
    seq_len: int
    batch_size: int
    seed: int = 2000
    recipe: str = "sasrec-plus"
    model: str = "sasrec"
    objective: str = "all_positions"
    options: dict = field(default_factory=dict, hash=False)  # attention options, e.g. {"variant": "official"}
    settings: dict = field(
        default_factory=dict, hash=False
    )  # any other TrainConfig setting, e.g. {"hidden": 128, "heads": 8}

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def of_row(cls, row: dict) -> TrainCell:
        row = upgrade(row)  # rows written before seq_len
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    @property
    def label(self) -> str:
        return attention_label(self.attention, self.options)

    def slug(self) -> str:
        extra = "".join(f"-{k}{v}" for k, v in sorted(self.settings.items()))
        name = self.label.replace("[", "-").replace("]", "").replace("=", "").replace(",", "-")
        shape = f"N{self.seq_len}-B{self.batch_size}-s{self.seed}"
        return f"{self.dataset}-{self.model}-{self.objective}-{self.recipe}-{name}-{shape}{extra}"

    def train_config(self, out: Path, *, device: str = "cpu", threads: int | None = None, data_dir: str | None = None):
        from .config import with_recipe

        settings = {
            "dataset": self.dataset,
            "model": self.model,
            "objective": self.objective,
            "attention": self.attention,
            "attention_options": dict(self.options),
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "seed": self.seed,
            **self.settings,
            "device": device,
            "threads": threads,
            "data_dir": data_dir,
            "out": str(out),
        }
        return with_recipe(self.recipe, **settings)


# ------------------------------------------------------------------ rows


def _row(cell: TrainCell, status: str, message: str = "", results: dict | None = None, device: str = "cpu") -> dict:
    """A row of the training level: the cell, its status and, when it ran, the run's results and
    the environment of the process that trained it (the driver's commit is kept beside the run's)."""
    row = train_row(results) if results else {"level": "train", **environment(device)}
    row.update(asdict(cell), label=cell.label, status=status, message=message, driver_commit=git_commit())
    if not results:  # no run: the driver's code is the only code there is
        row["commit"] = git_commit()
    return row


def selected_test(row: dict) -> tuple[str, dict]:
    """(protocol, test metrics) of a row under the protocol its run was selected on; {} when it has none."""
    protocol = (row.get("config") or {}).get("select_protocol") or "seen_excluded"
    return protocol, (row.get("test") or {}).get(protocol) or {}


def done_keys(path: Path) -> set[str]:
    """Cells with a final row in the results file or any part continuing it."""
    keys = set()
    for part in result_parts(path):
        for row in load_rows(part):
            if row.get("level") == "train" and row.get("status") in ("ok", "oom", "unsupported"):
                keys.add(TrainCell.of_row(row).key())
    return keys


def _snapshot_of(row: dict, cell: TrainCell) -> bool:
    return row.get("level") == "train" and row.get("status") == "partial" and TrainCell.of_row(row) == cell


def check_done_in(paths) -> list[Path]:
    """--skip-done-in: results files that must exist (a typo would otherwise retrain what is finished)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise ValueError(
                f"--skip-done-in: {path} is not a file; expected a results file (JSON lines) of `bench accuracy`"
            )
    return paths


def done_anywhere(out: Path, done_in=()) -> set[str]:
    """Cells finished in `out` or in any of `done_in` (rows written elsewhere: another machine, another file)."""
    keys = done_keys(out)
    for path in check_done_in(done_in):
        keys |= done_keys(path)
    return keys


def snapshot_unfinished(
    cells: list[TrainCell],
    out: Path,
    *,
    work_dir: Path = DEFAULT_WORK_DIR,
    threads: int | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    done_in=(),
    log=print,
) -> list[dict]:
    """Rows with status 'partial' for cells stopped mid-training: their best epoch so far, tested.

    Run it when no driver is running (it evaluates in this process). A partial row does not count
    as done: the next run of the sweep continues the cell from its checkpoint and writes its 'ok'
    row, which then supersedes the snapshot in reports."""
    import dataclasses

    from .train import train

    done, written = done_anywhere(out, done_in), []
    with results_writer(out):
        for cell in cells:
            cell_dir = work_dir / cell.slug()
            if cell.key() in done or not (cell_dir / "checkpoint.pt").exists():
                continue
            config = dataclasses.replace(
                cell.train_config(cell_dir, device=device, threads=threads, data_dir=data_dir), max_minutes=0.0
            )
            results = train(config, resume=True, progress=False, log=False)  # no epoch runs: the best one is tested
            results["stop_reason"] = (
                f"snapshot after {results['epochs_run']} epoch(s); training continues on the next run"
            )
            (cell_dir / "results.json").unlink(missing_ok=True)  # the cell is not finished
            row = _row(cell, "partial", results["stop_reason"], results=results)
            append_to_parts(out, row)
            written.append(row)
            log(f"{cell.slug()}: partial after {results['epochs_run']} epochs, best {results['best_epoch']}")
    return written


def unsupported_reason(cell: TrainCell) -> str | None:
    from models.attention import available_attentions

    registry = available_attentions()
    if cell.attention not in registry:
        return f"unknown attention {cell.attention!r}"
    if cell.model == "sasrec" and cell.objective == "all_positions" and not registry[cell.attention]["causal"]:
        return f"{cell.attention} has no causal form (SASRec all_positions needs one)"
    return None


# ------------------------------------------------------------------ the driver


def run_accuracy_sweep(
    cells: list[TrainCell],
    out: Path,
    *,
    work_dir: Path = DEFAULT_WORK_DIR,
    jobs: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    done_in=(),
    poll_s: float = 2.0,
    log=print,
) -> list[dict]:
    """Train every cell not yet in `out` (nor in any `done_in` file), `jobs` at a time; returns the rows written by
    this call."""
    out, work_dir = Path(out), Path(work_dir)
    if jobs < 1:  # before the lock: a refused call leaves nothing behind (not even OUT.lock)
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    done_in = check_done_in(done_in)  # before the lock, like --jobs
    with results_writer(out):
        return _run_locked(cells, out, work_dir, jobs, threads, device, data_dir, done_in, poll_s, log)


def check_cells(cells: list[TrainCell], *, jobs: int, threads: int | None, device: str, data_dir: str | None) -> None:
    """Refuse, before anything trains, what every cell would fail on: a bad --jobs, --threads or --device, a
    setting out of range, a dataset that is not where --data-dir (or $LINREC_DATA, the default) says."""
    from ..data import locate

    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    check_device(device)
    for cell in cells:
        cell.train_config(Path("."), device=device, threads=threads, data_dir=data_dir)  # raises on a bad setting
    from ..data.longrange import LongRangeTask, is_longrange

    for dataset in sorted({cell.dataset for cell in cells} - {"synthetic"}):
        if is_longrange(dataset):
            LongRangeTask.from_name(dataset)  # raises on a bad task name
        else:
            locate(dataset, data_dir)


def _run_locked(cells, out, work_dir, jobs, threads, device, data_dir, done_in, poll_s, log) -> list[dict]:
    done = done_anywhere(out, done_in)
    todo = [c for c in cells if c.key() not in done]
    already = len(cells) - len(todo)  # of these cells (an --only selection counts its own)
    check_cells(todo, jobs=jobs, threads=threads, device=device, data_dir=data_dir)
    if not todo:
        return []
    with folder_owner(work_dir, "an accuracy sweep", "--work-dir"):  # one driver per work folder
        return _train_cells(cells, todo, already, out, work_dir, jobs, threads, device, data_dir, poll_s, log)


def _train_cells(cells, todo, already, out, work_dir, jobs, threads, device, data_dir, poll_s, log) -> list[dict]:
    written: list[dict] = []

    def finish(cell: TrainCell, row: dict) -> None:
        identity, present = run_identity(row), [r for p in result_parts(out) for r in load_rows(p)]
        if identity is not None and any(run_identity(r) == identity for r in present):
            log(f"{cell.slug()}: this run is already in {out}; not written twice")
            return
        append_to_parts(out, row)
        if row["status"] != "partial" and any(_snapshot_of(r, cell) for r in present):
            rewrite_parts(out, lambda r: None if _snapshot_of(r, cell) else r)  # each run in the results once
        written.append(row)
        protocol, test = selected_test(row)
        log(
            f"[{already + len(written)}/{len(cells)}] {cell.slug()}: {row['status']}"
            + (f"  test NDCG@10 {protocol} {test['ndcg@10']:.4f}" if test else f"  {row['message']}")
        )

    running: dict[subprocess.Popen, tuple[TrainCell, Path]] = {}
    skipped: list[TrainCell] = []
    try:
        while todo or running:
            while todo and len(running) < jobs:
                cell = todo.pop(0)
                reason = unsupported_reason(cell)
                if reason:
                    finish(cell, _row(cell, "unsupported", reason, device=device))
                    continue
                cell_dir = work_dir / cell.slug()
                cell_dir.mkdir(parents=True, exist_ok=True)
                holder = _wait_while_trained_elsewhere(cell_dir, log)
                if holder:  # an orphan of a killed driver still trains it: not ours to record, and not an error
                    log(f"{cell.slug()}: still in use by {holder}; skipped (run again once it has stopped)")
                    skipped.append(cell)
                    continue
                config = cell.train_config(cell_dir, device=device, threads=threads, data_dir=data_dir)
                (cell_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
                with (cell_dir / "train.log").open("a") as handle:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "bench.training.accuracy", str(cell_dir)],
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        cwd=REPO_ROOT,
                        # a driver killed outright (SIGKILL) takes its trainings with it; SIGTERM lets each keep
                        # its last epoch's checkpoint, so the next run resumes it
                        preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()),
                    )
                running[process] = (cell, cell_dir)
            time.sleep(poll_s if running else 0)
            for process in [p for p in running if p.poll() is not None]:
                cell, cell_dir = running.pop(process)
                finish(cell, _child_row(cell, cell_dir, process.returncode, device, out))
    except KeyboardInterrupt as stop:
        for process in running:
            process.terminate()
        for process in running:
            process.wait(timeout=30)
        log(
            f"\n{stop_name(stop)}: {len(written)} row(s) written to {out}; run the same command again to resume "
            "(cells continue from their checkpoints)"
        )
        raise SystemExit(stop_code(stop)) from None
    if skipped:
        raise CellsInUse(f"{len(skipped)} cell(s) still in use by another process were not trained: run again later")
    return written


class CellsInUse(RuntimeError):
    """Cells another process still trains (an orphan of a killed driver): left alone, no row, a failing exit."""


def ranks_dir(out: Path) -> Path:
    """Where a results file keeps its finished cells' per-user test ranks: one small file per cell beside it."""
    return out.parent / f"{out.stem}.ranks"


def _keep_ranks(cell: TrainCell, cell_dir: Path, out: Path) -> str | None:
    """Copy a finished cell's test ranks beside the results file; the row names the copy (relative to the file)."""
    from .evaluate import TEST_RANKS_FILE

    source = cell_dir / TEST_RANKS_FILE
    if not source.exists():
        return None
    target = ranks_dir(out) / f"{cell.slug()}.json.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return str(target.relative_to(out.parent))


def _child_row(cell: TrainCell, cell_dir: Path, returncode: int, device: str, out: Path) -> dict:
    results_path = cell_dir / "results.json"
    if returncode == 0 and results_path.exists():
        row = _row(cell, "ok", results=json.loads(results_path.read_text()))
        row["ranks_file"] = _keep_ranks(cell, cell_dir, out)
        return row
    tail = (cell_dir / "train.log").read_text().strip().splitlines()[-1:] if (cell_dir / "train.log").exists() else []
    last = tail[0][:300] if tail else ""
    if returncode == -9 or "out of memory" in last.lower() or "MemoryError" in last:
        return _row(cell, "oom", f"exit {returncode}: {last}", device=device)
    return _row(cell, "error", f"exit {returncode}: {last}", device=device)


IN_USE_WAIT_S = 120.0  # how long a cell held by another process is waited for before it is left alone


def _wait_while_trained_elsewhere(cell_dir: Path, log) -> str | None:
    """None once no process holds the cell's run folder (a training that outlived its driver gets time to stop:
    its parent-death signal makes it save and exit); else who still holds it after `timeout_s`."""
    import fcntl

    lock, timeout_s = cell_dir / ".owner.lock", IN_USE_WAIT_S
    deadline, said = time.monotonic() + timeout_s, False
    while lock.exists():
        with lock.open("a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                return None
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
        if time.monotonic() > deadline:
            return holder
        if not said:
            log(f"{cell_dir.name}: in use by {holder}; waiting up to {timeout_s:.0f} s for it to stop")
            said = True
        time.sleep(1.0)
    return None


def _run_cell(cell_dir: Path) -> None:
    """Child process: train (resuming when a checkpoint exists) and write results.json."""
    from .config import TrainConfig
    from .train import train

    load_plugins()  # the driver's --plugin modules, passed through the environment
    config = TrainConfig(**upgrade(json.loads((cell_dir / "config.json").read_text())))  # cells written before seq_len
    (cell_dir / "results.json").unlink(missing_ok=True)
    train(config, resume=True, progress=False, log=True)


if __name__ == "__main__":
    _run_cell(Path(sys.argv[1]))
