"""The install-time build of the suite's C++ CPU kernels (everything else is in pyproject.toml): LinRec's fused walk
and the recurrent mixers' scans.

`pip install .` compiles them for this machine: pyproject.toml puts torch in the build environment. With
`--no-build-isolation` they compile against the torch already installed instead (a CPU-only torch, say, where build
isolation would fetch PyPI's default build). A build the running torch cannot load (another torch version), a stale
one (the source changed since) or none at all (no compiler: the install still succeeds) is left aside: the kernel
then builds on first use (about a minute, once per machine), or the mechanism runs its PyTorch path and says so once.
"""

import hashlib
import os
from pathlib import Path

from setuptools import setup

KERNELS = Path("models/attention/kernels")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
# (installed module, source, the macro that stamps its digest): what the loader compares (kernels/cpp_build.py,
# source_digest), so that a stale build is not loaded
EXTENSIONS = [("_linrec_cpu", "linrec_cpu", "LINREC_SOURCE_DIGEST"), ("_scan_cpu", "scan_cpu", "SCAN_SOURCE_DIGEST")]


def digest(source: str) -> str:
    return hashlib.sha256((KERNELS / f"{source}.cpp").read_bytes()).hexdigest()[:12]


ext_modules, cmdclass = [], {}
try:
    if os.environ.get("LINREC_SKIP_INSTALL_BUILD"):  # tox: the kernels build once on first use, not per environment
        raise ImportError
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:
    pass
else:
    ext_modules = [
        CppExtension(
            f"models.attention.kernels.{module}",
            [str(KERNELS / f"{source}_module.cpp")],
            extra_compile_args=[*FLAGS, f'-D{macro}="{digest(source)}"'],
            extra_link_args=["-fopenmp"],
        )
        for module, source, macro in EXTENSIONS
    ]

    class OptionalBuild(BuildExtension):
        """A failed compile (no compiler, no headers) never fails the install: the kernels build on first use, or
        the mechanisms run their PyTorch paths and say so."""

        def run(self):
            try:
                super().run()
            except Exception as err:  # noqa: BLE001
                print(f"linrec: the C++ kernels were not compiled at install ({err}); they build on first use")

    cmdclass = {"build_ext": OptionalBuild.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
