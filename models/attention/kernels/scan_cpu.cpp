// Fused CPU scans for the recurrent mixers (the LRU's complex diagonal recurrence, Mamba's selective scan) and the
// causal attention walks (Efficient Attention, linear attention, retention; further down), forward and backward, one
// walk over the sequence per (sequence, block of channels), the state in registers/L1. The PyTorch paths
// (kernels/lru.py, kernels/mamba.py, ...) stay the references these are tested against.
//
// LRU, per channel p (complex):   h_t = lam h_{t-1} + u_t
//   backward (PyTorch's convention: gradients are conjugate Wirtinger derivatives):
//   g_t = gh_t + conj(lam) g_{t+1};   du_t = g_t;   dlam = sum_t g_t conj(h_{t-1})
//
// Mamba, per channel e and state s:  h_t = exp(delta_t A) h_{t-1} + dx_t b_t;   y_t = sum_s c_t h_t
//   backward: G_t = gy_t c_t + exp(delta_{t+1} A) G_{t+1};   dc_t = sum_e gy_t h_t;   d(dx)_t = sum_s G_t b_t;
//   db_t = sum_e G_t dx_t;   W_t = G_t h_{t-1} exp(delta_t A);   d(delta)_t = sum_s W_t A;   dA = sum_t W_t delta_t
//   The forward keeps the state entering every CHUNK-th position only (N / CHUNK of the (E, S) states, not N): the
//   backward recomputes each chunk's states and decays into a small buffer, then walks it in reverse.
//
// Sums over channels (db, dc) and over the batch (dlam, dA) are written per job and added up by the caller: no
// two threads write one element. Shapes: B batch, N length, P / E channels, S states per channel.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// exp for x <= 0 in float: Cody-Waite range reduction and Cephes' degree-6 polynomial (relative error ~1e-7), written
// with arithmetic only so that the compiler vectorises the loops around it (std::exp in float would not vectorise
// without -ffast-math). Below -87 the result is 0 (expf's smallest normal is ~1.2e-38).
inline float exp_nonpositive(float x) {
  const bool tiny = x < -87.0f;
  x = tiny ? -87.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return tiny ? 0.0f : p * scale;
}

inline double exp_nonpositive(double x) { return std::exp(x); }  // float64: exact, for gradcheck

constexpr int64_t LRU_BLOCK = 64;    // channels per job
constexpr int64_t MAMBA_BLOCK = 8;   // channels per job

template <typename T>
void lru_forward_impl(const T* u, const T* lam, T* h, int64_t batch, int64_t length, int64_t channels) {
  const int64_t blocks = (channels + LRU_BLOCK - 1) / LRU_BLOCK;
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    T hr[LRU_BLOCK], hi[LRU_BLOCK], lr[LRU_BLOCK], li[LRU_BLOCK];
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / blocks, p0 = (job % blocks) * LRU_BLOCK, width = std::min(LRU_BLOCK, channels - p0);
      for (int64_t p = 0; p < width; ++p) {
        hr[p] = hi[p] = 0;
        lr[p] = lam[2 * (p0 + p)];
        li[p] = lam[2 * (p0 + p) + 1];
      }
      for (int64_t t = 0; t < length; ++t) {
        const T* ut = u + ((b * length + t) * channels + p0) * 2;
        T* ht = h + ((b * length + t) * channels + p0) * 2;
        for (int64_t p = 0; p < width; ++p) {
          const T re = lr[p] * hr[p] - li[p] * hi[p] + ut[2 * p];
          const T im = lr[p] * hi[p] + li[p] * hr[p] + ut[2 * p + 1];
          hr[p] = re;
          hi[p] = im;
          ht[2 * p] = re;
          ht[2 * p + 1] = im;
        }
      }
    }
  });
}

template <typename T>
void lru_backward_impl(const T* gh, const T* h, const T* lam, T* du, T* dlam_by_batch, int64_t batch, int64_t length,
                       int64_t channels) {
  const int64_t blocks = (channels + LRU_BLOCK - 1) / LRU_BLOCK;
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    T gr[LRU_BLOCK], gi[LRU_BLOCK], lr[LRU_BLOCK], li[LRU_BLOCK], dr[LRU_BLOCK], di[LRU_BLOCK];
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / blocks, p0 = (job % blocks) * LRU_BLOCK, width = std::min(LRU_BLOCK, channels - p0);
      for (int64_t p = 0; p < width; ++p) {
        gr[p] = gi[p] = dr[p] = di[p] = 0;
        lr[p] = lam[2 * (p0 + p)];
        li[p] = lam[2 * (p0 + p) + 1];
      }
      for (int64_t t = length - 1; t >= 0; --t) {
        const int64_t at = ((b * length + t) * channels + p0) * 2;
        const T* ght = gh + at;
        T* dut = du + at;
        for (int64_t p = 0; p < width; ++p) {
          const T re = ght[2 * p] + lr[p] * gr[p] + li[p] * gi[p];  // g_t = gh_t + conj(lam) g_{t+1}
          const T im = ght[2 * p + 1] + lr[p] * gi[p] - li[p] * gr[p];
          gr[p] = re;
          gi[p] = im;
          dut[2 * p] = re;
          dut[2 * p + 1] = im;
        }
        if (t > 0) {  // h_0 = 0: the first step's lam multiplies nothing
          const T* hp = h + at - channels * 2;
          for (int64_t p = 0; p < width; ++p) {  // g_t conj(h_{t-1})
            dr[p] += gr[p] * hp[2 * p] + gi[p] * hp[2 * p + 1];
            di[p] += gi[p] * hp[2 * p] - gr[p] * hp[2 * p + 1];
          }
        }
      }
      for (int64_t p = 0; p < width; ++p) {
        dlam_by_batch[(b * channels + p0 + p) * 2] = dr[p];
        dlam_by_batch[(b * channels + p0 + p) * 2 + 1] = di[p];
      }
    }
  });
}

template <typename T>
void mamba_forward_impl(const T* dx, const T* delta, const T* a, const T* bmat, const T* cmat, T* y, T* kept,
                        int64_t batch, int64_t length, int64_t channels, int64_t states, int64_t chunk) {
  const int64_t blocks = (channels + MAMBA_BLOCK - 1) / MAMBA_BLOCK;
  const int64_t chunks = (length + chunk - 1) / chunk;
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> state(MAMBA_BLOCK * states);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / blocks, e0 = (job % blocks) * MAMBA_BLOCK;
      const int64_t width = std::min(MAMBA_BLOCK, channels - e0);
      std::fill(state.begin(), state.end(), T(0));
      for (int64_t t = 0; t < length; ++t) {
        if (t % chunk == 0 && kept != nullptr) {  // the state entering this chunk: (B, chunks, E, S)
          T* out = kept + ((b * chunks + t / chunk) * channels + e0) * states;
          std::copy(state.begin(), state.begin() + width * states, out);
        }
        const T* bt = bmat + (b * length + t) * states;
        const T* ct = cmat + (b * length + t) * states;
        const int64_t row = (b * length + t) * channels + e0;
        for (int64_t e = 0; e < width; ++e) {
          const T step = delta[row + e], drive = dx[row + e];
          const T* ae = a + (e0 + e) * states;
          T* he = state.data() + e * states;
          T sum = 0;
          for (int64_t s = 0; s < states; ++s) {
            he[s] = exp_nonpositive(step * ae[s]) * he[s] + drive * bt[s];
            sum += ct[s] * he[s];
          }
          y[row + e] = sum;
        }
      }
    }
  });
}

template <typename T>
void mamba_backward_impl(const T* gy, const T* dx, const T* delta, const T* a, const T* bmat, const T* cmat,
                         const T* kept, T* d_dx, T* d_delta, T* d_a_by_batch, T* d_b_by_block, T* d_c_by_block,
                         int64_t batch, int64_t length, int64_t channels, int64_t states, int64_t chunk) {
  const int64_t blocks = (channels + MAMBA_BLOCK - 1) / MAMBA_BLOCK;
  const int64_t chunks = (length + chunk - 1) / chunk;
  at::parallel_for(0, batch * blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t block_states = MAMBA_BLOCK * states;
    std::vector<T> hs(chunk * block_states), decays(chunk * block_states), carried(block_states), d_a(block_states);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / blocks, block = job % blocks, e0 = block * MAMBA_BLOCK;
      const int64_t width = std::min(MAMBA_BLOCK, channels - e0);
      std::fill(carried.begin(), carried.end(), T(0));
      std::fill(d_a.begin(), d_a.end(), T(0));
      T* db = d_b_by_block + (b * blocks + block) * length * states;  // (B, blocks, N, S)
      T* dc = d_c_by_block + (b * blocks + block) * length * states;
      for (int64_t k = chunks - 1; k >= 0; --k) {
        const int64_t t0 = k * chunk, t1 = std::min(length, t0 + chunk);
        const T* entering = kept + ((b * chunks + k) * channels + e0) * states;
        // recompute this chunk's states and decays from the state kept at its start
        for (int64_t t = t0; t < t1; ++t) {
          const T* bt = bmat + (b * length + t) * states;
          const int64_t row = (b * length + t) * channels + e0;
          for (int64_t e = 0; e < width; ++e) {
            const T step = delta[row + e], drive = dx[row + e];
            const T* ae = a + (e0 + e) * states;
            const T* prev = t == t0 ? entering + e * states : hs.data() + ((t - 1 - t0) * MAMBA_BLOCK + e) * states;
            T* he = hs.data() + ((t - t0) * MAMBA_BLOCK + e) * states;
            T* de = decays.data() + ((t - t0) * MAMBA_BLOCK + e) * states;
            for (int64_t s = 0; s < states; ++s) {
              de[s] = exp_nonpositive(step * ae[s]);
              he[s] = de[s] * prev[s] + drive * bt[s];
            }
          }
        }
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const T* bt = bmat + (b * length + t) * states;
          const T* ct = cmat + (b * length + t) * states;
          T* dbt = db + t * states;
          T* dct = dc + t * states;
          const int64_t row = (b * length + t) * channels + e0;
          for (int64_t e = 0; e < width; ++e) {
            const T g_y = gy[row + e], drive = dx[row + e], step = delta[row + e];
            const T* ae = a + (e0 + e) * states;
            const T* he = hs.data() + ((t - t0) * MAMBA_BLOCK + e) * states;
            const T* de = decays.data() + ((t - t0) * MAMBA_BLOCK + e) * states;
            const T* prev = t == t0 ? entering + e * states : hs.data() + ((t - 1 - t0) * MAMBA_BLOCK + e) * states;
            T* ce = carried.data() + e * states;
            T* dae = d_a.data() + e * states;
            T grad_drive = 0, grad_step = 0;
            for (int64_t s = 0; s < states; ++s) {
              const T grad = ce[s] + g_y * ct[s];  // G_t
              const T w = grad * prev[s] * de[s];
              dct[s] = (e == 0 ? T(0) : dct[s]) + he[s] * g_y;
              dbt[s] = (e == 0 ? T(0) : dbt[s]) + grad * drive;
              grad_drive += grad * bt[s];
              grad_step += w * ae[s];
              dae[s] += w * step;
              ce[s] = de[s] * grad;
            }
            d_dx[row + e] = grad_drive;
            d_delta[row + e] = grad_step;
          }
        }
      }
      for (int64_t e = 0; e < width; ++e) {
        std::copy(d_a.begin() + e * states, d_a.begin() + (e + 1) * states,
                  d_a_by_batch + (b * channels + e0 + e) * states);
      }
    }
  });
}

// Causal Efficient Attention: per feature f, a softmax over the prefix of keys j <= i, read by the query's softmax
// a_i = softmax(q_i) (made in the walk, from q where it lies):
//   out_i = sum_f a_if P_if,   P_if = sum_{j <= i} exp(k_jf - L_if) v_j,   L_if = log sum_{j <= i} exp(k_jf)
// P_f is a running weighted mean (an online softmax per feature, as flash attention keeps one per row): a new key
// re-weights it by exp(L_old - L_new) and adds exp(k - L_new) v, both <= 1, so no exponent is ever positive.
//   backward (g = d out):   da_if = g_i . P_if,   dq_i = a_i * (da_i - a_i . da_i) (the softmax's Jacobian)
//   R_jf = sum_{i >= j} exp(L_jf - L_if) a_if g_i,   r_jf = sum_{i >= j} exp(L_jf - L_if) a_if da_if   (reverse walk,
//   decays exp(L_j - L_next) <= 1):   dv_j = sum_f w_jf R_jf,   dk_jf = w_jf (v_j . R_jf - r_jf),   w_jf = exp(k_jf - L_jf)
// Padded positions (real = 0) neither read nor enter the state; their outputs and gradients are 0. One job per
// (sequence, head); P and R are (d, e) per job.
// log(1 + x) for 0 <= x <= 1 in float, arithmetic only (vectorises): 2 atanh(z), z = x / (2 + x) <= 1/3, by its
// series to z^17 (relative error < 1e-8). double: std::log1p, exact, for gradcheck.
inline float log1p_unit(float x) {
  const float z = x / (2.0f + x), z2 = z * z;
  float p = 1.0f / 17;
  for (int n = 15; n >= 1; n -= 2) p = p * z2 + 1.0f / n;
  return 2.0f * z * p;
}
inline double log1p_unit(double x) { return std::log1p(x); }

// softmax of a row of d, in place: every exponent <= 0
template <typename T> inline void softmax_in_place(T* x, int64_t d) {
  T top = x[0];
  for (int64_t f = 1; f < d; ++f) top = std::max(top, x[f]);
  T total = 0;
  for (int64_t f = 0; f < d; ++f) {
    x[f] = exp_nonpositive(x[f] - top);
    total += x[f];
  }
  const T inverse = T(1) / total;
  for (int64_t f = 0; f < d; ++f) x[f] *= inverse;
}

// the query's softmax over features, for Efficient Attention's walk
template <typename T> inline void query_softmax(const T* q, T* a, int64_t d) {
  std::copy(q, q + d, a);
  softmax_in_place(a, d);
}

// A (B, H, N, d) input read where it lies (a view of the packed projection: no copy), its last dim contiguous.
template <typename T> struct Strided {
  const T* p;
  int64_t sb, sh, sn;
  explicit Strided(const torch::Tensor& t)
      : p(t.data_ptr<T>()), sb(t.stride(0)), sh(t.stride(1)), sn(t.stride(2)) {}
  const T* at(int64_t b, int64_t h, int64_t i) const { return p + b * sb + h * sh + i * sn; }
};

// A (B, H, N, w) output written where the caller wants it, its last dim contiguous: the forward's output as a view of
// a (B, N, H, e) tensor (the output projection reads it without a copy), the gradients as views of the packed
// projection's gradient (no concatenation of three separate ones).
template <typename T> struct StridedOut {
  T* p;
  int64_t sb, sh, sn;
  explicit StridedOut(const torch::Tensor& t)
      : p(t.data_ptr<T>()), sb(t.stride(0)), sh(t.stride(1)), sn(t.stride(2)) {}
  T* at(int64_t b, int64_t h, int64_t i) const { return p + b * sb + h * sh + i * sn; }
};

constexpr double EFFICIENT_NONE = 1e30;  // the log-mass before any key: exp(-1e30 - anything) = 0, and no inf - inf

template <typename T>
void efficient_forward_impl(const Strided<T>& q, const Strided<T>& k, const Strided<T>& v, const uint8_t* real,
                            const StridedOut<T>& out, T* logz, int64_t batch, int64_t heads, int64_t length,
                            int64_t dk, int64_t dv) {
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> mean(dk * dv), mass(dk), keep(dk), take(dk), a(dk);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / heads, h = job % heads;
      const uint8_t* real_b = real + b * length;
      std::fill(mass.begin(), mass.end(), T(-EFFICIENT_NONE));
      std::fill(mean.begin(), mean.end(), T(0));
      for (int64_t i = 0; i < length; ++i) {
        const T *ki = k.at(b, h, i), *vi = v.at(b, h, i), *ai = a.data();
        T *oi = out.at(b, h, i), *li = logz + (job * length + i) * dk;
        std::fill(oi, oi + dv, T(0));
        if (!real_b[i]) {
          std::copy(mass.begin(), mass.end(), li);  // never read
          continue;
        }
        query_softmax(q.at(b, h, i), a.data(), dk);
        for (int64_t f = 0; f < dk; ++f) {  // the new log-mass and the two weights: exponents <= 0
          const T top = std::max(mass[f], ki[f]), gap = std::min(mass[f], ki[f]) - top;
          const T total = top + log1p_unit(exp_nonpositive(gap));
          keep[f] = exp_nonpositive(mass[f] - total);
          take[f] = exp_nonpositive(ki[f] - total);
          mass[f] = li[f] = total;
        }
        for (int64_t f = 0; f < dk; ++f) {
          T* pf = mean.data() + f * dv;
          const T kf = keep[f], tf = take[f], af = ai[f];
          for (int64_t e = 0; e < dv; ++e) {
            pf[e] = kf * pf[e] + tf * vi[e];
            oi[e] += af * pf[e];
          }
        }
      }
    }
  });
}

template <typename T>
void efficient_backward_impl(const Strided<T>& g, const Strided<T>& q, const Strided<T>& k, const Strided<T>& v,
                             const uint8_t* real, const T* logz, const StridedOut<T>& dq, const StridedOut<T>& dkey,
                             const StridedOut<T>& dval, int64_t batch, int64_t heads, int64_t length, int64_t dk,
                             int64_t dv) {
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> mean(dk * dv), acc(dk * dv), acc_scalar(dk), previous(dk), keep(dk), take(dk), a(dk);
    std::vector<T> da(length * dk);  // d a of the job's positions: the forward walk writes, the reverse walk reads
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / heads, h = job % heads;
      const uint8_t* real_b = real + b * length;
      auto row = [&](int64_t i, int64_t width) { return (job * length + i) * width; };  // logz
      std::fill(previous.begin(), previous.end(), T(-EFFICIENT_NONE));  // forward walk: P again, for da
      std::fill(mean.begin(), mean.end(), T(0));
      for (int64_t i = 0; i < length; ++i) {
        T *dai = da.data() + i * dk, *dqi = dq.at(b, h, i);
        if (!real_b[i]) {
          std::fill(dqi, dqi + dk, T(0));
          continue;
        }
        const T *ki = k.at(b, h, i), *vi = v.at(b, h, i), *li = logz + row(i, dk), *gi = g.at(b, h, i);
        for (int64_t f = 0; f < dk; ++f) {
          keep[f] = exp_nonpositive(previous[f] - li[f]);
          take[f] = exp_nonpositive(ki[f] - li[f]);
          previous[f] = li[f];
        }
        for (int64_t f = 0; f < dk; ++f) {
          T* pf = mean.data() + f * dv;
          const T kf = keep[f], tf = take[f];
          T dot = 0;
          for (int64_t e = 0; e < dv; ++e) {
            pf[e] = kf * pf[e] + tf * vi[e];
            dot += gi[e] * pf[e];
          }
          dai[f] = dot;
        }
        query_softmax(q.at(b, h, i), a.data(), dk);
        T mean_da = 0;
        for (int64_t f = 0; f < dk; ++f) mean_da += a[f] * dai[f];
        for (int64_t f = 0; f < dk; ++f) dqi[f] = a[f] * (dai[f] - mean_da);
      }
      std::fill(acc.begin(), acc.end(), T(0));  // reverse walk: R and r, then dk and dv
      std::fill(acc_scalar.begin(), acc_scalar.end(), T(0));
      std::fill(previous.begin(), previous.end(), T(EFFICIENT_NONE));  // the next real position's log-mass
      for (int64_t i = length - 1; i >= 0; --i) {
        T *dki = dkey.at(b, h, i), *dvi = dval.at(b, h, i);
        std::fill(dvi, dvi + dv, T(0));
        if (!real_b[i]) {
          std::fill(dki, dki + dk, T(0));
          continue;
        }
        query_softmax(q.at(b, h, i), a.data(), dk);
        const T *ai = a.data(), *ki = k.at(b, h, i), *vi = v.at(b, h, i), *li = logz + row(i, dk);
        const T *gi = g.at(b, h, i), *dai = da.data() + i * dk;
        for (int64_t f = 0; f < dk; ++f) {
          keep[f] = exp_nonpositive(li[f] - previous[f]);  // the decay from the next real position back to this one
          take[f] = exp_nonpositive(ki[f] - li[f]);  // this key's weight in its own prefix
          acc_scalar[f] = ai[f] * dai[f] + keep[f] * acc_scalar[f];
          previous[f] = li[f];
        }
        for (int64_t f = 0; f < dk; ++f) {
          T* rf = acc.data() + f * dv;
          const T decay = keep[f], af = ai[f], weight = take[f];
          T dot = 0;
          for (int64_t e = 0; e < dv; ++e) {
            rf[e] = af * gi[e] + decay * rf[e];
            dot += vi[e] * rf[e];
            dvi[e] += weight * rf[e];
          }
          dki[f] = weight * (dot - acc_scalar[f]);
        }
      }
    }
  });
}

// phi(x) = elu(x) + 1: x + 1 for x > 0, e^x otherwise; its derivative is 1 for x > 0, e^x = phi(x) otherwise.
// Both sides are computed and one selected, so that the loops over a row vectorise (a branch around the exp kept
// them scalar: the features then cost more than the whole walk).
template <typename T> inline T elu_plus_one(T x) {
  const T below = exp_nonpositive(std::min(x, T(0)));
  return x > T(0) ? x + T(1) : below;
}

// The feature maps linear attention's walk applies to a position's query and key rows (width d), giving features of
// width m; and, in the backward, the map from the features' gradients back onto the rows. Each is a policy the walk
// is compiled with, so the features are made where the walk reads them (no (B, H, N, m) tensors for autograd).
//
// elu + 1 (the Linear Transformer, m = d): recomputed at every read, cheaper than storing them.
template <typename T> struct EluFeatures {
  Strided<T> q, k;
  int64_t d;
  int64_t width() const { return d; }
  // the position's query and key features, written to the scratch rows given (or found where they are kept)
  void make(int64_t b, int64_t h, int64_t i, T* fq, T* fk, const T*& qi, const T*& ki) const {
    const T *qr = q.at(b, h, i), *kr = k.at(b, h, i);
    for (int64_t f = 0; f < d; ++f) fq[f] = elu_plus_one(qr[f]);
    for (int64_t f = 0; f < d; ++f) fk[f] = elu_plus_one(kr[f]);
    qi = fq;
    ki = fk;
  }
  // d row = d phi * phi'(row): 1 above 0, phi itself below (e^x); d phi (the walk's scratch) may be overwritten
  void query_grad(int64_t b, int64_t h, int64_t i, const T* fq, T* dphi, T* dx) const {
    slope(q.at(b, h, i), fq, dphi, dx);
  }
  void key_grad(int64_t b, int64_t h, int64_t i, const T* fk, T* dphi, T* dx) const {
    slope(k.at(b, h, i), fk, dphi, dx);
  }
  void slope(const T* x, const T* phi, const T* dphi, T* dx) const {
    for (int64_t f = 0; f < d; ++f) dx[f] = dphi[f] * (x[f] > T(0) ? T(1) : phi[f]);
  }
};

// Performer's FAVOR+ positive random features (kernels/performer.py, performer_features, is their reference), with
// w_r the projection's rows, s = d^-1/4 and |w|^2 / 2 = hw_r:
//   query: phi_r = softmax_r(s w_r . x + hw_r)            key: phi_r = exp(s w_r . x - s^2 |x|^2 / 2 - hw_r)
// (the key's exponent is -|w_r - s x|^2 / 2 <= 0; clamped at 0 against rounding). Gradients, l the exponents:
//   query: dl_r = phi_r (dphi_r - phi . dphi)             key: dl_r = phi_r dphi_r
//   d x = s W^T dl, less s^2 x sum_r dl_r for the key.
// Made once, in the forward walk, into (B, H, N, m) rows the backward reads back (m d multiply-adds each: dearer
// than reading).
template <typename T> struct FavorFeatures {
  Strided<T> q, k;
  int64_t d, m, heads, length;
  const T* scaled_t;  // (d, m): s W^T, rows of m contiguous so the loops over r vectorise
  const T* half_sq;   // (m,): hw_r
  T *fq_rows, *fk_rows;  // (B, H, N, m): written by the forward walk, read by the backward
  bool made;             // the rows hold the features (the backward) or are to be written (the forward)
  int64_t width() const { return m; }
  void make(int64_t b, int64_t h, int64_t i, T*, T*, const T*& qi, const T*& ki) const {
    const int64_t row = ((b * heads + h) * length + i) * m;
    T *fq = fq_rows + row, *fk = fk_rows + row;
    qi = fq;
    ki = fk;
    if (made) return;
    const T *qr = q.at(b, h, i), *kr = k.at(b, h, i);
    T sq = 0;
    for (int64_t f = 0; f < d; ++f) sq += kr[f] * kr[f];
    const T key_shift = -sq * T(0.5) / std::sqrt(T(d));
    for (int64_t r = 0; r < m; ++r) {
      fq[r] = half_sq[r];
      fk[r] = key_shift - half_sq[r];
    }
    for (int64_t f = 0; f < d; ++f) {
      const T* wf = scaled_t + f * m;
      const T qf = qr[f], kf = kr[f];
      for (int64_t r = 0; r < m; ++r) {
        fq[r] += qf * wf[r];
        fk[r] += kf * wf[r];
      }
    }
    softmax_in_place(fq, m);
    for (int64_t r = 0; r < m; ++r) fk[r] = exp_nonpositive(std::min(fk[r], T(0)));
  }
  void query_grad(int64_t, int64_t, int64_t, const T* fq, T* dphi, T* dx) const {
    T mean = 0;
    for (int64_t r = 0; r < m; ++r) mean += fq[r] * dphi[r];
    for (int64_t r = 0; r < m; ++r) dphi[r] = fq[r] * (dphi[r] - mean);  // dl
    project(dphi, dx);
  }
  void key_grad(int64_t b, int64_t h, int64_t i, const T* fk, T* dphi, T* dx) const {
    T total = 0;
    for (int64_t r = 0; r < m; ++r) {
      dphi[r] *= fk[r];  // dl
      total += dphi[r];
    }
    project(dphi, dx);
    const T *kr = k.at(b, h, i), shrink = total / std::sqrt(T(d));
    for (int64_t f = 0; f < d; ++f) dx[f] -= shrink * kr[f];
  }
  // d x = s W^T dl
  void project(const T* dl, T* dx) const {
    for (int64_t f = 0; f < d; ++f) {
      const T* wf = scaled_t + f * m;
      T dot = 0;
      for (int64_t r = 0; r < m; ++r) dot += wf[r] * dl[r];
      dx[f] = dot;
    }
  }
};

// Causal linear attention (Katharopoulos et al.) on the features fq = phi(q), fk = phi(k) of one of the maps above:
//   S_i = sum_{j <= i} fk_j v_j^T,  z_i = sum_{j <= i} fk_j,  den_i = max(fq_i . z_i, eps),  out_i = fq_i^T S_i / den_i
//   backward (g = d out):  t_if = S_if . g_i,  dden_i = -(fq_i . t_i) / den_i^2 where fq_i . z_i >= eps (else 0),
//   d fq_if = t_if / den_i + z_if dden_i;   reverse:  R_j = sum_{i >= j} fq_i (g_i / den_i)^T,
//   r_j = sum_{i >= j} fq_i dden_i;   d fk_j = R_j v_j + r_j,   d v_j = R_j^T fk_j;   d q, d k by the map's gradient.
// The forward keeps the (B, H, N) normalisers; the backward rebuilds S and z in a forward walk, then walks back.
template <typename T, typename Features>
void linear_forward_impl(const Features& phi, const Strided<T>& v, const uint8_t* real, T eps, const StridedOut<T>& out,
                         T* den,
                         int64_t batch, int64_t heads, int64_t length, int64_t dv) {
  const int64_t m = phi.width();
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> state(m * dv), keys(m), q_scratch(m), k_scratch(m);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / heads, h = job % heads;
      const uint8_t* real_b = real + b * length;
      std::fill(state.begin(), state.end(), T(0));
      std::fill(keys.begin(), keys.end(), T(0));
      for (int64_t i = 0; i < length; ++i) {
        T* oi = out.at(b, h, i);
        std::fill(oi, oi + dv, T(0));
        den[job * length + i] = T(1);  // padded: never read
        if (!real_b[i]) continue;
        const T *qi, *ki, *vi = v.at(b, h, i);
        phi.make(b, h, i, q_scratch.data(), k_scratch.data(), qi, ki);
        T norm = 0;
        for (int64_t f = 0; f < m; ++f) {
          T* sf = state.data() + f * dv;
          const T kf = ki[f], qf = qi[f];
          keys[f] += kf;
          norm += qf * keys[f];
          for (int64_t e = 0; e < dv; ++e) {
            sf[e] += kf * vi[e];
            oi[e] += qf * sf[e];
          }
        }
        const T clamped = std::max(norm, eps);
        den[job * length + i] = norm;
        for (int64_t e = 0; e < dv; ++e) oi[e] /= clamped;
      }
    }
  });
}

template <typename T, typename Features>
void linear_backward_impl(const Features& phi, const Strided<T>& g, const Strided<T>& v, const uint8_t* real,
                          const T* den, T eps, const StridedOut<T>& dq, const StridedOut<T>& dkey,
                          const StridedOut<T>& dval, int64_t batch, int64_t heads, int64_t length, int64_t d,
                          int64_t dv) {
  const int64_t m = phi.width();
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> state(m * dv), keys(m), reads(m), acc(m * dv), acc_keys(m), dden(length), q_scratch(m),
        k_scratch(m), dphi(m);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / heads, h = job % heads;
      const uint8_t* real_b = real + b * length;
      std::fill(state.begin(), state.end(), T(0));  // forward walk: S and z again, for d fq
      std::fill(keys.begin(), keys.end(), T(0));
      for (int64_t i = 0; i < length; ++i) {
        T* dqi = dq.at(b, h, i);
        if (!real_b[i]) {
          std::fill(dqi, dqi + d, T(0));
          continue;
        }
        const T *qi, *ki, *vi = v.at(b, h, i), *gi = g.at(b, h, i);
        phi.make(b, h, i, q_scratch.data(), k_scratch.data(), qi, ki);
        T read = 0;
        for (int64_t f = 0; f < m; ++f) {
          T* sf = state.data() + f * dv;
          const T kf = ki[f];
          keys[f] += kf;
          T dot = 0;
          for (int64_t e = 0; e < dv; ++e) {
            sf[e] += kf * vi[e];
            dot += sf[e] * gi[e];
          }
          reads[f] = dot;
          read += qi[f] * dot;
        }
        const T norm = den[job * length + i], clamped = std::max(norm, eps);
        const T d_norm = norm >= eps ? -read / (clamped * clamped) : T(0);
        dden[i] = d_norm;
        for (int64_t f = 0; f < m; ++f) dphi[f] = reads[f] / clamped + keys[f] * d_norm;
        phi.query_grad(b, h, i, qi, dphi.data(), dqi);
      }
      std::fill(acc.begin(), acc.end(), T(0));  // reverse walk: R and r, then d fk and d v
      std::fill(acc_keys.begin(), acc_keys.end(), T(0));
      for (int64_t i = length - 1; i >= 0; --i) {
        T *dki = dkey.at(b, h, i), *dvi = dval.at(b, h, i);
        std::fill(dvi, dvi + dv, T(0));
        if (!real_b[i]) {
          std::fill(dki, dki + d, T(0));
          continue;
        }
        const T *qi, *ki, *vi = v.at(b, h, i), *gi = g.at(b, h, i);
        phi.make(b, h, i, q_scratch.data(), k_scratch.data(), qi, ki);
        const T inverse = T(1) / std::max(den[job * length + i], eps), d_norm = dden[i];
        for (int64_t f = 0; f < m; ++f) {
          T* rf = acc.data() + f * dv;
          const T qf = qi[f] * inverse, kf = ki[f];
          acc_keys[f] += qi[f] * d_norm;
          T dot = 0;
          for (int64_t e = 0; e < dv; ++e) {
            rf[e] += qf * gi[e];
            dot += rf[e] * vi[e];
            dvi[e] += kf * rf[e];
          }
          dphi[f] = dot + acc_keys[f];
        }
        phi.key_grad(b, h, i, ki, dphi.data(), dki);
      }
    }
  });
}

// Causal retention (RetNet) with a fixed decay gamma per head, the real positions' keys and values only:
//   S_i = gamma S_{i-1} + [real_i] k_i v_i^T,  r_i = gamma r_{i-1} + [real_i],  out_i = c_i q_i^T S_i with
//   c_i = [real_i] / sqrt(d max(r_i, 1)): a padded position holds nothing but still counts as a step of decay.
//   backward (g = d out, gamma fixed):  d q_i = c_i S_i g_i;  reverse:  R_j = gamma R_{j+1} + c_j q_j g_j^T,
//   d k_j = [real_j] R_j v_j,  d v_j = [real_j] R_j^T k_j.
// Nothing is kept for the backward: r is data-independent and S is rebuilt in one forward walk.
template <typename T> inline T retention_scale(T steps, int64_t d) { return T(1) / std::sqrt(T(d) * std::max(steps, T(1))); }

template <typename T>
void retention_forward_impl(const Strided<T>& q, const Strided<T>& k, const Strided<T>& v, const uint8_t* real,
                            const T* gamma, const StridedOut<T>& out, int64_t batch, int64_t heads, int64_t length,
                            int64_t dk, int64_t dv) {
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> state(dk * dv);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / heads, h = job % heads;
      const uint8_t* real_b = real + b * length;
      const T decay = gamma[h];
      T steps = 0;
      std::fill(state.begin(), state.end(), T(0));
      for (int64_t i = 0; i < length; ++i) {
        T* oi = out.at(b, h, i);
        std::fill(oi, oi + dv, T(0));
        steps *= decay;
        if (!real_b[i]) {
          for (auto& s : state) s *= decay;
          continue;
        }
        steps += T(1);
        const T scale = retention_scale(steps, dk);
        const T *qi = q.at(b, h, i), *ki = k.at(b, h, i), *vi = v.at(b, h, i);
        for (int64_t f = 0; f < dk; ++f) {
          T* sf = state.data() + f * dv;
          const T kf = ki[f], qf = qi[f] * scale;
          for (int64_t e = 0; e < dv; ++e) {
            sf[e] = decay * sf[e] + kf * vi[e];
            oi[e] += qf * sf[e];
          }
        }
      }
    }
  });
}

template <typename T>
void retention_backward_impl(const Strided<T>& g, const Strided<T>& q, const Strided<T>& k, const Strided<T>& v,
                             const uint8_t* real, const T* gamma, const StridedOut<T>& dq,
                             const StridedOut<T>& dkey, const StridedOut<T>& dval, int64_t batch, int64_t heads,
                             int64_t length, int64_t dk, int64_t dv) {
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> state(dk * dv), scales(length);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / heads, h = job % heads;
      const uint8_t* real_b = real + b * length;
      const T decay = gamma[h];
      T steps = 0;
      std::fill(state.begin(), state.end(), T(0));  // forward walk: S again, for d q
      for (int64_t i = 0; i < length; ++i) {
        T* dqi = dq.at(b, h, i);
        steps *= decay;
        if (!real_b[i]) {
          for (auto& s : state) s *= decay;
          std::fill(dqi, dqi + dk, T(0));
          scales[i] = T(0);
          continue;
        }
        steps += T(1);
        const T scale = scales[i] = retention_scale(steps, dk);
        const T *ki = k.at(b, h, i), *vi = v.at(b, h, i), *gi = g.at(b, h, i);
        for (int64_t f = 0; f < dk; ++f) {
          T* sf = state.data() + f * dv;
          const T kf = ki[f];
          T dot = 0;
          for (int64_t e = 0; e < dv; ++e) {
            sf[e] = decay * sf[e] + kf * vi[e];
            dot += sf[e] * gi[e];
          }
          dqi[f] = dot * scale;
        }
      }
      std::fill(state.begin(), state.end(), T(0));  // reverse walk: R, then d k and d v
      for (int64_t i = length - 1; i >= 0; --i) {
        T *dki = dkey.at(b, h, i), *dvi = dval.at(b, h, i);
        if (!real_b[i]) {
          for (auto& s : state) s *= decay;
          std::fill(dki, dki + dk, T(0));
          std::fill(dvi, dvi + dv, T(0));
          continue;
        }
        const T *qi = q.at(b, h, i), *ki = k.at(b, h, i), *vi = v.at(b, h, i), *gi = g.at(b, h, i);
        std::fill(dvi, dvi + dv, T(0));
        for (int64_t f = 0; f < dk; ++f) {
          T* rf = state.data() + f * dv;
          const T qf = qi[f] * scales[i], kf = ki[f];
          T dot = 0;
          for (int64_t e = 0; e < dv; ++e) {
            rf[e] = decay * rf[e] + qf * gi[e];
            dot += rf[e] * vi[e];
            dvi[e] += kf * rf[e];
          }
          dki[f] = dot;
        }
      }
    }
  });
}

void check(const torch::Tensor& t, const char* name, int64_t dims) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.dim() == dims, name, " must have ", dims, " dimensions, got ", t.dim());
}

}  // namespace

// u (B, N, P, 2) and lam (P, 2): real views of complex tensors. Returns h (B, N, P, 2).
torch::Tensor lru_forward(torch::Tensor u, torch::Tensor lam) {
  check(u, "u", 4);
  check(lam, "lam", 2);
  auto h = torch::empty_like(u);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "lru_forward", [&] {
    lru_forward_impl<scalar_t>(u.data_ptr<scalar_t>(), lam.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), u.size(0),
                               u.size(1), u.size(2));
  });
  return h;
}

// Returns (du (B, N, P, 2), dlam (P, 2)).
std::vector<torch::Tensor> lru_backward(torch::Tensor gh, torch::Tensor h, torch::Tensor lam) {
  check(gh, "grad", 4);
  check(h, "h", 4);
  auto du = torch::empty_like(gh);
  auto dlam_by_batch = torch::empty({h.size(0), h.size(2), 2}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "lru_backward", [&] {
    lru_backward_impl<scalar_t>(gh.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), lam.data_ptr<scalar_t>(),
                                du.data_ptr<scalar_t>(), dlam_by_batch.data_ptr<scalar_t>(), h.size(0), h.size(1),
                                h.size(2));
  });
  return {du, dlam_by_batch.sum(0)};
}

// dx, delta (B, N, E); a (E, S); b, c (B, N, S). Returns (y (B, N, E), kept (B, N / chunk, E, S) or empty).
std::vector<torch::Tensor> mamba_forward(torch::Tensor dx, torch::Tensor delta, torch::Tensor a, torch::Tensor b,
                                         torch::Tensor c, int64_t chunk, bool keep) {
  for (auto [t, name] : {std::pair{dx, "dx"}, {delta, "delta"}, {b, "b"}, {c, "c"}}) check(t, name, 3);
  check(a, "a", 2);
  const int64_t batch = dx.size(0), length = dx.size(1), channels = dx.size(2), states = a.size(1);
  auto y = torch::empty_like(dx);
  auto kept = keep ? torch::empty({batch, (length + chunk - 1) / chunk, channels, states}, dx.options())
                   : torch::empty({0}, dx.options());
  AT_DISPATCH_FLOATING_TYPES(dx.scalar_type(), "mamba_forward", [&] {
    mamba_forward_impl<scalar_t>(dx.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                                 b.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                 keep ? kept.data_ptr<scalar_t>() : nullptr, batch, length, channels, states, chunk);
  });
  return {y, kept};
}

// Returns (d_dx, d_delta, d_a, d_b, d_c).
std::vector<torch::Tensor> mamba_backward(torch::Tensor gy, torch::Tensor dx, torch::Tensor delta, torch::Tensor a,
                                          torch::Tensor b, torch::Tensor c, torch::Tensor kept, int64_t chunk) {
  check(gy, "grad", 3);
  check(kept, "kept", 4);
  const int64_t batch = dx.size(0), length = dx.size(1), channels = dx.size(2), states = a.size(1);
  const int64_t blocks = (channels + MAMBA_BLOCK - 1) / MAMBA_BLOCK;
  auto d_dx = torch::empty_like(dx), d_delta = torch::empty_like(delta);
  auto d_a_by_batch = torch::empty({batch, channels, states}, dx.options());
  auto d_b_by_block = torch::empty({batch, blocks, length, states}, dx.options());
  auto d_c_by_block = torch::empty({batch, blocks, length, states}, dx.options());
  AT_DISPATCH_FLOATING_TYPES(dx.scalar_type(), "mamba_backward", [&] {
    mamba_backward_impl<scalar_t>(gy.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(),
                                  a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                                  kept.data_ptr<scalar_t>(), d_dx.data_ptr<scalar_t>(), d_delta.data_ptr<scalar_t>(),
                                  d_a_by_batch.data_ptr<scalar_t>(), d_b_by_block.data_ptr<scalar_t>(),
                                  d_c_by_block.data_ptr<scalar_t>(), batch, length, channels, states, chunk);
  });
  return {d_dx, d_delta, d_a_by_batch.sum(0), d_b_by_block.sum(1), d_c_by_block.sum(1)};
}

// q, k (B, H, N, d), v (B, H, N, e), any strides but a contiguous last dim; real (B, N) uint8.
// Every walk returns its output (B, H, N, e) as a view of a (B, N, H, e) tensor, and its backward fills the
// (d q, d k, d v) it is given (views with a contiguous last dim).
void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 4 && t.stride(3) == 1, name,
              " must be a (B, H, N, d) CPU tensor with a contiguous last dim");
}

void check_walk_inputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& real) {
  for (auto [t, name] : {std::pair{q, "q"}, {k, "k"}, {v, "v"}}) check_rows(t, name);
  check(real, "real", 2);
  TORCH_CHECK(real.scalar_type() == torch::kUInt8, "real must be uint8");
}

// (d q, d k, d v), given by the caller as (B, H, N, .) views of its inputs' shapes (separate tensors, or the three
// parts of one packed gradient), each with a contiguous last dim
void check_gradients(const std::vector<torch::Tensor>& grads, const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& v) {
  TORCH_CHECK(grads.size() == 3, "grads must be (d q, d k, d v)");
  const torch::Tensor* inputs[] = {&q, &k, &v};
  for (int i = 0; i < 3; ++i) {
    check_rows(grads[i], "grads");
    TORCH_CHECK(grads[i].sizes() == inputs[i]->sizes() && grads[i].scalar_type() == inputs[i]->scalar_type(),
                "grads must have their inputs' shapes and dtype");
  }
}

// A walk's output, (B, H, N, e) as a view of a (B, N, H, e) tensor: heads merged for the output projection for free
torch::Tensor walk_output(const torch::Tensor& like, const torch::Tensor& v) {
  return torch::empty({like.size(0), like.size(2), like.size(1), v.size(3)}, v.options()).permute({0, 2, 1, 3});
}

// Returns (out, logz (B, H, N, d)).
std::vector<torch::Tensor> efficient_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real) {
  check_walk_inputs(q, k, v, real);
  TORCH_CHECK(q.size(3) == k.size(3), "q and k must have one width (the query's softmax reads the keys' features)");
  const int64_t batch = q.size(0), heads = q.size(1), length = q.size(2);
  auto out = walk_output(q, v);
  auto logz = torch::empty({batch, heads, length, k.size(3)}, k.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "efficient_forward", [&] {
    efficient_forward_impl<scalar_t>(Strided<scalar_t>(q), Strided<scalar_t>(k), Strided<scalar_t>(v),
                                     real.data_ptr<uint8_t>(), StridedOut<scalar_t>(out), logz.data_ptr<scalar_t>(),
                                     batch, heads, length, q.size(3), v.size(3));
  });
  return {out, logz};
}

// Fills grads = (d q, d k, d v) and returns them.
std::vector<torch::Tensor> efficient_backward(torch::Tensor g, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                              torch::Tensor real, torch::Tensor logz, std::vector<torch::Tensor> grads) {
  check_rows(g, "grad");
  check(logz, "logz", 4);
  check_gradients(grads, q, k, v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "efficient_backward", [&] {
    efficient_backward_impl<scalar_t>(Strided<scalar_t>(g), Strided<scalar_t>(q), Strided<scalar_t>(k),
                                      Strided<scalar_t>(v), real.data_ptr<uint8_t>(), logz.data_ptr<scalar_t>(),
                                      StridedOut<scalar_t>(grads[0]), StridedOut<scalar_t>(grads[1]),
                                      StridedOut<scalar_t>(grads[2]), q.size(0), q.size(1), q.size(2), q.size(3),
                                      v.size(3));
  });
  return grads;
}

// q, k (B, H, N, d) before the features, v (B, H, N, e): strided, contiguous last dim; real (B, N) uint8.
// Returns (out, den (B, H, N)).
std::vector<torch::Tensor> linear_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                          double eps) {
  check_walk_inputs(q, k, v, real);
  const int64_t batch = q.size(0), heads = q.size(1), length = q.size(2);
  auto out = walk_output(q, v);
  auto den = torch::empty({batch, heads, length}, v.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linear_forward", [&] {
    const EluFeatures<scalar_t> phi{Strided<scalar_t>(q), Strided<scalar_t>(k), q.size(3)};
    linear_forward_impl<scalar_t>(phi, Strided<scalar_t>(v), real.data_ptr<uint8_t>(), static_cast<scalar_t>(eps),
                                  StridedOut<scalar_t>(out), den.data_ptr<scalar_t>(), batch, heads, length, v.size(3));
  });
  return {out, den};
}

// Fills grads = (d q, d k, d v) and returns them.
std::vector<torch::Tensor> linear_backward(torch::Tensor g, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                           torch::Tensor real, torch::Tensor den, double eps,
                                           std::vector<torch::Tensor> grads) {
  check_rows(g, "grad");
  check(den, "den", 3);
  check_gradients(grads, q, k, v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linear_backward", [&] {
    const EluFeatures<scalar_t> phi{Strided<scalar_t>(q), Strided<scalar_t>(k), q.size(3)};
    linear_backward_impl<scalar_t>(phi, Strided<scalar_t>(g), Strided<scalar_t>(v), real.data_ptr<uint8_t>(),
                                   den.data_ptr<scalar_t>(), static_cast<scalar_t>(eps), StridedOut<scalar_t>(grads[0]),
                                   StridedOut<scalar_t>(grads[1]), StridedOut<scalar_t>(grads[2]), q.size(0),
                                   q.size(1), q.size(2), q.size(3), v.size(3));
  });
  return grads;
}

namespace {

// Performer's map for the walk: the projection (m, d) as s W^T (d, m) and hw (m,), and the (B, H, N, m) feature
// rows, to be written (the forward) or read back (the backward).
struct FavorInputs {
  torch::Tensor scaled_t, half_sq, fq, fk;
};

FavorInputs favor_inputs(const torch::Tensor& q, const torch::Tensor& projection) {
  check(projection, "projection", 2);
  TORCH_CHECK(projection.size(1) == q.size(3) && projection.scalar_type() == q.scalar_type(),
              "projection must be (m, d) of q's dtype, d = q's last dim");
  const double s = std::pow(static_cast<double>(q.size(3)), -0.25);
  return {(projection.t() * s).contiguous(), projection.square().sum(1).mul(0.5).contiguous(), {}, {}};
}

template <typename T> FavorFeatures<T> favor(const torch::Tensor& q, const torch::Tensor& k, const FavorInputs& in,
                                             bool made) {
  return {Strided<T>(q), Strided<T>(k), q.size(3), in.scaled_t.size(1), q.size(1), q.size(2),
          in.scaled_t.data_ptr<T>(), in.half_sq.data_ptr<T>(), in.fq.data_ptr<T>(), in.fk.data_ptr<T>(), made};
}

}  // namespace

// q, k (B, H, N, d) before the features, v (B, H, N, e), real (B, N) uint8, projection (m, d). Returns
// (out, den, fq, fk): the features (B, H, N, m) are kept for the backward (their padded rows are never written).
std::vector<torch::Tensor> performer_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                             torch::Tensor projection, double eps) {
  check_walk_inputs(q, k, v, real);
  const int64_t batch = q.size(0), heads = q.size(1), length = q.size(2);
  auto in = favor_inputs(q, projection);
  in.fq = torch::empty({batch, heads, length, projection.size(0)}, q.options());
  in.fk = torch::empty_like(in.fq);
  auto out = walk_output(q, v);
  auto den = torch::empty({batch, heads, length}, v.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "performer_forward", [&] {
    linear_forward_impl<scalar_t>(favor<scalar_t>(q, k, in, false), Strided<scalar_t>(v), real.data_ptr<uint8_t>(),
                                  static_cast<scalar_t>(eps), StridedOut<scalar_t>(out), den.data_ptr<scalar_t>(),
                                  batch, heads, length, v.size(3));
  });
  return {out, den, in.fq, in.fk};
}

// Fills grads = (d q, d k, d v) and returns them; the projection gets none (fixed random features).
std::vector<torch::Tensor> performer_backward(torch::Tensor g, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                              torch::Tensor real, torch::Tensor den, torch::Tensor fq,
                                              torch::Tensor fk, torch::Tensor projection, double eps,
                                              std::vector<torch::Tensor> grads) {
  check_rows(g, "grad");
  check(den, "den", 3);
  check(fq, "fq", 4);
  check(fk, "fk", 4);
  check_gradients(grads, q, k, v);
  auto in = favor_inputs(q, projection);
  in.fq = fq;
  in.fk = fk;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "performer_backward", [&] {
    linear_backward_impl<scalar_t>(favor<scalar_t>(q, k, in, true), Strided<scalar_t>(g), Strided<scalar_t>(v),
                                   real.data_ptr<uint8_t>(), den.data_ptr<scalar_t>(), static_cast<scalar_t>(eps),
                                   StridedOut<scalar_t>(grads[0]), StridedOut<scalar_t>(grads[1]),
                                   StridedOut<scalar_t>(grads[2]), q.size(0), q.size(1), q.size(2), q.size(3),
                                   v.size(3));
  });
  return grads;
}

// q, k (B, H, N, d), v (B, H, N, e): strided, contiguous last dim; real (B, N) uint8; gamma (H,) of q's dtype.
// Returns (out,): nothing kept for the backward.
std::vector<torch::Tensor> retention_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
                                             torch::Tensor gamma) {
  check_walk_inputs(q, k, v, real);
  check(gamma, "gamma", 1);
  TORCH_CHECK(gamma.size(0) == q.size(1) && gamma.scalar_type() == q.scalar_type(), "gamma must be (H,) of q's dtype");
  auto out = walk_output(q, v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "retention_forward", [&] {
    retention_forward_impl<scalar_t>(Strided<scalar_t>(q), Strided<scalar_t>(k), Strided<scalar_t>(v),
                                     real.data_ptr<uint8_t>(), gamma.data_ptr<scalar_t>(), StridedOut<scalar_t>(out),
                                     q.size(0), q.size(1), q.size(2), q.size(3), v.size(3));
  });
  return {out};
}

// Fills grads = (d q, d k, d v) and returns them.
std::vector<torch::Tensor> retention_backward(torch::Tensor g, torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                              torch::Tensor real, torch::Tensor gamma,
                                              std::vector<torch::Tensor> grads) {
  check_rows(g, "grad");
  check_gradients(grads, q, k, v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "retention_backward", [&] {
    retention_backward_impl<scalar_t>(Strided<scalar_t>(g), Strided<scalar_t>(q), Strided<scalar_t>(k),
                                      Strided<scalar_t>(v), real.data_ptr<uint8_t>(), gamma.data_ptr<scalar_t>(),
                                      StridedOut<scalar_t>(grads[0]), StridedOut<scalar_t>(grads[1]),
                                      StridedOut<scalar_t>(grads[2]), q.size(0), q.size(1), q.size(2), q.size(3),
                                      v.size(3));
  });
  return grads;
}
