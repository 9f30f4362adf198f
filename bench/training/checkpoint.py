"""A training run's checkpoints: written atomically each epoch (checkpoint.pt, and best.pt when validation
improved), read back with tensors only, and a resumed run's state restored from them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..environment import code_version
from ..schema import upgrade
from . import distributed
from .config import fixed_settings


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: an interruption never leaves a torn checkpoint


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by this module; tensors and plain containers only (no code runs on load)."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torn, empty, foreign or crafted files all end here
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{path}: not a readable checkpoint of this suite ({type(err).__name__}: {reason}); "
            "delete it (the run restarts) or use another --out"
        ) from None


def start_state(config, model, optimizer, replicas, out: Path, *, resume: bool, log: bool) -> dict:
    """The run's state: fresh, or the checkpoint's (model, optimizer and random state restored), with the code of
    this start appended to the code versions that trained it."""
    checkpoint_path = out / "checkpoint.pt"
    state = {"epoch": 0, "best_valid": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "train_seconds": 0.0}
    started_code = code_version()  # read now: the tree may change while the run trains
    if resume and not checkpoint_path.exists() and log:
        print(f"--resume: no checkpoint in {out}: starting from scratch", flush=True)
    if resume and checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path)
        if fixed_settings(upgrade(checkpoint["config"])) != fixed_settings(asdict(config)):
            raise ValueError(
                f"--resume: {checkpoint_path} was written with a different configuration; use another --out or drop "
                "--resume"
            )
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rng_by_rank = checkpoint.get("torch_rng_by_rank") or [checkpoint["torch_rng"]]
        torch.set_rng_state(rng_by_rank[replicas.rank] if len(rng_by_rank) == replicas.world else rng_by_rank[0])
        state = checkpoint["state"]
    # the code of every start of this run: the first trained it from scratch, a later one resumed it
    state["code_versions"] = state.get("code_versions") or []
    if started_code not in state["code_versions"]:
        state["code_versions"].append(started_code)
    elif not resume and replicas.writer:
        for stale in ("checkpoint.pt", "best.pt", "results.json"):
            (out / stale).unlink(missing_ok=True)
    distributed.barrier(replicas)
    return state


def save_epoch(out: Path, model, optimizer, state: dict, config, replicas, improved: bool) -> None:
    """best.pt when the epoch improved, checkpoint.pt always (written by the writer rank only)."""
    rng_by_rank = distributed.gather_in_order({replicas.rank: torch.get_rng_state()}, replicas.world, replicas)
    distributed.check_replicas(model, replicas)
    if replicas.writer:
        if improved:
            _save(out / "best.pt", {"model": model.state_dict(), "epoch": state["epoch"]})
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "torch_rng": rng_by_rank[0]}
        checkpoint.update(torch_rng_by_rank=rng_by_rank, state=state, config=asdict(config))
        _save(out / "checkpoint.pt", checkpoint)
    distributed.barrier(replicas)
