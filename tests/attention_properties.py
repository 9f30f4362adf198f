"""Measurable properties of an attention layer (used by the tests, and tested to bite).

Each function returns a relative violation: max |change| / max |output|, 0 when the
property holds exactly.
"""

import torch


def _relative(changed: torch.Tensor, reference: torch.Tensor) -> float:
    return ((changed - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


@torch.no_grad()
def causality_violation(layer, x: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Change every input after position t; outputs at positions <= t must not move."""
    base = layer(x, mask)
    worst = 0.0
    for t in range(x.shape[1] - 1):
        perturbed = x.clone()
        perturbed[:, t + 1 :] = torch.randn_like(perturbed[:, t + 1 :]) * 3
        worst = max(worst, _relative(layer(perturbed, mask)[:, : t + 1], base[:, : t + 1]))
    return worst


@torch.no_grad()
def padded_content_violation(layer, x: torch.Tensor, mask: torch.Tensor) -> float:
    """Replace what sits at padded positions; real positions' outputs must not move."""
    base = layer(x, mask)
    noise = torch.randn_like(x) * 10
    changed = layer(torch.where(mask[..., None], x, noise), mask)
    return _relative(changed[mask], base[mask])


@torch.no_grad()
def extra_padding_violation(layer, x: torch.Tensor, mask: torch.Tensor, extra: int, side: str) -> float:
    """Add `extra` padded positions on the left or right; real outputs must not move."""
    base = layer(x, mask)
    pad_x = torch.randn(x.shape[0], extra, x.shape[2], dtype=x.dtype) * 10
    pad_mask = torch.zeros(x.shape[0], extra, dtype=torch.bool)
    if side == "left":
        out = layer(torch.cat([pad_x, x], 1), torch.cat([pad_mask, mask], 1))[:, extra:]
    else:
        out = layer(torch.cat([x, pad_x], 1), torch.cat([mask, pad_mask], 1))[:, : x.shape[1]]
    return _relative(out[mask], base[mask])
