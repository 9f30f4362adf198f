"""Direct dense transcriptions of the formulas in docs/mechanisms.md, for tests only.

Written for clarity, not speed: N x N matrices and Python loops over positions.
Shapes: q, k, v (B, H, N, d); real (B, N) bool (True = real item) or None.
"""

import math

import torch
import torch.nn.functional as F


def _real(real, q):
    return torch.ones(q.shape[0], q.shape[2], dtype=torch.bool) if real is None else real


def _allowed(real, causal, n):
    allowed = real[:, None, None, :].expand(-1, 1, n, n)  # (B, 1, N, N)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    return allowed


def _visible_keys(real, causal):
    """(b, i, keys visible to query i) for every real query: its real keys, j <= i when causal."""
    n = real.shape[1]
    for b in range(real.shape[0]):
        for i in range(n):
            if real[b, i]:
                yield b, i, [j for j in range(n) if real[b, j] and (j <= i or not causal)]


def _zero_padded_queries(out, real):
    return out * real[:, None, :, None]


def softmax(q, k, v, causal=False, real=None):
    real = _real(real, q)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~_allowed(real, causal, q.shape[2]), float("-inf"))
    probs = torch.nan_to_num(scores.softmax(-1))  # fully masked (padded) rows -> 0
    return _zero_padded_queries(probs @ v, real)


def linrec_paper(q, k, v, causal=False, real=None):
    """The paper form, bidirectional and causal (exact prefix), one query at a time."""
    real = _real(real, q)
    d = q.shape[-1]
    fq, fk = F.elu(q), F.elu(k)
    out = torch.zeros_like(v)
    for b, i, keys in _visible_keys(real, causal):
        kk, vv = fk[b, :, keys], v[b, :, keys]  # (H, n, d)
        q_row = fq[b, :, i] / (math.sqrt(d) * fq[b, :, i].norm(dim=-1, keepdim=True))  # (H, d)
        k_col = kk / (math.sqrt(len(keys)) * kk.norm(dim=-2, keepdim=True))  # (H, n, d)
        weights = torch.einsum("hd,hnd->hn", q_row, k_col)
        out[b, :, i] = torch.einsum("hn,hne->he", weights, vv)
    return out


def linrec_official(q, k, v, causal=False, real=None):
    """The authors' released form with masks honoured: per-token L2 norms of elu(Q), elu(K), / sqrt(d)."""
    real = _real(real, q)
    qh, kh = F.normalize(F.elu(q), dim=-1), F.normalize(F.elu(k), dim=-1)
    weights = (qh @ kh.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    weights = weights * _allowed(real, causal, q.shape[2])
    return _zero_padded_queries(weights @ v, real)


def linear(q, k, v, causal=False, real=None, eps=1e-6):
    real = _real(real, q)
    weights = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)
    weights = weights * _allowed(real, causal, q.shape[2])
    return _zero_padded_queries(weights @ v / (weights.sum(-1, keepdim=True) + 0).clamp_min(eps), real)


def efficient(q, k, v, causal=False, real=None):
    """Shen et al.: softmax over each query's features; over the (prefix) positions per key feature."""
    real = _real(real, q)
    q_soft = q.softmax(-1)
    out = torch.zeros_like(v)
    for b, i, keys in _visible_keys(real, causal):
        k_soft = k[b, :, keys].softmax(dim=-2)  # (H, n, d), over positions
        out[b, :, i] = torch.einsum("hd,hnd,hne->he", q_soft[b, :, i], k_soft, v[b, :, keys])
    return out


def favor_features(x, projection):
    """The paper's positive random features: exp(w.x - |x|^2/2) / sqrt(m), x scaled by d^-1/4."""
    x = x.double() * x.shape[-1] ** -0.25
    return (x @ projection.double().T - 0.5 * x.square().sum(-1, keepdim=True)).exp() / projection.shape[0] ** 0.5


def performer(q, k, v, projection, causal=False, real=None):
    real = _real(real, q)
    weights = (favor_features(q, projection) @ favor_features(k, projection).transpose(-1, -2)).to(q.dtype)
    weights = weights * _allowed(real, causal, q.shape[2])
    # rows with no visible key (padded queries) are 0/0: set to 0
    return _zero_padded_queries(torch.nan_to_num(weights @ v / weights.sum(-1, keepdim=True)), real)


def linformer(q, k, v, e_proj, f_proj, real=None):
    real = _real(real, q)
    n = q.shape[2]
    k, v = k * real[:, None, :, None], v * real[:, None, :, None]
    k_low = torch.einsum("pn,bhnd->bhpd", e_proj[:, :n], k)
    v_low = torch.einsum("pn,bhnd->bhpd", f_proj[:, :n], v)
    probs = (q @ k_low.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
    return _zero_padded_queries(probs @ v_low, real)
