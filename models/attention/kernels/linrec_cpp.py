"""LinRec (paper form) as fused C++ passes per (sequence, head), causal and bidirectional, built on first use.

The PyTorch path (kernels/linrec.py) makes a dozen eager passes over (B, H, N, d) tensors (ELU,
prefix norms, row norms, chunked products, each with its own backward); at recommender lengths
(N = 50-200, head dim 16) that memory traffic, not arithmetic, is the cost. Here one loop walks
the sequence once with the d x e state and the d prefix norms in L1:

    forward, i = 1..N:   fk_i = elu(k_i) m_i;  P += fk_i^2;  H += fk_i v_i^T
                         q~_i = elu(q_i) / (sqrt(d) |elu(q_i)| sqrt(n_i) sqrt(P))   (per column)
                         out_i = q~_i^T H                                           (0 on padded rows)
    backward: a forward walk recomputes H, P and q~ and forms dq~_i = H G_i (then dq through the
    norms and ELU); a reverse walk accumulates R = sum_{i>=j} q~_i G_i^T and the suffix sums of the
    prefix-norm gradient, giving dk_j and dv_j = fk_j^T R.
    bidirectional: one walk over the keys builds the column-scaled state W, one over the queries reads
    the outputs; the backward adds a third walk for dk and dv after dW = sum_i r_i fq_i g_i^T.

Batch x heads run in parallel (at::parallel_for, OpenMP). float32 and float64 (for gradcheck).
The PyTorch path stays the reference this kernel is tested against (values, fp64 gradients,
causality, padding); `extension_error()` says why the extension is unavailable (no compiler, ...).
"""

from __future__ import annotations

import functools
import hashlib

import torch
import torch.nn.functional as F

from .common import NORM_EPS

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

// ELU's derivative from its output f = elu(x): 1 where x > 0, exp(x) = f + 1 elsewhere
template <typename T> static inline T elu_grad(T f) { return f > T(0) ? T(1) : f + T(1); }

// q, k: the ELU features elu(q), elu(k) (BH, N, D), computed by vectorised ATen ops before the call;
// v (BH, N, E); real (B, N) with 1 = real item, 0 = padding; heads maps bh -> b.
torch::Tensor causal_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                             int64_t heads, double eps) {
  const int64_t BH = q.size(0), N = q.size(1), D = q.size(2), E = v.size(2);
  auto out = torch::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linrec_causal_forward", [&] {
    const scalar_t *Q = q.data_ptr<scalar_t>(), *K = k.data_ptr<scalar_t>(), *V = v.data_ptr<scalar_t>();
    const scalar_t *M = real.data_ptr<scalar_t>();
    scalar_t *O = out.data_ptr<scalar_t>();
    const scalar_t eps2 = scalar_t(eps * eps);
    at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> H(D * E), P(D), fk(D), qt(D);
      for (int64_t bh = begin; bh < end; ++bh) {
        std::fill(H.begin(), H.end(), scalar_t(0));
        std::fill(P.begin(), P.end(), scalar_t(0));
        const scalar_t *q0 = Q + bh * N * D, *k0 = K + bh * N * D, *v0 = V + bh * N * E;
        const scalar_t *m0 = M + (bh / heads) * N;
        scalar_t *o0 = O + bh * N * E;
        scalar_t count = 0;
        for (int64_t i = 0; i < N; ++i) {
          const scalar_t m = m0[i];
          count += m;
          if (m == scalar_t(0)) continue;  // a padded key adds nothing; its output row stays 0
          const scalar_t *ki = k0 + i * D, *vi = v0 + i * E, *qi = q0 + i * D;
          for (int64_t c = 0; c < D; ++c) { fk[c] = ki[c] * m; P[c] += fk[c] * fk[c]; }
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t f = fk[c];
            scalar_t *h = H.data() + c * E;
            for (int64_t e = 0; e < E; ++e) h[e] += f * vi[e];
          }
          scalar_t sq = 0;
          for (int64_t c = 0; c < D; ++c) { qt[c] = qi[c]; sq += qt[c] * qt[c]; }
          const scalar_t r = scalar_t(1) / std::sqrt(std::max(scalar_t(D) * sq, eps2));
          const scalar_t a = scalar_t(1) / std::sqrt(std::max(count, scalar_t(1)));
          for (int64_t c = 0; c < D; ++c) qt[c] *= r * a / std::sqrt(std::max(P[c], eps2));
          scalar_t *oi = o0 + i * E;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t w = qt[c];
            const scalar_t *h = H.data() + c * E;
            for (int64_t e = 0; e < E; ++e) oi[e] += w * h[e];
          }
        }
      }
    });
  });
  return out;
}

std::vector<torch::Tensor> causal_backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                           torch::Tensor real, int64_t heads, double eps) {
  const int64_t BH = q.size(0), N = q.size(1), D = q.size(2), E = v.size(2);
  auto dq = torch::zeros_like(q), dk = torch::zeros_like(k), dv = torch::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linrec_causal_backward", [&] {
    const scalar_t *G = grad.data_ptr<scalar_t>(), *Q = q.data_ptr<scalar_t>(), *K = k.data_ptr<scalar_t>();
    const scalar_t *V = v.data_ptr<scalar_t>(), *M = real.data_ptr<scalar_t>();
    scalar_t *dQ = dq.data_ptr<scalar_t>(), *dK = dk.data_ptr<scalar_t>(), *dV = dv.data_ptr<scalar_t>();
    const scalar_t eps2 = scalar_t(eps * eps);
    at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> H(D * E), P(D), fk(D), fq(D), dqt(D), R(D * E), suffix(D);
      std::vector<scalar_t> qt(N * D), per_prefix(N * D);  // per position, for the reverse walk
      for (int64_t bh = begin; bh < end; ++bh) {
        std::fill(H.begin(), H.end(), scalar_t(0));
        std::fill(P.begin(), P.end(), scalar_t(0));
        const scalar_t *q0 = Q + bh * N * D, *k0 = K + bh * N * D, *v0 = V + bh * N * E, *g0 = G + bh * N * E;
        const scalar_t *m0 = M + (bh / heads) * N;
        scalar_t count = 0;
        // forward walk: the state as the forward pass saw it, dq, and what the reverse walk needs
        for (int64_t i = 0; i < N; ++i) {
          const scalar_t m = m0[i];
          count += m;
          scalar_t *qti = qt.data() + i * D, *ppi = per_prefix.data() + i * D;
          if (m == scalar_t(0)) {
            std::fill(qti, qti + D, scalar_t(0));
            std::fill(ppi, ppi + D, scalar_t(0));
            continue;
          }
          const scalar_t *ki = k0 + i * D, *vi = v0 + i * E, *qi = q0 + i * D, *gi = g0 + i * E;
          for (int64_t c = 0; c < D; ++c) { fk[c] = ki[c] * m; P[c] += fk[c] * fk[c]; }
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t f = fk[c];
            scalar_t *h = H.data() + c * E;
            for (int64_t e = 0; e < E; ++e) h[e] += f * vi[e];
          }
          scalar_t sq = 0;
          for (int64_t c = 0; c < D; ++c) { fq[c] = qi[c]; sq += fq[c] * fq[c]; }
          const bool row_clamped = scalar_t(D) * sq < eps2;
          const scalar_t r = scalar_t(1) / std::sqrt(std::max(scalar_t(D) * sq, eps2));
          const scalar_t a = scalar_t(1) / std::sqrt(std::max(count, scalar_t(1)));
          scalar_t weighted_sum = 0;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t *h = H.data() + c * E;
            scalar_t s = 0;
            for (int64_t e = 0; e < E; ++e) s += h[e] * gi[e];
            const scalar_t S = scalar_t(1) / std::sqrt(std::max(P[c], eps2));
            dqt[c] = s * S;  // grad_s = dq~ S
            qti[c] = fq[c] * S * r * a;
            const scalar_t weighted = dqt[c] * fq[c];
            weighted_sum += weighted;
            ppi[c] = P[c] < eps2 ? scalar_t(0) : weighted * S * S * r * a;
          }
          const scalar_t row_term = row_clamped ? scalar_t(0) : -scalar_t(D) * r * r * r * a * weighted_sum;
          scalar_t *dqi = dQ + bh * N * D + i * D;
          for (int64_t c = 0; c < D; ++c) dqi[c] = (dqt[c] * r * a + fq[c] * row_term) * elu_grad(qi[c]);
        }
        // reverse walk: R = sum_{i >= j} q~_i G_i^T and the suffix sums of the prefix-norm gradient
        std::fill(R.begin(), R.end(), scalar_t(0));
        std::fill(suffix.begin(), suffix.end(), scalar_t(0));
        for (int64_t j = N - 1; j >= 0; --j) {
          const scalar_t m = m0[j];
          if (m == scalar_t(0)) continue;
          const scalar_t *qtj = qt.data() + j * D, *ppj = per_prefix.data() + j * D, *gj = g0 + j * E;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t w = qtj[c];
            scalar_t *rr = R.data() + c * E;
            for (int64_t e = 0; e < E; ++e) rr[e] += w * gj[e];
            suffix[c] += ppj[c];
          }
          const scalar_t *kj = k0 + j * D, *vj = v0 + j * E;
          scalar_t *dkj = dK + bh * N * D + j * D, *dvj = dV + bh * N * E + j * E;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t f = kj[c] * m;
            const scalar_t *rr = R.data() + c * E;
            scalar_t s = 0;
            for (int64_t e = 0; e < E; ++e) { s += rr[e] * vj[e]; dvj[e] += f * rr[e]; }
            dkj[c] = (s - f * suffix[c]) * m * elu_grad(kj[c]);
          }
        }
      }
    });
  });
  return {dq, dk, dv};
}

// Bidirectional paper form: W = diag(1 / sqrt(n |fk_col|^2)) sum_j fk_j v_j^T over the n real keys,
// out_i = fq_i^T W / (sqrt(d) |fq_i|) on real rows.
torch::Tensor bidirectional_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                    int64_t heads, double eps) {
  const int64_t BH = q.size(0), N = q.size(1), D = q.size(2), E = v.size(2);
  auto out = torch::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linrec_bidirectional_forward", [&] {
    const scalar_t *Q = q.data_ptr<scalar_t>(), *K = k.data_ptr<scalar_t>(), *V = v.data_ptr<scalar_t>();
    const scalar_t *M = real.data_ptr<scalar_t>();
    scalar_t *O = out.data_ptr<scalar_t>();
    const scalar_t eps2 = scalar_t(eps * eps);
    at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> W(D * E), P(D);
      for (int64_t bh = begin; bh < end; ++bh) {
        std::fill(W.begin(), W.end(), scalar_t(0));
        std::fill(P.begin(), P.end(), scalar_t(0));
        const scalar_t *q0 = Q + bh * N * D, *k0 = K + bh * N * D, *v0 = V + bh * N * E;
        const scalar_t *m0 = M + (bh / heads) * N;
        scalar_t count = 0;
        for (int64_t j = 0; j < N; ++j) {
          const scalar_t m = m0[j];
          if (m == scalar_t(0)) continue;
          count += m;
          const scalar_t *kj = k0 + j * D, *vj = v0 + j * E;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t f = kj[c] * m;
            P[c] += f * f;
            scalar_t *w = W.data() + c * E;
            for (int64_t e = 0; e < E; ++e) w[e] += f * vj[e];
          }
        }
        const scalar_t n = std::max(count, scalar_t(1));
        for (int64_t c = 0; c < D; ++c) {
          const scalar_t inv = scalar_t(1) / std::sqrt(std::max(n * P[c], eps2));
          scalar_t *w = W.data() + c * E;
          for (int64_t e = 0; e < E; ++e) w[e] *= inv;
        }
        for (int64_t i = 0; i < N; ++i) {
          if (m0[i] == scalar_t(0)) continue;
          const scalar_t *qi = q0 + i * D;
          scalar_t sq = 0;
          for (int64_t c = 0; c < D; ++c) sq += qi[c] * qi[c];
          const scalar_t r = scalar_t(1) / std::sqrt(std::max(scalar_t(D) * sq, eps2));
          scalar_t *oi = O + bh * N * E + i * E;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t f = qi[c] * r;
            const scalar_t *w = W.data() + c * E;
            for (int64_t e = 0; e < E; ++e) oi[e] += f * w[e];
          }
        }
      }
    });
  });
  return out;
}

std::vector<torch::Tensor> bidirectional_backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k,
                                                  torch::Tensor v, torch::Tensor real, int64_t heads, double eps) {
  const int64_t BH = q.size(0), N = q.size(1), D = q.size(2), E = v.size(2);
  auto dq = torch::zeros_like(q), dk = torch::zeros_like(k), dv = torch::zeros_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linrec_bidirectional_backward", [&] {
    const scalar_t *G = grad.data_ptr<scalar_t>(), *Q = q.data_ptr<scalar_t>(), *K = k.data_ptr<scalar_t>();
    const scalar_t *V = v.data_ptr<scalar_t>(), *M = real.data_ptr<scalar_t>();
    scalar_t *dQ = dq.data_ptr<scalar_t>(), *dK = dk.data_ptr<scalar_t>(), *dV = dv.data_ptr<scalar_t>();
    const scalar_t eps2 = scalar_t(eps * eps);
    at::parallel_for(0, BH, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> S(D * E), P(D), inv(D), dW(D * E), wg(D), dinv(D);
      for (int64_t bh = begin; bh < end; ++bh) {
        std::fill(S.begin(), S.end(), scalar_t(0));
        std::fill(P.begin(), P.end(), scalar_t(0));
        std::fill(dW.begin(), dW.end(), scalar_t(0));
        const scalar_t *q0 = Q + bh * N * D, *k0 = K + bh * N * D, *v0 = V + bh * N * E, *g0 = G + bh * N * E;
        const scalar_t *m0 = M + (bh / heads) * N;
        scalar_t count = 0;
        for (int64_t j = 0; j < N; ++j) {  // the unscaled state S and the column norms, as in the forward
          const scalar_t m = m0[j];
          if (m == scalar_t(0)) continue;
          count += m;
          const scalar_t *kj = k0 + j * D, *vj = v0 + j * E;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t f = kj[c] * m;
            P[c] += f * f;
            scalar_t *s = S.data() + c * E;
            for (int64_t e = 0; e < E; ++e) s[e] += f * vj[e];
          }
        }
        const scalar_t n = std::max(count, scalar_t(1));
        for (int64_t c = 0; c < D; ++c) inv[c] = scalar_t(1) / std::sqrt(std::max(n * P[c], eps2));
        for (int64_t i = 0; i < N; ++i) {  // queries: dq, and dW = sum_i r_i fq_i g_i^T
          if (m0[i] == scalar_t(0)) continue;
          const scalar_t *qi = q0 + i * D, *gi = g0 + i * E;
          scalar_t sq = 0;
          for (int64_t c = 0; c < D; ++c) sq += qi[c] * qi[c];
          const bool row_clamped = scalar_t(D) * sq < eps2;
          const scalar_t r = scalar_t(1) / std::sqrt(std::max(scalar_t(D) * sq, eps2));
          scalar_t dot = 0;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t *s = S.data() + c * E;
            scalar_t acc = 0;
            for (int64_t e = 0; e < E; ++e) acc += s[e] * gi[e];
            wg[c] = acc * inv[c];  // (W g_i)_c
            dot += qi[c] * wg[c];
            const scalar_t f = qi[c] * r;
            scalar_t *dw = dW.data() + c * E;
            for (int64_t e = 0; e < E; ++e) dw[e] += f * gi[e];
          }
          const scalar_t row_term = row_clamped ? scalar_t(0) : -scalar_t(D) * r * r * r * dot;
          scalar_t *dqi = dQ + bh * N * D + i * D;
          for (int64_t c = 0; c < D; ++c) dqi[c] = (r * wg[c] + qi[c] * row_term) * elu_grad(qi[c]);
        }
        // W = diag(inv) S: dS = diag(inv) dW; d inv_c = sum_e dW S; inv = (n P)^(-1/2) -> dP = -n inv^3 / 2 d inv
        for (int64_t c = 0; c < D; ++c) {
          const scalar_t *s = S.data() + c * E;
          scalar_t *dw = dW.data() + c * E;
          scalar_t acc = 0;
          for (int64_t e = 0; e < E; ++e) { acc += dw[e] * s[e]; dw[e] *= inv[c]; }  // dW becomes dS
          dinv[c] = n * P[c] < eps2 ? scalar_t(0) : -n * inv[c] * inv[c] * inv[c] * acc;  // x 2 fk / 2 below
        }
        for (int64_t j = 0; j < N; ++j) {  // keys and values: dk_j = dS v_j + dP, dv_j = dS^T fk_j
          const scalar_t m = m0[j];
          if (m == scalar_t(0)) continue;
          const scalar_t *kj = k0 + j * D, *vj = v0 + j * E;
          scalar_t *dkj = dK + bh * N * D + j * D, *dvj = dV + bh * N * E + j * E;
          for (int64_t c = 0; c < D; ++c) {
            const scalar_t f = kj[c] * m;
            const scalar_t *ds = dW.data() + c * E;
            scalar_t acc = 0;
            for (int64_t e = 0; e < E; ++e) { acc += ds[e] * vj[e]; dvj[e] += f * ds[e]; }
            dkj[c] = (acc + dinv[c] * f) * m * elu_grad(kj[c]);
          }
        }
      }
    });
  });
  return {dq, dk, dv};
}
"""

_CPP_DECLARATIONS = r"""
torch::Tensor causal_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                             int64_t heads, double eps);
std::vector<torch::Tensor> causal_backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                           torch::Tensor real, int64_t heads, double eps);
torch::Tensor bidirectional_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                    int64_t heads, double eps);
std::vector<torch::Tensor> bidirectional_backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k,
                                                  torch::Tensor v, torch::Tensor real, int64_t heads, double eps);
"""


# native: built on the machine that runs it; associative maths lets the dot products vectorise
_CFLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
]


@functools.cache
def _build():
    """The compiled module, or the exception that stopped the build (cached either way)."""
    from torch.utils.cpp_extension import load_inline

    # the name carries a hash of source and flags: two checkouts (or versions) never load each other's build
    digest = hashlib.sha256("".join([_CPP_DECLARATIONS, _SOURCE, *_CFLAGS]).encode()).hexdigest()[:12]
    try:
        return load_inline(
            name=f"linrec_cpu_{digest}",
            cpp_sources=[_CPP_DECLARATIONS, _SOURCE],
            functions=["causal_forward", "causal_backward", "bidirectional_forward", "bidirectional_backward"],
            extra_cflags=_CFLAGS,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001 -- no compiler, no ninja, no headers: the PyTorch path stays
        return err


def extension_error() -> str | None:
    """Why the C++ kernel cannot be used here, or None."""
    built = _build()
    return f"{type(built).__name__}: {built}".splitlines()[0] if isinstance(built, Exception) else None


def _module():
    built = _build()
    if isinstance(built, Exception):
        raise RuntimeError(f"linrec backend='cpp': the C++ extension could not be built ({extension_error()})")
    return built


class _FusedLinRec(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, real, causal):
        batch, heads, length, dim = q.shape
        # the ELU features by vectorised ATen ops (exp is the costly part), laid out (B*H, N, d) for the walk
        fq = F.elu(q).reshape(batch * heads, length, dim).contiguous()
        fk = F.elu(k).reshape(batch * heads, length, dim).contiguous()
        flat = [fq, fk, v.reshape(batch * heads, length, v.shape[-1]).contiguous()]
        kernel = _module().causal_forward if causal else _module().bidirectional_forward
        out = kernel(*flat, real, heads, NORM_EPS)  # (B*H, N, e)
        ctx.save_for_backward(*flat, real)
        ctx.shape, ctx.causal = (batch, heads), causal
        return out.view(batch, heads, length, v.shape[-1])

    @staticmethod
    def backward(ctx, grad):
        fq, fk, v, real = ctx.saved_tensors
        batch, heads = ctx.shape
        grad = grad.reshape(batch * heads, grad.shape[2], grad.shape[3]).contiguous()  # (B*H, N, e)
        kernel = _module().causal_backward if ctx.causal else _module().bidirectional_backward
        dq, dk, dv = kernel(grad, fq, fk, v, real, heads, NORM_EPS)
        return (
            dq.view(batch, heads, *dq.shape[1:]),
            dk.view(batch, heads, *dk.shape[1:]),
            dv.view(batch, heads, *dv.shape[1:]),
            None,
            None,
        )


def linrec_cpp(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None, causal: bool
) -> torch.Tensor:
    """LinRec, paper form, (B, H, N, d) -> (B, H, N, e) on CPU in float32/float64; mask (B, N) True = real."""
    batch, _, length, _ = q.shape
    if key_padding_mask is None:
        real = torch.ones(batch, length, dtype=q.dtype)
    else:
        real = key_padding_mask.to(q.dtype).contiguous()  # (B, N)
    return _FusedLinRec.apply(q, k, v, real, causal)
