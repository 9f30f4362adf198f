"""Where a result came from: commit, torch, device, threads, host, time."""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import math
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def git_commit() -> str:
    """HEAD's hash, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@functools.cache
def code_version() -> dict:
    """The code this process runs, read once (the first call, at start): HEAD's commit ('-dirty' when tracked files
    differ) and a SHA-256 of that difference (`git diff HEAD`, tracked files), so a dirty run still names its code.
    A run that outlives edits to the tree keeps what it started with: call this before the work starts."""
    import hashlib

    commit = git_commit()
    diff_sha256 = None
    if commit.endswith("-dirty"):
        try:
            diff = subprocess.run(
                ["git", "diff", "HEAD", "--no-color", "--no-ext-diff"], cwd=REPO_ROOT, capture_output=True, check=True
            ).stdout
            diff_sha256 = hashlib.sha256(diff).hexdigest()[:16]
        except (OSError, subprocess.CalledProcessError):
            diff_sha256 = "unknown"
    return {"commit": commit, "diff_sha256": diff_sha256}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU " + (platform.processor() or platform.machine())


def environment(device: str = "cpu") -> dict:
    """The fields every result row carries."""
    return {
        **code_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "host": platform.node(),
        "device": device_name(device),
        # the vector code torch's CPU kernels dispatch to here (DEFAULT, AVX2, AVX512, ...): sdpa's CPU kernel is
        # vectorised code whose speed depends on it
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # 1-minute load average when the row was written: a value above the thread count
        # means something else competed for the CPU while the cell ran
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def positive_int(text: str) -> int:
    """argparse type of counts (threads, jobs, rounds, sizes): 0 or less is refused when parsed, before any work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type of limits (seconds, minutes, tolerances): a finite number > 0. NaN would switch a bound off
    without a word (every comparison with it is false) and write NaN, which is not JSON, into results."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def unknown_name(flag: str, what: str, given: str, choices) -> str:
    """One line for a misspelt name: what was given, the closest names, and every name."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(str(given), choices, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{flag}: unknown {what} {given!r}; {hint}expected one of {', '.join(choices)}"


def non_negative_float(text: str) -> float:
    """argparse type of waits that may be 0 (do not wait): a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def check_device(device: str) -> None:
    """One line when the device cannot be used: what was asked and what this torch has."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support (a CPU build)"
        raise ValueError(
            f"--device {device}: this torch {torch.__version__} has {built} and sees no CUDA device; use --device cpu"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


# ------------------------------------------------------------------ stopping


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """In a child process: ask the kernel for `sig` when the parent dies (Linux prctl PR_SET_PDEATHSIG), so that a
    driver killed with SIGKILL, which runs no cleanup, leaves no worker or training behind. A parent already gone
    before this ran (the race the kernel cannot see) ends the child at once. Elsewhere a no-op."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: every command stops the same way for both (children
    stopped, what was kept said, exit 143 instead of 130)."""


def raise_on_sigterm() -> None:
    """Make SIGTERM raise Terminated in this (main) thread instead of killing the process on the spot."""

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def stop_code(stop: BaseException) -> int:
    return 143 if isinstance(stop, Terminated) else 130


def stop_name(stop: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
