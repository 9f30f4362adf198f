import argparse
import json

import pytest
import torch

from bench.timing import gate


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()  # gate.main sets one thread for the whole process
    yield
    torch.set_num_threads(threads)


def _args(tmp_path, **kw):
    values = {
        "baseline": str(tmp_path / "baseline.json"),
        "update_baseline": False,
        "rounds": 1,
        "tolerance": None,
        "threads": 1,
        "slowdown": None,
    }
    values.update(kw)
    return argparse.Namespace(**values)


def test_gate_writes_a_baseline_then_passes_and_fails_on_a_regression(tmp_path, monkeypatch):
    monkeypatch.setattr(gate, "SHAPE", {"batch_size": 1, "heads": 2, "head_dim": 4, "seq_len": 16})
    assert gate.main(_args(tmp_path, update_baseline=True)) == 0
    baseline = json.loads((tmp_path / "baseline.json").read_text())
    assert "linrec|bidir|infer" in baseline["ratios"] and "linrec|bidir" in baseline["ratios"]
    assert gate.main(_args(tmp_path, tolerance=1000.0)) == 0
    baseline["ratios"] = {
        key: ratio / 1e4 for key, ratio in baseline["ratios"].items()
    }  # as if everything had been 10^4x faster
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    assert gate.main(_args(tmp_path, tolerance=1.6)) == 1


def test_the_gate_fails_when_it_slows_a_mechanism_down_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(gate, "SHAPE", {"batch_size": 2, "heads": 2, "head_dim": 8, "seq_len": 256})
    assert gate.main(_args(tmp_path, update_baseline=True, rounds=3)) == 0
    assert gate.main(_args(tmp_path, rounds=3, slowdown="linrec=12", tolerance=3.0)) == 1
