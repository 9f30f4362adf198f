"""pytest-benchmark group of the training loss: the recommenders' full-catalogue cross-entropy, forward and backward.

    pytest tests/benchmarks/test_item_loss_speed.py --benchmark-only --benchmark-group-by=group

Every training epoch spends about half its time here on ML-1M (3,416 items): the fused chunked loss
(models/item_loss.py) against what it replaces, torch's F.cross_entropy over the whole (T, I) logits matrix.
T = 4,096 rows (a batch of 128 histories of 32 positions; a batch at N = 200 has ~25,000), d = 64, one thread,
as the training presets run (--threads 1).
"""

import pytest
import torch
import torch.nn.functional as F

from bench.environment import environment
from models.item_loss import full_softmax_cross_entropy

ROWS, DIM = 4096, 64


def _torch_cross_entropy(states, items, targets):
    return F.cross_entropy(states @ items.T, targets)


IMPLEMENTATIONS = {"fused": full_softmax_cross_entropy, "torch": _torch_cross_entropy}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("num_items", [3416, 12101], ids=["ml-1m", "beauty"])
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_item_loss(benchmark, implementation, num_items, one_thread):
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(ROWS, DIM, generator=generator, requires_grad=True)
    items = (0.1 * torch.randn(num_items, DIM, generator=generator)).requires_grad_()
    targets = torch.randint(0, num_items, (ROWS,), generator=generator)
    loss_of = IMPLEMENTATIONS[implementation]

    def step():
        states.grad = items.grad = None
        loss_of(states, items, targets).backward()

    benchmark.group = f"item loss fwd_bwd T={ROWS} I={num_items} d={DIM}"
    benchmark.extra_info.update(
        {"rows": ROWS, "num_items": num_items, "dim": DIM, "threads": 1}
        | {k: environment()[k] for k in ("torch", "device")}
    )
    benchmark.pedantic(step, rounds=7, warmup_rounds=1, iterations=1)
