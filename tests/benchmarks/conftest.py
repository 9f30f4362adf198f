"""Benchmarks run only with --benchmark-only (the normal test command skips them)."""

import pytest


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="benchmark: run `pytest tests/benchmarks --benchmark-only`")
    for item in items:
        if "benchmarks" in str(item.fspath):
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    """Saved benchmark runs record torch, threads, device and commit next to the CPU info."""
    from bench.environment import environment

    machine_info.update({f"linrec_{k}": v for k, v in environment().items() if k != "timestamp"})
