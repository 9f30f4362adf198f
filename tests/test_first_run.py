"""What a newcomer sees on a first run: a word before the kernel builds, one line when it cannot, a progress bar
that says what it is doing until the last row is written, and a clean tree afterwards."""

import shutil
import subprocess
from pathlib import Path

import pytest

import bench.timing.sweep
from bench.timing.grid import Grid
from bench.timing.sweep import measured_rows, run_sweep
from models.attention.kernels import cpp_build, linrec_cpp

REPO = Path(__file__).resolve().parents[1]
FAST = {"min_time_s": 0.0, "min_repeats": 1, "max_repeats": 2}


@pytest.fixture
def fresh_build(monkeypatch):
    """A machine where the install compiled nothing: what the first use then does."""
    monkeypatch.setattr(linrec_cpp.KERNEL, "installed", lambda: None)
    linrec_cpp.KERNEL.build.cache_clear()
    yield
    linrec_cpp.KERNEL.build.cache_clear()  # the next caller builds (or loads) for real


def test_a_missing_compiler_is_one_line_and_no_build_is_tried(monkeypatch, fresh_build, capsys):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    monkeypatch.setattr(cpp_build, "quiet_cpp_extension", lambda: pytest.fail("tried to build without a compiler"))
    reason = linrec_cpp.extension_error()
    assert reason == "RuntimeError: no C++ compiler ('no-such-compiler-here' not found; install one or set CXX)"
    assert capsys.readouterr().err == ""


def test_a_compiler_that_does_not_run_is_found_before_any_build_is_announced(monkeypatch, fresh_build, capsys):
    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setattr(cpp_build, "quiet_cpp_extension", lambda: pytest.fail("tried to build with a broken compiler"))
    assert "the C++ compiler '/bin/false' does not run" in linrec_cpp.extension_error()
    assert capsys.readouterr().err == ""


def test_the_fallback_is_one_warning_line_without_a_copy_of_a_source_line(recwarn):
    import warnings

    cpp_build.warn_fallback("a kernel for this test", "no compiler")
    cpp_build.warn_fallback("a kernel for this test", "no compiler")  # once per reason
    (caught,) = [w for w in recwarn if "a kernel for this test" in str(w.message)]
    text = warnings.formatwarning(caught.message, caught.category, caught.filename, caught.lineno, None)
    assert text.count("\n") == 1 and "using the PyTorch path" in text


def test_the_install_status_is_one_line_and_truthful(monkeypatch, fresh_build, capsys):
    from bench.cli import main

    monkeypatch.setattr(cpp_build.kernels()["scan"], "installed", lambda: None)
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    main(["kernels"])
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "not built: no C++ compiler" in line and "the PyTorch path runs" in line


class _FakeExtension:
    folder: Path

    @classmethod
    def _get_build_directory(cls, name, verbose):
        return str(cls.folder)

    @staticmethod
    def load_inline(**kwargs):
        return "module"


@pytest.fixture
def fake_builds(monkeypatch, tmp_path):
    """torch's extension cache in a temporary folder; the child build writes a library there."""
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.delenv("CXX", raising=False)
    _FakeExtension.folder = tmp_path
    monkeypatch.setattr(cpp_build, "quiet_cpp_extension", lambda: _FakeExtension)
    builds = []

    def child(arguments, timeout_s):
        builds.append(arguments)
        (tmp_path / f"{linrec_cpp.KERNEL.extension_name()}.so").write_bytes(b"a library")
        return None

    monkeypatch.setattr(cpp_build, "_child_load", child)
    return builds


def test_two_environments_with_the_same_torch_build_in_folders_of_their_own(monkeypatch, tmp_path):
    """The build command names torch's headers by path: one folder for two environments (tox's main and tests)
    made each recompile over the other's library."""
    import torch

    here = linrec_cpp.KERNEL.extension_name()
    monkeypatch.setattr(torch, "__file__", str(tmp_path / "other-env" / "torch" / "__init__.py"))
    assert linrec_cpp.KERNEL.extension_name() != here


def test_a_build_is_announced_once_in_one_line(fresh_build, fake_builds, capsys):
    assert linrec_cpp.KERNEL.build() == "module" and linrec_cpp.KERNEL.build() == "module"  # cached: one build
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "building LinRec's fused C++ kernel (once per machine" in err
    assert fake_builds == [["--build", "linrec"]]


def test_the_install_status_says_a_kernel_builds_on_first_use_until_it_has(fresh_build, fake_builds, tmp_path):
    assert "builds on first use" in cpp_build._state(linrec_cpp.KERNEL, build=False)
    library = tmp_path / f"{linrec_cpp.KERNEL.extension_name()}.so"
    library.write_bytes(b"a library")
    cpp_build._record_verified(library)
    assert cpp_build._state(linrec_cpp.KERNEL, build=False) == "built in torch's extension cache"


def test_an_existing_verified_build_is_loaded_silently(fresh_build, fake_builds, tmp_path, capsys):
    library = tmp_path / f"{linrec_cpp.KERNEL.extension_name()}.so"
    library.write_bytes(b"a library")
    cpp_build._record_verified(library)
    assert linrec_cpp.KERNEL.build() == "module"
    assert capsys.readouterr().err == "" and fake_builds == []


def test_a_stale_lock_of_a_killed_build_is_cleared_and_the_build_goes_on(fresh_build, fake_builds, tmp_path, capsys):
    """A builder killed mid-compile leaves torch's `lock`: torch would wait on it forever."""
    (tmp_path / "lock").write_text("")
    assert linrec_cpp.KERNEL.build() == "module"
    assert not (tmp_path / "lock").exists() and "stale build lock" in capsys.readouterr().err


def test_a_stale_lock_of_a_killed_load_is_cleared_before_a_verified_library_loads(
    fresh_build, fake_builds, tmp_path, monkeypatch, capsys
):
    """A process killed while loading an up-to-date library (a `timeout` during start-up) also leaves torch's
    `lock`, and torch takes it to load: every later process that used the kernel hung on it."""
    library = tmp_path / f"{linrec_cpp.KERNEL.extension_name()}.so"
    library.write_bytes(b"a library")
    cpp_build._record_verified(library)
    (tmp_path / "lock").write_text("")

    def load_inline(**kwargs):  # torch's loader: it waits while `lock` exists
        assert not (tmp_path / "lock").exists(), "the load would wait forever on the dead process's lock"
        return "module"

    monkeypatch.setattr(_FakeExtension, "load_inline", staticmethod(load_inline))
    assert linrec_cpp.KERNEL.build() == "module"
    assert fake_builds == [] and "stale build lock" in capsys.readouterr().err


def test_a_changed_library_is_rebuilt_not_loaded(fresh_build, fake_builds, tmp_path, capsys):
    """A library cut short after it was verified (a full disk, a copy interrupted): its digest no longer matches."""
    library = tmp_path / f"{linrec_cpp.KERNEL.extension_name()}.so"
    library.write_bytes(b"a library, whole")
    cpp_build._record_verified(library)
    library.write_bytes(b"a lib")
    assert linrec_cpp.KERNEL.build() == "module"
    assert fake_builds == [["--build", "linrec"]] and "unverified or corrupt; rebuilding" in capsys.readouterr().err


def test_a_truncated_library_crashes_only_the_child_that_tries_it(tmp_path):
    """The real check, in a real child process: half of a compiled library (its ELF header intact)."""
    built = linrec_cpp.KERNEL.build()
    if isinstance(built, Exception):
        pytest.skip(f"no build to cut here ({built})")
    whole = Path(built.__file__).read_bytes()
    cut = tmp_path / "cut.so"
    cut.write_bytes(whole[: len(whole) // 2])
    assert cpp_build._child_load(["--library", str(cut)], 120.0) is not None
    assert cpp_build._child_load(["--library", built.__file__], 120.0) is None


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-3", "soon"])
def test_a_build_time_limit_must_be_a_positive_number(monkeypatch, value):
    monkeypatch.setenv("LINREC_BUILD_TIMEOUT_S", value)
    with pytest.raises(ValueError, match="LINREC_BUILD_TIMEOUT_S must be a positive number"):
        cpp_build.build_timeout_s()


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


def test_the_sweep_builds_every_fused_kernel_before_it_times_anything(monkeypatch):
    """LinRec's kernel and the mixers' scans are built by `prepare`, before the progress bar starts: a build
    inside the first cells made the first minute's ETA four times the sweep's length."""
    from models.attention import attention_class, linrec
    from models.attention.kernels import scan_cpp

    built = []
    monkeypatch.setattr(linrec, "extension_error", lambda: built.append("linrec"))
    monkeypatch.setattr(scan_cpp, "extension_error", lambda: built.append("scan"))
    for name in ("linrec", "mamba", "lru", "sdpa"):
        attention_class(name).prepare("cpu")
    attention_class("mamba").prepare("cuda")  # no C++ scan to build for a card
    assert built == ["linrec", "scan", "scan"]
