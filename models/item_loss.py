"""Cross-entropy over the whole item catalogue without keeping the (positions x items) logits.

The recommenders score every training target against every item through the tied item
embeddings: logits = states @ items^T, a (T, I) matrix — ~50 M floats per ML-1M batch.
Through autograd it is written, log-softmaxed, kept for backward, filled with zeros for the
NLL gradient and read back twice. Here each chunk of rows computes its logits, loss and
gradient (softmax minus one-hot, the closed form of d loss / d logits) in one go while the
chunk is in cache, with one exp pass over it, and only the (T, d) and (I, d) gradients are
kept for backward. Same
mathematics as F.cross_entropy(states @ items.T, targets); a test checks values and fp64
gradients against it.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_ROWS = 512  # rows x 3,706 items x 4 bytes ~ 7.6 MB per chunk: near the L2 size of current server cores


class _FullSoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        rows = states.shape[0]
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_states = torch.empty_like(states) if need_grad else None  # (T, d), for the loss summed over rows
        grad_items = torch.zeros_like(items) if need_grad else None  # (I, d)
        total = torch.zeros((), dtype=torch.float64, device=states.device)
        for start in range(0, rows, chunk_rows):
            chunk_states, chunk_targets = states[start : start + chunk_rows], targets[start : start + chunk_rows]
            logits = chunk_states @ items.T  # (c, I)
            target_logits = logits[torch.arange(logits.shape[0], device=logits.device), chunk_targets]  # (c,)
            peak = logits.amax(dim=1, keepdim=True)  # (c, 1): exp never overflows
            # one exp pass serves the loss and the gradient (logsumexp and then softmax would make two)
            unnormalised = logits.sub_(peak).exp_()  # (c, I), in place
            normaliser = unnormalised.sum(dim=1, keepdim=True)  # (c, 1)
            total += (peak + normaliser.log()).squeeze(1).sub_(target_logits).sum(dtype=torch.float64)
            if need_grad:
                # d loss / d logits = softmax - one_hot(target); the softmax's 1 / normaliser is folded into the
                # (c, d) factors and the one-hot part is a gather / scatter of d-wide rows: no more (c, I) passes
                inverse = normaliser.reciprocal()  # (c, 1)
                grad_chunk = grad_states[start : start + chunk_rows]
                torch.mm(unnormalised, items, out=grad_chunk)
                grad_chunk.mul_(inverse).sub_(items[chunk_targets])
                grad_items.addmm_(unnormalised.T, chunk_states * inverse)
                grad_items.index_add_(0, chunk_targets, chunk_states, alpha=-1.0)
        ctx.rows = rows
        ctx.save_for_backward(grad_states, grad_items)
        return (total / max(rows, 1)).to(states.dtype)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_states, grad_items = ctx.saved_tensors
        scale = grad_loss / max(ctx.rows, 1)  # the loss is the mean over rows
        return grad_states * scale, grad_items * scale, None, None


def full_softmax_cross_entropy(
    states: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> torch.Tensor:
    """mean over rows of -log softmax(states @ items.T)[row, target].

    states (T, d), items (I, d), targets (T,) in [0, I)."""
    if states.dim() != 2 or items.dim() != 2 or states.shape[1] != items.shape[1] or targets.shape != states.shape[:1]:
        raise ValueError(
            f"expected states (T, d), items (I, d), targets (T,); got {tuple(states.shape)}, {tuple(items.shape)}, "
            f"{tuple(targets.shape)}"
        )
    return _FullSoftmaxCrossEntropy.apply(states, items, targets, chunk_rows)
