"""Building and loading the suite's C++ CPU kernels (LinRec's fused walk, the recurrent mixers' scans).

A kernel is compiled by the install (setup.py, next to the torch it was installed with) or, failing that, on first
use into torch's extension cache (once per machine and torch build). Whatever goes wrong, the model still runs: the
kernel's PyTorch path takes over and says why once. Three faults are handled rather than hit:

- a build or a load killed part-way (power loss, an OOM kill, a `timeout`) leaves torch's `lock` file in the cache,
  and every later build or load waits on it forever (torch takes that lock even to load a library that is up to
  date). Builders and loaders here hold an OS lock (flock, released when the process dies) while they build or
  load, so a `lock` file found while holding it belongs to a dead process and is removed;
- the compile runs in a child process with a time limit (LINREC_BUILD_TIMEOUT_S, default 900 s), so a hung compiler
  ends in a one-line error, not a hung sweep;
- a compiled library is loaded into this process only after a child process has loaded it once and its SHA-256 was
  recorded beside it: a truncated or corrupt `.so` (which crashes the process that loads it, with no message) is
  found in the child, deleted, and rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

KERNELS = Path(__file__).resolve().parent

# native: built on the machine that runs it; associative maths lets the dot products vectorise
CFLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
]
DEFAULT_BUILD_TIMEOUT_S = 900.0
_VERIFIED_SUFFIX = ".sha256"


def quiet_cpp_extension():
    """torch.utils.cpp_extension, imported without the 'No CUDA runtime is found, using CUDA_HOME=...' line a CUDA
    build of torch prints on a machine without a GPU: these kernels are CPU-only and nobody asked for CUDA."""
    with contextlib.redirect_stderr(io.StringIO()):
        import torch.utils.cpp_extension as cpp_extension
    return cpp_extension


def build_timeout_s() -> float:
    text = os.environ.get("LINREC_BUILD_TIMEOUT_S", "")
    try:
        value = float(text) if text else DEFAULT_BUILD_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not (0 < value < float("inf")):
        raise ValueError(f"LINREC_BUILD_TIMEOUT_S must be a positive number of seconds, got {text!r}")
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified(library: Path) -> bool:
    """True when a child process loaded `library` and recorded its digest, and the file is still that file."""
    record = library.with_name(library.name + _VERIFIED_SUFFIX)
    try:
        return record.read_text().strip() == _sha256(library)
    except OSError:
        return False


def _record_verified(library: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only install folder: verified again next time, still correct
        library.with_name(library.name + _VERIFIED_SUFFIX).write_text(_sha256(library) + "\n")


@contextlib.contextmanager
def _builder_lock(folder: Path, timeout_s: float):
    """Hold the folder's builder lock (another live builder or loader: wait for it, up to timeout_s); clear a dead
    one's."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".builder.flock", "w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has been building in {folder} for over {timeout_s:.0f} s"
                    ) from None
                time.sleep(0.5)
        stale = folder / "lock"  # torch's own baton: no live builder holds it while we hold the flock
        if stale.exists():
            print(
                f"linrec: removing a stale build lock left by an interrupted build or load ({stale})", file=sys.stderr
            )
            stale.unlink(missing_ok=True)
        yield


@functools.cache
def warn_fallback(what: str, reason: str) -> None:
    """Once per process and reason: `what` runs its PyTorch path instead of a C++ kernel. One line: the warning
    names no source file, so Python prints no copy of a source line under it."""
    import warnings

    warnings.warn_explicit(f"{what} is unavailable ({reason}); using the PyTorch path", UserWarning, "linrec", 0)


def compiler_problem() -> str | None:
    """Why no C++ compiler can build here (None: one runs), found before announcing a build."""
    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found; install one or set CXX)"
    try:
        subprocess.run([compiler, "--version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return f"the C++ compiler {compiler!r} does not run ('{compiler} --version' failed; install one or set CXX)"
    return None


class CppKernel:
    """One C++ source compiled as a torch extension. `build()` returns the module or the exception that stopped it
    (cached per process); `error()` says why it is unavailable, in one line; `module()` raises that."""

    def __init__(self, key: str, title: str, source: str, declarations: str, functions: list[str], installed: str):
        self.key, self.title = key, title  # key: this file's command-line name; title: what the messages call it
        self.source_path = KERNELS / source
        self.declarations, self.functions, self.installed_name = declarations, functions, installed
        self.build = functools.cache(self._build)

    def source_digest(self) -> str:
        """Of the C++ source, as setup.py stamps it into an installed build."""
        return hashlib.sha256(self.source_path.read_bytes()).hexdigest()[:12]

    def extension_name(self) -> str:
        """Carries a hash of source, flags, torch (version and where it is installed) and Python: two checkouts, or
        two virtual environments, never load (or keep rebuilding over) each other's build in the shared cache.
        NOTE: the place matters too: the build command names torch's headers by path, so two environments with the
        same torch (tox's main and tests, a venv) sharing one folder made ninja recompile at every switch and left
        the library unverified for the other."""
        import torch

        versions = [torch.__version__, sys.version.split()[0], str(Path(torch.__file__).resolve().parent)]
        text = "".join([self.declarations, self.source_path.read_text(), *CFLAGS, *versions])
        return f"{self.source_path.stem}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def installed(self):
        """The extension compiled when the package was installed (setup.py), if it was, loads, and matches this
        source."""
        module = self._import_installed()
        return module if getattr(module, "source_digest", None) == self.source_digest() else None

    def _import_installed(self):
        name = f"{__package__}.{self.installed_name}"
        if name not in sys.modules:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                return None
            library = Path(spec.origin)
            if not verified(library):  # loaded in a child process first: a corrupt library must not crash this one
                if _child_load(["--library", str(library)], 120.0) is not None:
                    print(
                        f"linrec: {library} does not load; left aside (the kernel builds on first use)", file=sys.stderr
                    )
                    return None
                _record_verified(library)
        try:
            return importlib.import_module(name)
        except ImportError:  # built against another torch
            return None

    def _build(self):
        installed = self.installed()
        if installed is not None:
            return installed
        problem = compiler_problem()  # one clear reason instead of torch's multi-line compiler banner
        if problem is not None:
            return RuntimeError(problem)
        try:
            timeout_s = build_timeout_s()
            cpp_extension = quiet_cpp_extension()
            name = self.extension_name()
            folder = Path(cpp_extension._get_build_directory(name, verbose=False))
            library = folder / f"{name}.so"
            with _builder_lock(folder, timeout_s):  # a load too: it takes torch's lock, which a killed one leaves
                if not verified(library):
                    self._build_in_child(folder, library, timeout_s)
                return self._load_inline(cpp_extension, name)
        except Exception as err:  # noqa: BLE001 -- no compiler, no ninja, no headers, a crash: the PyTorch path stays
            return err

    def _build_in_child(self, folder: Path, library: Path, timeout_s: float) -> None:
        if library.exists():  # a library that never loaded in a child, or changed since: build it afresh
            print(f"linrec: {library.name} is unverified or corrupt; rebuilding it", file=sys.stderr)
            library.unlink()
        print(f"linrec: building {self.title} (once per machine, about a minute) ...", file=sys.stderr)
        failure = _child_load(["--build", self.key], timeout_s)
        if failure is not None:
            if library.exists():
                library.unlink()
            raise RuntimeError(failure)
        _record_verified(library)

    def _load_inline(self, cpp_extension, name: str):
        return cpp_extension.load_inline(
            name=name,
            cpp_sources=[self.declarations, self.source_path.read_text()],
            functions=self.functions,
            extra_cflags=CFLAGS,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )

    def error(self) -> str | None:
        built = self.build()
        return f"{type(built).__name__}: {built}".splitlines()[0] if isinstance(built, Exception) else None

    def module(self):
        built = self.build()
        if isinstance(built, Exception):
            raise RuntimeError(f"{self.title}: the C++ extension could not be built ({self.error()})")
        return built


def _child_load(arguments: list[str], timeout_s: float) -> str | None:
    """Run this module in a child process (build a kernel, or load a library); None when it worked, else why."""
    command = [sys.executable, "-m", __name__, *arguments]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=KERNELS.parents[2])
    except subprocess.TimeoutExpired:
        return f"the build took over {timeout_s:.0f} s (LINREC_BUILD_TIMEOUT_S) and was stopped"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        return f"loading the compiled library crashed the process that tried (signal {-done.returncode})"
    lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    error_lines = [line for line in lines if "error" in line.lower()]
    return (error_lines or lines or [f"exit {done.returncode}"])[-1][:300]


def kernels() -> dict[str, CppKernel]:
    from . import linrec_cpp, scan_cpp

    return {kernel.key: kernel for kernel in (linrec_cpp.KERNEL, scan_cpp.KERNEL)}


def _state(kernel: CppKernel, build: bool) -> str:
    if kernel.installed() is not None:
        return "built at install"
    if not build:
        problem = compiler_problem()
        if problem is not None:
            return f"not built: {problem}; the PyTorch path runs (slower)"
        name = kernel.extension_name()
        folder = Path(quiet_cpp_extension()._get_build_directory(name, verbose=False))
        if not verified(folder / f"{name}.so"):
            return "not built yet: builds on first use (about a minute, once per machine and torch build)"
    reason = kernel.error()
    return "built in torch's extension cache" if reason is None else f"not built ({reason}); the PyTorch path runs"


def status_line(build: bool = False) -> str:
    """One line: whether each C++ kernel is built, and what runs where one is not (`build`: compile it now)."""
    titles_by_state: dict[str, list[str]] = {}
    for kernel in kernels().values():
        titles_by_state.setdefault(_state(kernel, build), []).append(kernel.title)
    return "; ".join(f"{' and '.join(titles)}: {state}" for state, titles in titles_by_state.items())


def _main(argv: list[str]) -> int:
    """Child side: `--build KEY` compiles and loads a kernel; `--library PATH` loads a compiled library."""
    import torch  # noqa: F401 -- an extension's symbols come from libtorch

    if argv[:1] == ["--library"]:
        spec = importlib.util.spec_from_file_location(Path(argv[1]).name.split(".")[0], argv[1])
        importlib.util.module_from_spec(spec)
        return 0
    kernel = kernels()[argv[1]]
    kernel._load_inline(quiet_cpp_extension(), kernel.extension_name())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
