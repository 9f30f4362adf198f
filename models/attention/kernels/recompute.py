"""A memory-saving backward for any kernel: heads in blocks, each recomputed during backward."""

from __future__ import annotations

import torch


def recompute_in_blocks(
    kernel,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    heads_per_block: int,
) -> torch.Tensor:
    """Run `kernel(q, k, v, mask)` one (batch element, head group) block at a time, keeping
    nothing but q, k, v for the backward, which recomputes each block's forward.

    Peak memory becomes the output plus one block's intermediates (instead of every
    intermediate of the whole batch), for one extra forward pass. The kernel must be
    deterministic and treat batch elements and heads independently (all of ours do).
    """
    return _BlockwiseRecompute.apply(kernel, heads_per_block, key_padding_mask, q, k, v)


def _blocks(q: torch.Tensor, heads_per_block: int):
    for b in range(q.shape[0]):
        for h in range(0, q.shape[1], heads_per_block):
            yield slice(b, b + 1), slice(h, h + heads_per_block)


class _BlockwiseRecompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, heads_per_block, mask, q, k, v):
        out = v.new_empty(v.shape)
        for batch, heads in _blocks(q, heads_per_block):
            block_mask = None if mask is None else mask[batch]
            out[batch, heads] = kernel(q[batch, heads], k[batch, heads], v[batch, heads], block_mask)
        ctx.save_for_backward(q, k, v)
        ctx.kernel, ctx.heads_per_block, ctx.mask = kernel, heads_per_block, mask
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (q, k, v)]
        for batch, heads in _blocks(q, ctx.heads_per_block):
            block_mask = None if ctx.mask is None else ctx.mask[batch]
            with torch.enable_grad():
                inputs = [t[batch, heads].detach().requires_grad_(True) for t in (q, k, v)]
                out = ctx.kernel(*inputs, block_mask)
                block_grads = torch.autograd.grad(out, inputs, grad_out[batch, heads])
            for grad, block_grad in zip(grads, block_grads, strict=False):
                grad[batch, heads] = block_grad
        return None, None, None, *grads
