"""Data-parallel training under `torchrun` (torch.distributed + DistributedDataParallel).

    torchrun --standalone --nproc-per-node 2 -m bench train ...      # one machine
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29400 -m bench train ...             # several (same command on each)

What stays as in one process, and how:
- `--batch-size` is the global batch. Every rank draws the same global batch from the same
  seeded RNG (BERT4Rec's masks included) and keeps a contiguous block of its rows (`share`),
  so padding and masks are those of the one-process batch.
- Each rank's mean loss is weighted by world x (its targets / the batch's targets) before
  backward; DDP averages gradients over ranks, so the step is the one-process step.
- Evaluation batches are dealt to ranks round robin and their ranks gathered back in batch
  order (`gather_in_order`), so every rank computes the same metrics from the same numbers
  and takes the same early-stopping decision (a rank that decided otherwise would hang the
  next collective).
- Rank 0 alone writes checkpoints and results (atomically), then all ranks meet at a barrier.

Outside torchrun (no WORLD_SIZE in the environment) nothing here touches torch.distributed.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import psutil
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Replicas:
    """Where this process sits among the data-parallel replicas."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    launched: bool = False  # started by torchrun (a process group exists, even with one process)

    @property
    def writer(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


COLLECTIVE_TIMEOUT_S = 300.0  # longer than any epoch's gap between collectives (evaluation included) on a CPU


def setup(device: str) -> tuple[Replicas, str]:
    """Join the process group torchrun prepared; returns the replicas and this rank's device.

    nccl on CUDA (one GPU per process: cuda:LOCAL_RANK), gloo on CPU."""
    if not launched_by_torchrun():
        return Replicas(), device
    env = os.environ
    replicas = Replicas(
        rank=int(env["RANK"]),
        world=int(env["WORLD_SIZE"]),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world=int(env.get("LOCAL_WORLD_SIZE", 1)),
        launched=True,
    )
    if device.startswith("cuda"):
        device = f"cuda:{replicas.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # a rank that dies leaves the others waiting in a collective: they give up after this many seconds (torch's
        # default is 30 minutes) with an error, and torchrun stops the rest; --resume continues from the checkpoint
        timeout = datetime.timedelta(seconds=float(env.get("LINREC_DIST_TIMEOUT_S", COLLECTIVE_TIMEOUT_S)))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timeout)
    return replicas, device


def teardown(replicas: Replicas) -> None:
    if replicas.launched and dist.is_initialized():
        dist.destroy_process_group()


def job_process(replicas: Replicas) -> psutil.Process:
    """The root of this job's processes on this node: the launcher whose children are the node's ranks
    (torchrun's agent), else this process."""
    me = psutil.Process()
    return (me.parent() or me) if replicas.launched else me


def default_threads(replicas: Replicas) -> int:
    """CPU threads per process: the cores shared among the processes on this node."""
    return max(1, (os.cpu_count() or 1) // replicas.local_world)


def share(batch: dict, replicas: Replicas) -> tuple[dict, float]:
    """This rank's rows of a global batch and the weight that makes the averaged gradient the global one.

    Every tensor of the batch is row-aligned (B, ...); targets == 0 marks positions without a target."""
    if replicas.world == 1:
        return batch, 1.0
    rows = batch["targets"].shape[0]
    low, high = rows * replicas.rank // replicas.world, rows * (replicas.rank + 1) // replicas.world
    mine = {name: tensor[low:high] for name, tensor in batch.items()}
    targets_all = int((batch["targets"] != 0).sum())
    targets_mine = int((mine["targets"] != 0).sum())
    return mine, replicas.world * targets_mine / max(targets_all, 1)


def all_reduce(values: list[float], replicas: Replicas, op: str = "sum") -> list[float]:
    """Element-wise sum or max over ranks (float64 on CPU: gloo; moved to the device for nccl)."""
    if replicas.world == 1:
        return list(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.cpu().tolist()


def gather_in_order(mine: dict[int, object], count: int, replicas: Replicas) -> list[object]:
    """Items keyed by index 0..count-1, each computed on one rank -> all of them in index order, on every rank."""
    if replicas.world == 1:
        return [mine[i] for i in range(count)]
    parts: list[dict] = [None] * replicas.world  # type: ignore[list-item]
    dist.all_gather_object(parts, mine)
    merged = {index: item for part in parts for index, item in part.items()}
    return [merged[i] for i in range(count)]


def mine(index: int, replicas: Replicas) -> bool:
    """Round-robin ownership of work item `index`."""
    return index % replicas.world == replicas.rank


def barrier(replicas: Replicas) -> None:
    if replicas.launched:
        dist.barrier()


def broadcast_object(value, replicas: Replicas):
    if replicas.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parameters_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: equal on all replicas, or they have drifted apart."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_replicas(model: torch.nn.Module, replicas: Replicas) -> str:
    """The parameters' digest, after checking every rank holds the same one (raises if not)."""
    digest = parameters_digest(model)
    if replicas.world == 1:
        return digest
    every = [None] * replicas.world
    dist.all_gather_object(every, digest)
    if len(set(every)) > 1:
        raise RuntimeError(f"replicas drifted apart: parameter digests by rank {every}")
    return digest
