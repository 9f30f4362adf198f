"""The install-time build of LinRec's fused C++ kernel (everything else is in pyproject.toml).

`pip install .` compiles it for this machine: pyproject.toml puts torch in the build environment. With
`--no-build-isolation` it compiles against the torch already installed instead (a CPU-only torch, say, where build
isolation would fetch PyPI's default build). A build the running torch cannot load (another torch version), a stale
one (the source changed since) or none at all (no compiler: the install still succeeds) is left aside: the kernel
then builds on first use (about a minute, once per machine), or LinRec runs its PyTorch path and says so once.
"""

import hashlib
from pathlib import Path

from setuptools import setup

KERNELS = Path("models/attention/kernels")
# what the loader compares (models/attention/kernels/linrec_cpp.py, source_digest): a stale build is not loaded
DIGEST = hashlib.sha256((KERNELS / "linrec_cpu.cpp").read_bytes()).hexdigest()[:12]

ext_modules, cmdclass = [], {}
try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:
    pass
else:
    ext_modules = [
        CppExtension(
            "models.attention.kernels._linrec_cpu",
            [str(KERNELS / "linrec_cpu_module.cpp")],
            extra_compile_args=[
                "-O3",
                "-march=native",
                "-fopenmp",
                "-fassociative-math",
                "-fno-signed-zeros",
                "-fno-trapping-math",
                f'-DLINREC_SOURCE_DIGEST="{DIGEST}"',
            ],
            extra_link_args=["-fopenmp"],
        )
    ]

    class OptionalBuild(BuildExtension):
        """A failed compile (no compiler, no headers) never fails the install: the kernel builds on first use, or
        LinRec runs its PyTorch path and says so."""

        def run(self):
            try:
                super().run()
            except Exception as err:  # noqa: BLE001
                print(f"linrec: the fused C++ kernel was not compiled at install ({err}); it builds on first use")

    cmdclass = {"build_ext": OptionalBuild.with_options(use_ninja=False)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
