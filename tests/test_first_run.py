"""What a newcomer sees on a first run: a word before the kernel builds, one line when it cannot, a progress bar
that says what it is doing until the last row is written, and a clean tree afterwards."""

import subprocess
from pathlib import Path

import pytest

import bench.timing.sweep
from bench.timing.grid import Grid
from bench.timing.sweep import measured_rows, run_sweep
from models.attention.kernels import linrec_cpp

REPO = Path(__file__).resolve().parents[1]
FAST = {"min_time_s": 0.0, "min_repeats": 1, "max_repeats": 2}


@pytest.fixture
def fresh_build(monkeypatch):
    """A machine where the install compiled nothing: what the first use then does."""
    monkeypatch.setattr(linrec_cpp, "_installed", lambda: None)
    linrec_cpp._build.cache_clear()
    yield
    linrec_cpp._build.cache_clear()  # the next caller builds (or loads) for real


def test_a_missing_compiler_is_one_line_and_no_build_is_tried(monkeypatch, fresh_build, capsys):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setattr(linrec_cpp, "_quiet_cpp_extension", lambda: pytest.fail("tried to build without a compiler"))
    reason = linrec_cpp.extension_error()
    assert reason == "RuntimeError: no C++ compiler ('no-such-compiler-here' not found; install one or set CXX)"
    assert capsys.readouterr().err == ""


class _FakeExtension:
    calls: list = []

    @staticmethod
    def _get_build_directory(name, verbose):
        return "/nonexistent/build"

    @staticmethod
    def load_inline(**kwargs):
        _FakeExtension.calls.append(kwargs["name"])
        return "module"


def test_a_build_is_announced_once_in_one_line(monkeypatch, fresh_build, capsys):
    monkeypatch.delenv("CXX", raising=False)
    if linrec_cpp.shutil.which("c++") is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setattr(linrec_cpp, "_quiet_cpp_extension", lambda: _FakeExtension)
    assert linrec_cpp._build() == "module" and linrec_cpp._build() == "module"  # cached: one build
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "building LinRec's fused C++ kernel (once per machine" in err


def test_an_existing_build_is_loaded_silently(monkeypatch, fresh_build, capsys):
    monkeypatch.delenv("CXX", raising=False)
    if linrec_cpp.shutil.which("c++") is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setattr(linrec_cpp, "_quiet_cpp_extension", lambda: _FakeExtension)
    monkeypatch.setattr(linrec_cpp, "_already_built", lambda extension, name: True)
    linrec_cpp._build()
    assert capsys.readouterr().err == ""


def test_the_status_follows_every_phase_and_a_busy_group_says_it_waits(monkeypatch):
    monkeypatch.setattr(bench.timing.sweep.LoadMonitor, "other_cores", lambda self: 5.0)  # a loaded machine throughout
    grid = Grid([("sdpa", {}), ("linrec", {})], seq_len=[16], batch_size=[2], dim=16, heads=2, causal=[True])
    cells = grid.cells("cpu")
    statuses = []
    rows = list(
        measured_rows(
            cells,
            config={},
            seed=0,
            threads=1,
            timing=FAST,
            max_cell_s=60,
            memory_fraction=0.9,
            on_status=statuses.append,
        )
    )
    assert len(rows) == 2 and all(row["remeasured"] for row in rows)
    phases = [text.split()[0] for text in statuses]
    assert phases == ["timing", "timing", "interleaving", "busy", "re-timing"], statuses


def test_the_bar_counts_a_cell_when_its_row_is_written(tmp_path, capsys):
    grid = Grid([("sdpa", {}), ("linrec", {})], seq_len=[16], batch_size=[2], dim=16, heads=2, causal=[True])
    rows = run_sweep(grid.cells("cpu"), tmp_path / "s.jsonl", config={}, timing=FAST, progress=True)
    assert len(rows) == 2
    bar = capsys.readouterr().err
    # the group is interleaved before any of its cells counts: the bar never sits at 2/2 while work goes on
    assert bar.index("interleaving 2 cells") < bar.index("1/2") < bar.index("2/2")


def test_git_ignores_what_the_readme_commands_leave():
    """tox 4 writes `.venv` as a file (a redirect) in some setups, a folder in others; sweeps leave OUT.lock."""
    for path in (".venv", ".venv/bin/python", "results/sweeps/x.jsonl.lock", "runs/main-1/sweep.jsonl", ".tox/x"):
        checked = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert checked.returncode == 0, f"{path} is not ignored"
