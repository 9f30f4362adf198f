import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _short_sweep_waits(monkeypatch):
    """Tests time tiny cells on a busy CI machine: interleave briefly and never wait for quiet."""
    monkeypatch.setattr("bench.sweep.QUIET_WAIT_S", 0.0)
    monkeypatch.setattr("bench.sweep.INTERLEAVE_S", 0.2)
