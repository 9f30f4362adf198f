"""The results store: JSON lines, one object per finished cell, appended and flushed at once. What a row holds is
bench/schema.py's.

One writer per results file: a sweep holds an exclusive lock (`results_writer`) for its
whole run, so two sweeps never measure under each other's load nor write a cell twice.
A row cut by an interruption (no trailing newline) is dropped before the next append, so
it neither swallows the next row nor breaks the file; resume re-runs that cell.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path


class ResultsFileError(ValueError):
    """A results file that cannot be read as JSON lines: file, line and reason."""


class ResultsFileBusy(RuntimeError):
    """Another process is writing to this results file (or owns this run folder); `holder` names it ('pid 1234')."""

    def __init__(self, message: str, holder: str = "another process"):
        super().__init__(message)
        self.holder = holder


def _drop_torn_tail(path: Path) -> None:
    """Cut an unfinished last line (written by a process killed mid-row) back to the last newline."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        position = size
        while position > 0:  # walk back in blocks to the last newline
            step = min(65536, position)
            handle.seek(position - step)
            block = handle.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                handle.truncate(position - step + newline + 1)
                return
            position -= step
        handle.truncate(0)


def append_row(path: Path, row: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _drop_torn_tail(path)
    with path.open("a") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


PART_BYTES = 768 * 1024  # a long sweep continues its file in a new part past this: CI keeps results files < 1 MB


def _part_number(path: Path, part: Path) -> int | None:
    middle = part.name[len(path.stem) + 1 : len(part.name) - len(path.suffix)]
    return int(middle) if part.name.startswith(path.stem + ".") and middle.isdigit() else None


def result_parts(path: Path) -> list[Path]:
    """A results file and the parts that continue it (NAME.2.jsonl, NAME.3.jsonl, ...), in order; only those
    that exist."""
    path = Path(path)
    numbered = {}
    for part in path.parent.glob(f"{path.stem}.*{path.suffix}"):
        number = _part_number(path, part)
        if number is not None and number > 1:
            numbered[number] = part
    return ([path] if path.exists() else []) + [numbered[n] for n in sorted(numbered)]


def append_to_parts(path: Path, row: dict, part_bytes: int | None = None) -> Path:
    """Append a row to the newest part of `path`, opening the next part once that one has grown past part_bytes
    (a training sweep's rows carry learning curves; dozens of them would pass CI's 1 MB limit). Returns the
    file written."""
    path = Path(path)
    parts = result_parts(path)
    newest = parts[-1] if parts else path
    if newest.exists() and newest.stat().st_size >= (part_bytes or PART_BYTES):
        number = (_part_number(path, newest) or 1) + 1
        newest = path.with_name(f"{path.stem}.{number}{path.suffix}")
    append_row(newest, row)
    return newest


def rewrite_parts(path: Path, edit) -> int:
    """Rewrite every part of `path` with edit(row): a row to keep (itself, or a replacement) or None to drop it.
    Rows kept as they are keep their bytes. Each part changed is written whole to a new file and renamed over the
    old one, so an interruption leaves the old part or the new, never a torn one. Returns how many rows were
    replaced or dropped. Only a process holding results_writer(path) may call it: that lock is what keeps a sweep
    from appending meanwhile."""
    changed = 0
    for part in result_parts(path):
        lines = [line for line in part.read_text().splitlines() if line.strip()]
        rows = load_rows(part)  # a torn last line is not a row: it is dropped with the rewrite
        kept, count = [], 0
        for line, row in zip(lines, rows, strict=False):
            new = edit(row)
            count += new is not row
            if new is not None:
                kept.append(line if new is row else json.dumps(new, sort_keys=True))
        if not count:
            continue
        staging = part.with_name(part.name + ".rewrite")
        with staging.open("w") as handle:
            handle.writelines(line + "\n" for line in kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, part)
        changed += count
    return changed


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, busy: str):
    """Hold an exclusive lock on `lock_path` (holding this process's pid) for the block; when another process
    holds it, raise ResultsFileBusy with `busy` formatted with the holder ('pid 1234')."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ResultsFileBusy(busy.format(holder=holder), holder) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def results_writer(path: Path):
    """Hold an exclusive lock on `path` (via PATH.lock) while a sweep writes to it; refuse a second writer."""
    path = Path(path)
    busy = f"{path} is being written by {{holder}}; wait for it to finish or write to another --out"
    with exclusive_lock(path.with_name(path.name + ".lock"), busy):
        yield path


@contextlib.contextmanager
def folder_owner(folder: Path, what: str, flag: str):
    """One process at a time in a run folder (a training's --out, an accuracy sweep's --work-dir): a second one
    is refused with the holder's pid, before it reads or writes anything there."""
    folder = Path(folder)
    created = not folder.exists()
    busy = f"{folder} is in use by {{holder}} ({what}); wait for it to finish or give another {flag}"
    try:
        with exclusive_lock(folder / ".owner.lock", busy):
            yield folder
    finally:
        # a run refused or stopped before it wrote anything leaves nothing behind: not even the folder it made
        if created and folder.is_dir() and [p.name for p in folder.iterdir()] == [".owner.lock"]:
            (folder / ".owner.lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()


def load_rows(path: Path) -> list[dict]:
    """All rows of a results file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist")
    if path.is_dir():
        raise ResultsFileError(f"{path} is a directory; expected a JSON-lines results file")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ResultsFileError(
            f"{path}: not a text file (byte {err.start} is not UTF-8); expected JSON lines, one result row per line"
        ) from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break  # interrupted while writing the last row: it will be re-run
            raise ResultsFileError(
                f"{path}:{number}: not a JSON object ({err.msg}); expected one result row per line"
            ) from None
        if not isinstance(row, dict):
            raise ResultsFileError(
                f"{path}:{number}: expected a JSON object (one result row), got {type(row).__name__}"
            )
        rows.append(row)
    return rows
