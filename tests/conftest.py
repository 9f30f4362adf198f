import os
from pathlib import Path

import pytest
import torch

from bench.plugins import load_plugins

# a mechanism defined outside models/, loaded as users load theirs: every registry-driven test sees it
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
load_plugins(["outside_mechanism"])


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run the benchmark suite (tests/benchmarks) as --benchmark-only does; pytest-benchmark's flags apply",
    )


def pytest_configure(config):
    if config.getoption("--benchmark"):
        config.option.benchmark_only = True  # pytest-benchmark then skips every test that is not a benchmark


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _short_sweep_waits(monkeypatch):
    """Tests time tiny cells on a busy CI machine: interleave briefly and never wait for quiet."""
    monkeypatch.setattr("bench.timing.sweep.QUIET_WAIT_S", 0.0)
    monkeypatch.setattr("bench.timing.sweep.INTERLEAVE_S", 0.2)


@pytest.fixture
def registry_restored(monkeypatch):
    """A test that loads a plugin (late_plugin, misbehaving_plugin, ...) registers its names for itself only: the
    registry, the plugin list handed to workers and the imported modules are as before afterwards."""
    import sys

    from bench.plugins import ENV
    from models.attention import base

    registry, configs, modules = dict(base._REGISTRY), dict(base._CONFIGS), set(sys.modules)
    monkeypatch.setenv(ENV, os.environ.get(ENV, ""))
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(registry)
    base._CONFIGS.clear()
    base._CONFIGS.update(configs)
    for name in set(sys.modules) - modules:
        if name.endswith("_plugin"):
            del sys.modules[name]
