"""Inputs, a relative-error check and stand-ins for optional CUDA packages, shared by the kernel tests."""

import sys
import types

import torch

B, H, N, D = 2, 2, 13, 8


def _inputs(dtype=torch.float32):
    q, k, v = (torch.randn(B, H, N, D, dtype=dtype) for _ in range(3))
    real = torch.ones(B, N, dtype=torch.bool)
    real[0, :4] = False  # left padding (SASRec style)
    real[1, -3:] = False  # right padding (RecBole / BERT4Rec style)
    return q, k, v, real


def _close(actual, expected, rtol=1e-4):
    scale = expected.abs().max().clamp_min(1e-6)
    err = ((actual - expected).abs().max() / scale).item()
    assert err < rtol, f"relative error {err:.2e} >= {rtol}"


def install_stand_in(monkeypatch, dotted: str, **functions) -> None:
    """Make `import dotted` (and its parents) give a module holding `functions`, for this test only: a stand-in
    for a CUDA package, written from its documented contract, checks how our code maps onto it."""
    parts = dotted.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        module = types.ModuleType(name)
        if depth == len(parts):
            for attribute, function in functions.items():
                setattr(module, attribute, function)
        monkeypatch.setitem(sys.modules, name, module)
