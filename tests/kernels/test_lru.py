"""The LRU scan (kernels/lru.py) against the plain step-by-step recurrence h_t = lambda h_{t-1} + gamma u_t: values and
fp64 gradients, causal and bidirectional, with padding; the parametrisation stays stable."""

import pytest
import torch

from models.attention.kernels.lru import lru_lambda, lru_parameters, lru_scan

B, N, P = 2, 13, 5


def _recurrence(u, nu_log, theta_log, mask, causal):
    lam = lru_lambda(nu_log, theta_log).to(u.dtype)
    gamma = torch.sqrt(1 - lam.abs() ** 2).to(u.dtype)
    u = u * gamma * mask[..., None]
    forward, state = [], torch.zeros_like(u[:, 0])
    for t in range(u.shape[1]):
        state = lam * state + u[:, t]
        forward.append(state)
    out = torch.stack(forward, 1)
    if not causal:
        backward, state = [], torch.zeros_like(u[:, 0])
        for t in reversed(range(u.shape[1])):
            state = lam * state + u[:, t]
            backward.append(state)
        out = out + torch.stack(backward[::-1], 1) - u
    return out * mask[..., None]


def _inputs():
    torch.manual_seed(0)
    u = torch.complex(torch.randn(B, N, P, dtype=torch.float64), torch.randn(B, N, P, dtype=torch.float64))
    u.requires_grad_(True)
    nu_log, theta_log = (p.double().requires_grad_(True) for p in lru_parameters(P))
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, :4] = False  # left padding
    mask[1, -3:] = False  # right padding
    return u, nu_log, theta_log, mask


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("chunk", [1, 4, 5, 32])
def test_scan_equals_the_recurrence_in_values_and_gradients(causal, chunk):
    u, nu_log, theta_log, mask = _inputs()
    got = lru_scan(u, nu_log, theta_log, causal=causal, padding_mask=mask, chunk_size=chunk)
    want = _recurrence(u, nu_log, theta_log, mask, causal)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    weights = torch.randn(B, N, P, dtype=torch.float64)
    loss_got, loss_want = (got.real * weights).sum(), (want.real * weights).sum()
    for a, b in zip(torch.autograd.grad(loss_got, (u, nu_log, theta_log)),
                    torch.autograd.grad(loss_want, (u, nu_log, theta_log)), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_the_parametrisation_is_stable_and_starts_on_the_ring():
    nu_log, theta_log = lru_parameters(4096, r_min=0.8, r_max=0.99)
    radius = lru_lambda(nu_log, theta_log).abs()
    assert radius.min() >= 0.8 - 1e-6 and radius.max() <= 0.99 + 1e-6
    wild = lru_lambda(torch.randn(100) * 10, torch.randn(100) * 10).abs()  # any parameters: never outside the circle
    assert (wild <= 1).all()


def test_a_long_constant_input_keeps_a_bounded_state():
    """gamma = sqrt(1 - |lambda|^2) keeps the state's scale: a constant input for 4096 steps stays O(1)."""
    nu_log, theta_log = lru_parameters(8)
    u = torch.complex(torch.ones(1, 4096, 8), torch.zeros(1, 4096, 8))
    states = lru_scan(u, nu_log, theta_log, chunk_size=64)
    assert torch.isfinite(states.real).all() and states.abs().max() < 20
