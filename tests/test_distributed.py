"""Data-parallel training under torchrun (gloo on CPU, loopback only) against one process."""

import json
import os
import subprocess
import sys

import pytest
import torch

from bench.training import distributed
from bench.training.distributed import Replicas

TINY = (
    "--dataset synthetic --synthetic-users 200 --synthetic-items 50 --seq-len 20 --hidden 16 --heads 2 --layers 1 "
    "--inner 32 --dropout 0 --epochs 3 --patience 5 --batch-size 32 --eval-batch-size 50 --threads 1 --seed 3 "
    "--no-progress"
).split()


def _train(out, *extra, processes: int | None = None):
    """`python -m bench train` alone, or under torchrun with `processes` ranks; returns results.json and weights."""
    launcher = [sys.executable, "-m", "bench"]
    if processes:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        launcher += ["-m", "bench"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, "train", *TINY, *extra, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    return results, torch.load(out / "checkpoint.pt", weights_only=True)["model"], done.stdout


@pytest.mark.cluster
@pytest.mark.parametrize("model", ["sasrec", "bert4rec"])
def test_torchrun_matches_one_process(tmp_path, model):
    alone, alone_weights, _ = _train(tmp_path / "alone", "--model", model)
    one, one_weights, _ = _train(tmp_path / "one", "--model", model, processes=1)
    two, two_weights, stdout = _train(tmp_path / "two", "--model", model, processes=2)

    # torchrun with one process: the same computation, bit for bit
    assert [h["loss"] for h in one["history"]] == [h["loss"] for h in alone["history"]]
    assert all(torch.equal(one_weights[name], alone_weights[name]) for name in alone_weights)
    assert one["test"] == alone["test"] and one["world_size"] == 1

    # two processes: each rank keeps half of every global batch; gradients summed in another order only
    for a, b in zip(two["history"], alone["history"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-6
        assert a["valid"] == b["valid"]  # metrics from integer ranks, gathered in order: identical
    assert max((two_weights[n] - alone_weights[n]).abs().max().item() for n in alone_weights) < 1e-6
    assert two["test"] == alone["test"] and two["best_epoch"] == alone["best_epoch"]
    assert two["world_size"] == 2 and two["parameters_digest"] != alone["parameters_digest"]
    assert stdout.count("best epoch") == 1  # rank 0 alone reports


@pytest.mark.cluster
def test_torchrun_resumes_from_its_checkpoint(tmp_path):
    full, full_weights, _ = _train(tmp_path / "full", processes=2)
    _train(tmp_path / "cut", "--epochs", "2", processes=2)
    resumed, resumed_weights, _ = _train(tmp_path / "cut", "--resume", processes=2)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    assert all(torch.equal(resumed_weights[n], full_weights[n]) for n in full_weights)


def test_shares_cover_the_batch_and_their_weights_give_the_global_mean():
    targets = torch.tensor([[0, 3, 4], [5, 6, 7], [0, 0, 2], [1, 2, 3], [0, 9, 8]])
    batch = {"items": torch.arange(15).view(5, 3), "targets": targets}
    per_target_loss = torch.rand(5, 3)
    global_mean = per_target_loss[targets != 0].mean()
    for world in (1, 2, 3, 5, 7):
        shares = [distributed.share(batch, Replicas(rank=r, world=world)) for r in range(world)]
        assert torch.equal(torch.cat([share["items"] for share, _ in shares]), batch["items"])
        combined, row = 0.0, 0
        for share, weight in shares:
            rows = share["targets"].shape[0]
            local = per_target_loss[row : row + rows][share["targets"] != 0]
            combined += (local.mean() * weight if local.numel() else 0.0) / world  # DDP averages over ranks
            row += rows
        assert torch.allclose(torch.as_tensor(combined), global_mean)


def test_a_share_without_targets_still_reaches_every_parameter():
    from models import EncoderConfig, SASRec

    model = SASRec(EncoderConfig(num_items=10, seq_len=6, hidden=8, heads=2, layers=1, inner=8, dropout=0.0))
    loss = model({"items": torch.zeros(0, 6, dtype=torch.long), "targets": torch.zeros(0, 6, dtype=torch.long)}, 0.0)
    loss.backward()
    assert loss.item() == 0.0 and all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_drifted_replicas_are_caught(monkeypatch):
    model = torch.nn.Linear(2, 2)
    monkeypatch.setattr(
        distributed.dist, "all_gather_object", lambda out, digest: out.__setitem__(slice(None), [digest, "other"])
    )
    with pytest.raises(RuntimeError, match="replicas drifted apart"):
        distributed.check_replicas(model, Replicas(rank=0, world=2, launched=True))
    monkeypatch.setattr(
        distributed.dist, "all_gather_object", lambda out, digest: out.__setitem__(slice(None), [digest] * 2)
    )
    assert distributed.check_replicas(model, Replicas(rank=0, world=2, launched=True)) == distributed.parameters_digest(
        model
    )


@pytest.mark.cluster
def test_a_rank_stopped_mid_training_ends_the_run_in_bounded_time_and_the_checkpoint_resumes(tmp_path):
    import contextlib
    import signal
    import time

    import psutil

    out = tmp_path / "run"
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "LINREC_DIST_TIMEOUT_S": "20"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "bench"]
    long = [a if a != "3" else "400" for a in TINY]  # --epochs 400: still training when a rank is killed
    run = subprocess.Popen([*launcher, "train", *long, "--patience", "400", "--out", str(out)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (out / "checkpoint.pt").exists(), "no epoch finished"
    ranks = [p for p in psutil.Process(run.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    assert ranks, "rank 1 not found"
    # stopped, not killed: the process stays alive, so torchrun's agent sees no failure and only the collective
    # timeout (LINREC_DIST_TIMEOUT_S, here 20 s; torch's default is 30 minutes) ends the surviving rank's wait
    ranks[0].send_signal(signal.SIGSTOP)
    started = time.monotonic()
    try:
        _, err = run.communicate(timeout=180)  # bounded: no hang
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):  # torchrun usually ends it first
            ranks[0].send_signal(signal.SIGKILL)
    assert run.returncode != 0 and time.monotonic() - started < 180
    # the last checkpoint resumes: stop at once (a zero time budget), testing the best epoch so far
    finished = subprocess.run([*launcher, "train", *long, "--patience", "400", "--max-minutes", "0", "--resume",
                               "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["epochs_run"] >= 1
