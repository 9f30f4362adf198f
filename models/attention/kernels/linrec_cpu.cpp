// LinRec (paper form) as fused C++ passes per (sequence, head): the source of the extension linrec_cpp.py builds
// (torch.utils.cpp_extension.load_inline, -O3 -march=native -fopenmp). The design and the maths are in the
// docstring of linrec_cpp.py; the PyTorch path (kernels/linrec.py) is the reference it is tested against.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

// A (B, N, H, d) tensor with a contiguous last dim, any other strides: the kernels read q, k, v straight
// from the packed projection (B, N, 3, H, d) and write outputs in the layout the output projection reads.
template <typename T> struct Rows {
  T* data;
  int64_t sb, sn, sh;
  explicit Rows(const torch::Tensor& t) : data(t.data_ptr<T>()), sb(t.stride(0)), sn(t.stride(1)), sh(t.stride(2)) {
    TORCH_CHECK(t.dim() == 4 && t.stride(3) == 1, "linrec cpp: expected (B, N, H, d) with a contiguous last dim");
  }
  T* operator()(int64_t b, int64_t i, int64_t h) const { return data + b * sb + i * sn + h * sh; }
};

// G: heads per task -- all of them when a position's heads are adjacent in memory (the packed projection), one
// when each head is its own contiguous block ((B, H, N, d) tensors): a task walks memory in order either way.
struct Dims { int64_t B, N, H, D, E, G; };

// elu(x) = x for x > 0, e^x - 1 otherwise. float: e^x - 1 = (2^n - 1) + 2^n expm1(r), x = n ln2 + r,
// expm1(r) by a degree-7 polynomial (the classic Cephes coefficients, ~1 ulp) -- branch- and call-free, so
// the row loops vectorise (ATen's elu costs ~4 ns per element here, 4x its exp). double: std::expm1.
static inline float elu(float x) {
  const float t = std::max(std::min(x, 0.0f), -87.0f);
  const float n = std::floor(t * 1.44269504088896341f + 0.5f);
  const float r = t - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float em1 = p * r * r + r;  // expm1(r)
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);  // 2^n
  return x > 0.0f ? x : (scale - 1.0f) + scale * em1;
}
static inline double elu(double x) { return x > 0.0 ? x : std::expm1(x); }

// ELU's derivative from its output f = elu(x): 1 where x > 0, exp(x) = f + 1 elsewhere
template <typename T> static inline T elu_grad(T f) { return f > T(0) ? T(1) : f + T(1); }

// The small dense steps every walk is made of, on one head. kD, kE > 0: sizes known at compile time; 0: the
// runtime sizes. (Sizes are read through d() and e(), never stored: inside the parallel lambdas a stored size
// would be a load from memory, and the loops would not unroll.)
template <typename T, int kD, int kE> struct Steps {
  int64_t D_, E_;
  explicit Steps(const Dims& n) : D_(n.D), E_(n.E) {}
  inline int64_t d() const { return kD ? kD : D_; }
  inline int64_t e() const { return kE ? kE : E_; }
  // f = elu(x) m
  inline void features(const T* __restrict x, T m, T* __restrict f) const {
    const int64_t D = d();
    for (int64_t c = 0; c < D; ++c) f[c] = elu(x[c]) * m;
  }
  // M (D x E) += x y^T
  inline void outer_add(const T* __restrict x, const T* __restrict y, T* __restrict M) const {
    const int64_t D = d(), E = e();
    for (int64_t c = 0; c < D; ++c) {
      const T xc = x[c];
      T* __restrict row = M + c * E;
      for (int64_t e = 0; e < E; ++e) row[e] += xc * y[e];
    }
  }
  // y (E) = x^T M
  inline void vec_mat(const T* __restrict x, const T* __restrict M, T* __restrict y) const {
    const int64_t D = d(), E = e();
    for (int64_t e = 0; e < E; ++e) y[e] = T(0);
    for (int64_t c = 0; c < D; ++c) {
      const T xc = x[c];
      const T* __restrict row = M + c * E;
      for (int64_t e = 0; e < E; ++e) y[e] += xc * row[e];
    }
  }
  // z (D) = M y
  inline void mat_vec(const T* __restrict M, const T* __restrict y, T* __restrict z) const {
    const int64_t D = d(), E = e();
    for (int64_t c = 0; c < D; ++c) {
      const T* __restrict row = M + c * E;
      T s = 0;
      for (int64_t e = 0; e < E; ++e) s += row[e] * y[e];
      z[c] = s;
    }
  }
  // a real key: fk = elu(k) m, column norms P += fk^2, state += fk v^T
  inline void add_key(const T* __restrict k, const T* __restrict v, T m, T* __restrict fk, T* __restrict P,
                      T* __restrict state) const {
    const int64_t D = d();
    features(k, m, fk);
    for (int64_t c = 0; c < D; ++c) P[c] += fk[c] * fk[c];
    outer_add(fk, v, state);
  }
  inline T sum_sq(const T* __restrict x) const {
    const int64_t D = d();
    T s = 0;
    for (int64_t c = 0; c < D; ++c) s += x[c] * x[c];
    return s;
  }
};

// Every kernel runs one sequence (packed layout: all its heads; head-major layout: one head) per task and walks
// its positions once, the task's heads of a position together: rows stream in memory order, and the heads'
// independent updates overlap in the core.

// ---- causal: out_i = q~_i^T H_i, H_i = sum_{j<=i} fk_j v_j^T, q~_i = fq_i / (sqrt(d) |fq_i| sqrt(n_i) sqrt(P_i))
template <typename T, int kD, int kE>
void causal_forward_impl(Rows<T> q, Rows<T> k, Rows<T> v, const T* real, Rows<T> out, Dims n, T eps2) {
  const Steps<T, kD, kE> s(n);
  at::parallel_for(0, n.B * (n.H / n.G), 1, [&](int64_t begin, int64_t end) {
    const int64_t D = s.d(), E = s.e(), H = n.G, groups = n.H / n.G;  // H: heads of this task
    std::vector<T> state(H * D * E), P(H * D), fk(D), fq(D), w(D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, h0 = (task % groups) * H;
      std::fill(state.begin(), state.end(), T(0));
      std::fill(P.begin(), P.end(), T(0));
      const T* m0 = real + b * n.N;
      T count = 0;
      for (int64_t i = 0; i < n.N; ++i) {
        const T m = m0[i];
        if (m == T(0)) {  // a padded key adds nothing; its output row is 0
          for (int64_t h = 0; h < H; ++h) std::fill(out(b, i, h0 + h), out(b, i, h0 + h) + E, T(0));
          continue;
        }
        count += m;
        const T a = T(1) / std::sqrt(std::max(count, T(1)));
        for (int64_t h = 0; h < H; ++h) {
          T *Ph = P.data() + h * D, *Hh = state.data() + h * D * E;
          s.add_key(k(b, i, h0 + h), v(b, i, h0 + h), m, fk.data(), Ph, Hh);
          s.features(q(b, i, h0 + h), T(1), fq.data());
          const T scale = a / std::sqrt(std::max(T(D) * s.sum_sq(fq.data()), eps2));
          for (int64_t c = 0; c < D; ++c) w[c] = fq[c] * scale / std::sqrt(std::max(Ph[c], eps2));
          s.vec_mat(w.data(), Hh, out(b, i, h0 + h));
        }
      }
    }
  });
}

// A forward walk recomputes H, P and q~ and forms dq; a reverse walk accumulates R = sum_{i>=j} q~_i g_i^T and
// the suffix sums of the prefix-norm gradient, giving dk_j and dv_j = fk_j^T R. Every row of dq, dk, dv is written.
template <typename T, int kD, int kE>
void causal_backward_impl(Rows<T> g, Rows<T> q, Rows<T> k, Rows<T> v, const T* real, Rows<T> dq, Rows<T> dk,
                          Rows<T> dv, Dims n, T eps2) {
  const Steps<T, kD, kE> s(n);
  at::parallel_for(0, n.B * (n.H / n.G), 1, [&](int64_t begin, int64_t end) {
    const int64_t D = s.d(), E = s.e(), N = n.N, H = n.G, groups = n.H / n.G;
    std::vector<T> state(H * D * E), P(H * D), R(H * D * E), suffix(H * D), fk(D), fq(D), hg(D), rk(D);
    std::vector<T> qt(N * H * D), per_prefix(N * H * D);  // per position and head, for the reverse walk
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, h0 = (task % groups) * H;
      std::fill(state.begin(), state.end(), T(0));
      std::fill(P.begin(), P.end(), T(0));
      const T* m0 = real + b * N;
      T count = 0;
      for (int64_t i = 0; i < N; ++i) {
        const T m = m0[i];
        if (m == T(0)) {
          std::fill(qt.data() + i * H * D, qt.data() + (i + 1) * H * D, T(0));
          std::fill(per_prefix.data() + i * H * D, per_prefix.data() + (i + 1) * H * D, T(0));
          for (int64_t h = 0; h < H; ++h) std::fill(dq(b, i, h0 + h), dq(b, i, h0 + h) + D, T(0));
          continue;
        }
        count += m;
        const T a = T(1) / std::sqrt(std::max(count, T(1)));
        for (int64_t h = 0; h < H; ++h) {
          T *Ph = P.data() + h * D, *Hh = state.data() + h * D * E;
          T *qti = qt.data() + (i * H + h) * D, *ppi = per_prefix.data() + (i * H + h) * D, *dqi = dq(b, i, h0 + h);
          s.add_key(k(b, i, h0 + h), v(b, i, h0 + h), m, fk.data(), Ph, Hh);
          s.features(q(b, i, h0 + h), T(1), fq.data());
          const T sq = s.sum_sq(fq.data());
          const bool row_clamped = T(D) * sq < eps2;
          const T r = T(1) / std::sqrt(std::max(T(D) * sq, eps2));
          s.mat_vec(Hh, g(b, i, h0 + h), hg.data());  // H g_i
          T weighted_sum = 0;
          for (int64_t c = 0; c < D; ++c) {
            const T S = T(1) / std::sqrt(std::max(Ph[c], eps2));
            const T dqt = hg[c] * S;
            qti[c] = fq[c] * S * r * a;
            const T weighted = dqt * fq[c];
            weighted_sum += weighted;
            ppi[c] = Ph[c] < eps2 ? T(0) : weighted * S * S * r * a;
            hg[c] = dqt;
          }
          const T row_term = row_clamped ? T(0) : -T(D) * r * r * r * a * weighted_sum;
          for (int64_t c = 0; c < D; ++c) dqi[c] = (hg[c] * r * a + fq[c] * row_term) * elu_grad(fq[c]);
        }
      }
      std::fill(R.begin(), R.end(), T(0));
      std::fill(suffix.begin(), suffix.end(), T(0));
      for (int64_t j = N - 1; j >= 0; --j) {
        const T m = m0[j];
        if (m == T(0)) {
          for (int64_t h = 0; h < H; ++h) {
            std::fill(dk(b, j, h0 + h), dk(b, j, h0 + h) + D, T(0));
            std::fill(dv(b, j, h0 + h), dv(b, j, h0 + h) + E, T(0));
          }
          continue;
        }
        for (int64_t h = 0; h < H; ++h) {
          T *Rh = R.data() + h * D * E, *sh = suffix.data() + h * D, *dkj = dk(b, j, h0 + h);
          s.outer_add(qt.data() + (j * H + h) * D, g(b, j, h0 + h), Rh);
          const T* ppj = per_prefix.data() + (j * H + h) * D;
          for (int64_t c = 0; c < D; ++c) sh[c] += ppj[c];
          s.features(k(b, j, h0 + h), m, fk.data());
          s.mat_vec(Rh, v(b, j, h0 + h), rk.data());  // R v_j
          s.vec_mat(fk.data(), Rh, dv(b, j, h0 + h));
          for (int64_t c = 0; c < D; ++c) dkj[c] = (rk[c] - fk[c] * sh[c]) * m * elu_grad(fk[c]);
        }
      }
    }
  });
}

// ---- bidirectional: W = diag(1 / sqrt(n |fk_col|^2)) sum_j fk_j v_j^T over the n real keys,
// out_i = fq_i^T W / (sqrt(d) |fq_i|) on real rows.
// The state is fixed while a walk reads it, so positions go kBlock at a time through two small matrix products
// on contiguous buffers (rows of padded positions zeroed: padding may hold anything, NaN included): a state row
// is loaded and stored once per block instead of once per position, and the block's rows stay in registers.
// (Causal walks cannot do this without a per-block triangle; they keep the per-position steps.)

constexpr int kBlock = 8;  // positions per block

// One vector register's worth (AVX-512: 64 bytes, 16 floats; otherwise 32 bytes, 8 floats) as a GCC/Clang vector
// type: the block's accumulators are named values the compiler keeps in registers (as plain arrays they lived on
// the stack: 2-3x slower, measured). NOTE: 64-byte lines on AVX2 (16 registers of 32 bytes) are split in two and
// kBlock of them spill: 0.82x sdpa's layer fwd+bwd at N = 50 (64 / 2 heads), measured on an AVX2 EPYC.
#ifdef __AVX512F__
constexpr int kLineBytes = 64;
#else
constexpr int kLineBytes = 32;
#endif
template <typename T> struct Line { typedef T type __attribute__((vector_size(kLineBytes))); };
template <typename T> static inline typename Line<T>::type load_line(const T* p) {
  typename Line<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T> static inline void store_line(T* p, typename Line<T>::type v) { std::memcpy(p, &v, sizeof v); }

// Y (kBlock x O) = X (kBlock x I) M (I x O); row-major, contiguous
template <typename T> static inline void block_times(const T* __restrict X, const T* __restrict M, T* __restrict Y,
                                                     int64_t I, int64_t O) {
  constexpr int64_t kW = kLineBytes / sizeof(T);
  int64_t e0 = 0;
  for (; e0 + kW <= O; e0 += kW) {
    typename Line<T>::type acc[kBlock] = {};
    for (int64_t c = 0; c < I; ++c) {
      const auto row = load_line(M + c * O + e0);
      for (int r = 0; r < kBlock; ++r) acc[r] += X[r * I + c] * row;
    }
    for (int r = 0; r < kBlock; ++r) store_line(Y + r * O + e0, acc[r]);
  }
  for (; e0 < O; ++e0) {  // the columns past the last full vector
    for (int r = 0; r < kBlock; ++r) {
      T acc = 0;
      for (int64_t c = 0; c < I; ++c) acc += X[r * I + c] * M[c * O + e0];
      Y[r * O + e0] = acc;
    }
  }
}

// M (I x O) += X^T Y, X (kBlock x I), Y (kBlock x O); row-major, contiguous
template <typename T> static inline void block_outer_add(const T* __restrict X, const T* __restrict Y,
                                                         T* __restrict M, int64_t I, int64_t O) {
  constexpr int64_t kW = kLineBytes / sizeof(T);
  int64_t e0 = 0;
  for (; e0 + kW <= O; e0 += kW) {
    typename Line<T>::type y[kBlock];
    for (int r = 0; r < kBlock; ++r) y[r] = load_line(Y + r * O + e0);
    for (int64_t c = 0; c < I; ++c) {
      auto acc = load_line(M + c * O + e0);
      for (int r = 0; r < kBlock; ++r) acc += X[r * I + c] * y[r];
      store_line(M + c * O + e0, acc);
    }
  }
  for (; e0 < O; ++e0) {
    for (int64_t c = 0; c < I; ++c) {
      T acc = M[c * O + e0];
      for (int r = 0; r < kBlock; ++r) acc += X[r * I + c] * Y[r * O + e0];
      M[c * O + e0] = acc;
    }
  }
}

// (cols x rows) = (rows x cols)^T
template <typename T> static void transpose(const T* A, T* At, int64_t rows, int64_t cols) {
  for (int64_t c = 0; c < rows; ++c)
    for (int64_t e = 0; e < cols; ++e) At[e * rows + c] = A[c * cols + e];
}

// Rows i0 .. i0 + kBlock of head h into X (features elu(x) m, kBlock x D) and, if Y, Y (raw rows of y, kBlock x E);
// rows past N or of padded positions are zero. Returns the block's real count.
template <typename T, int kD, int kE>
static T load_block(const Steps<T, kD, kE>& s, Rows<T> x, Rows<T> y, const T* m0, int64_t N, int64_t b,
                    int64_t i0, int64_t h, T* X, T* Y) {
  const int64_t D = s.d(), E = s.e();
  T count = 0;
  for (int r = 0; r < kBlock; ++r) {
    const int64_t i = i0 + r;
    const T m = i < N ? m0[i] : T(0);
    if (m == T(0)) {
      std::fill(X + r * D, X + (r + 1) * D, T(0));
      if (Y) std::fill(Y + r * E, Y + (r + 1) * E, T(0));
      continue;
    }
    count += m;
    s.features(x(b, i, h), m, X + r * D);
    if (Y) std::copy(y(b, i, h), y(b, i, h) + E, Y + r * E);
  }
  return count;
}

// the unscaled state S = sum_j fk_j v_j^T and column norms P of every head of the task; returns n (at least 1)
template <typename T, int kD, int kE>
static T key_state(const Steps<T, kD, kE>& s, Rows<T> k, Rows<T> v, const T* m0, int64_t b, int64_t h0,
                   const Dims& n, T* X, T* Y, T* P, T* state) {
  const int64_t D = s.d(), E = s.e();
  std::fill(P, P + n.G * D, T(0));
  std::fill(state, state + n.G * D * E, T(0));
  T count = 0;
  for (int64_t i0 = 0; i0 < n.N; i0 += kBlock) {
    for (int64_t h = 0; h < n.G; ++h) {
      const T real = load_block(s, k, v, m0, n.N, b, i0, h0 + h, X, Y);
      if (h == 0) count += real;
      if (real == T(0)) continue;
      T* Ph = P + h * D;
      for (int r = 0; r < kBlock; ++r)
        for (int64_t c = 0; c < D; ++c) Ph[c] += X[r * D + c] * X[r * D + c];
      block_outer_add(X, Y, state + h * D * E, D, E);
    }
  }
  return std::max(count, T(1));
}

// fq_i / (sqrt(d) |fq_i|) in place on the block's rows (zero rows stay zero); r_i per row into r if given
template <typename T, int kD, int kE>
static void normalise_rows(const Steps<T, kD, kE>& s, T* X, T eps2, T* r = nullptr, bool* clamped = nullptr) {
  const int64_t D = s.d();
  for (int row = 0; row < kBlock; ++row) {
    const T sq = s.sum_sq(X + row * D);
    const T inv = T(1) / std::sqrt(std::max(T(D) * sq, eps2));
    if (r) { r[row] = inv; clamped[row] = T(D) * sq < eps2; }
    else for (int64_t c = 0; c < D; ++c) X[row * D + c] *= inv;
  }
}

// The unscaled key state of one task's heads to/from `kept` (B, H, D*E + D): S of head h, then its P. The forward
// keeps it for the backward, which then skips its walk over the keys (one of the five walks of fwd+bwd).
template <typename T> static void keep_state(T* kept, const Dims& n, int64_t b, int64_t h0, const T* S, const T* P) {
  const int64_t DE = n.D * n.E;
  for (int64_t h = 0; h < n.G; ++h) {
    T* to = kept + ((b * n.H) + h0 + h) * (DE + n.D);
    std::copy(S + h * DE, S + (h + 1) * DE, to);
    std::copy(P + h * n.D, P + (h + 1) * n.D, to + DE);
  }
}
template <typename T>
static T kept_state(const T* kept, const Dims& n, int64_t b, int64_t h0, const T* m0, T* S, T* P) {
  const int64_t DE = n.D * n.E;
  for (int64_t h = 0; h < n.G; ++h) {
    const T* from = kept + ((b * n.H) + h0 + h) * (DE + n.D);
    std::copy(from, from + DE, S + h * DE);
    std::copy(from + DE, from + DE + n.D, P + h * n.D);
  }
  T count = 0;
  for (int64_t i = 0; i < n.N; ++i) count += m0[i];
  return std::max(count, T(1));
}

template <typename T, int kD, int kE>
void bidirectional_forward_impl(Rows<T> q, Rows<T> k, Rows<T> v, const T* real, Rows<T> out, T* kept, Dims n,
                                T eps2) {
  const Steps<T, kD, kE> s(n);
  at::parallel_for(0, n.B * (n.H / n.G), 1, [&](int64_t begin, int64_t end) {
    const int64_t D = s.d(), E = s.e(), N = n.N, H = n.G, groups = n.H / n.G;  // H: heads of this task
    std::vector<T> W(H * D * E), P(H * D), X(kBlock * D), Y(kBlock * E);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, h0 = (task % groups) * H;
      const T* m0 = real + b * N;
      const T count = key_state(s, k, v, m0, b, h0, n, X.data(), Y.data(), P.data(), W.data());
      if (kept) keep_state(kept, n, b, h0, W.data(), P.data());
      for (int64_t c = 0; c < H * D; ++c) {
        const T inv = T(1) / std::sqrt(std::max(count * P[c], eps2));
        for (int64_t e = 0; e < E; ++e) W[c * E + e] *= inv;
      }
      for (int64_t i0 = 0; i0 < N; i0 += kBlock) {
        const int rows = static_cast<int>(std::min<int64_t>(kBlock, N - i0));
        for (int64_t h = 0; h < H; ++h) {
          load_block<T>(s, q, q, m0, N, b, i0, h0 + h, X.data(), static_cast<T*>(nullptr));
          normalise_rows(s, X.data(), eps2);
          block_times(X.data(), W.data() + h * D * E, Y.data(), D, E);  // padded rows: 0
          for (int r = 0; r < rows; ++r) std::copy(Y.data() + r * E, Y.data() + (r + 1) * E, out(b, i0 + r, h0 + h));
        }
      }
    }
  });
}

template <typename T, int kD, int kE>
void bidirectional_backward_impl(Rows<T> g, Rows<T> q, Rows<T> k, Rows<T> v, const T* real, const T* kept,
                                 Rows<T> dq, Rows<T> dk, Rows<T> dv, Dims n, T eps2) {
  const Steps<T, kD, kE> s(n);
  at::parallel_for(0, n.B * (n.H / n.G), 1, [&](int64_t begin, int64_t end) {
    const int64_t D = s.d(), E = s.e(), N = n.N, H = n.G, groups = n.H / n.G;  // H: heads of this task
    std::vector<T> S(H * D * E), St(E * D), P(H * D), inv(H * D), dW(H * D * E), dSt(H * E * D), dinv(H * D);
    std::vector<T> X(kBlock * D), Y(kBlock * E), Z(kBlock * D), Wq(kBlock * D), Z2(kBlock * E), r(kBlock);
    bool clamped[kBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / groups, h0 = (task % groups) * H;
      const T* m0 = real + b * N;
      const T count = kept_state(kept, n, b, h0, m0, S.data(), P.data());  // the forward's unscaled S
      for (int64_t c = 0; c < H * D; ++c) inv[c] = T(1) / std::sqrt(std::max(count * P[c], eps2));
      std::fill(dW.begin(), dW.end(), T(0));
      // queries: dq, and dW = sum_i r_i fq_i g_i^T
      for (int64_t h = 0; h < H; ++h) {
        transpose(S.data() + h * D * E, St.data(), D, E);
        const T* invh = inv.data() + h * D;
        for (int64_t i0 = 0; i0 < N; i0 += kBlock) {
          const int rows = static_cast<int>(std::min<int64_t>(kBlock, N - i0));
          load_block(s, q, g, m0, N, b, i0, h0 + h, X.data(), Y.data());  // fq, g (0 on padded rows)
          normalise_rows(s, X.data(), eps2, r.data(), clamped);
          block_times(Y.data(), St.data(), Z.data(), E, D);  // rows: S g_i
          for (int row = 0; row < kBlock; ++row) {
            const T *fq = X.data() + row * D;
            T *wg = Z.data() + row * D, *w = Wq.data() + row * D;
            T dot = 0;
            for (int64_t c = 0; c < D; ++c) { wg[c] *= invh[c]; dot += fq[c] * wg[c]; w[c] = fq[c] * r[row]; }  // W g_i
            if (row >= rows) continue;
            T* dqi = dq(b, i0 + row, h0 + h);
            if (m0[i0 + row] == T(0)) { std::fill(dqi, dqi + D, T(0)); continue; }
            const T ri = r[row], row_term = clamped[row] ? T(0) : -T(D) * ri * ri * ri * dot;
            for (int64_t c = 0; c < D; ++c) dqi[c] = (ri * wg[c] + fq[c] * row_term) * elu_grad(fq[c]);
          }
          block_outer_add(Wq.data(), Y.data(), dW.data() + h * D * E, D, E);
        }
      }
      // W = diag(inv) S: dS = diag(inv) dW; d inv_c = sum_e dW S; inv = (n P)^(-1/2) -> dP = -n inv^3 / 2 d inv
      for (int64_t c = 0; c < H * D; ++c) {
        T acc = 0;
        for (int64_t e = 0; e < E; ++e) { acc += dW[c * E + e] * S[c * E + e]; dW[c * E + e] *= inv[c]; }
        dinv[c] = count * P[c] < eps2 ? T(0) : -count * inv[c] * inv[c] * inv[c] * acc;  // x 2 fk / 2 below
      }
      for (int64_t h = 0; h < H; ++h) transpose(dW.data() + h * D * E, dSt.data() + h * E * D, D, E);
      // keys and values: dk_j = dS v_j + dP, dv_j = dS^T fk_j
      for (int64_t i0 = 0; i0 < N; i0 += kBlock) {
        const int rows = static_cast<int>(std::min<int64_t>(kBlock, N - i0));
        for (int64_t h = 0; h < H; ++h) {
          const T *dSh = dW.data() + h * D * E, *dinvh = dinv.data() + h * D;
          load_block(s, k, v, m0, N, b, i0, h0 + h, X.data(), Y.data());  // fk (m applied), v
          block_times(Y.data(), dSt.data() + h * E * D, Z.data(), E, D);   // rows: dS v_j
          block_times(X.data(), dSh, Z2.data(), D, E);                     // rows: dS^T fk_j (0 when padded)
          for (int row = 0; row < rows; ++row) {
            const int64_t j = i0 + row;
            const T m = m0[j], *fk = X.data() + row * D, *sv = Z.data() + row * D;
            T *dkj = dk(b, j, h0 + h), *dvj = dv(b, j, h0 + h);
            std::copy(Z2.data() + row * E, Z2.data() + (row + 1) * E, dvj);
            for (int64_t c = 0; c < D; ++c) dkj[c] = (sv[c] + dinvh[c] * fk[c]) * m * elu_grad(fk[c]);
          }
        }
      }
    }
  });
}

// Calls fn(integral_constant<kD>, integral_constant<kE>): sizes compiled in for head dims 32 and 64 (15-20 %
// faster here), the runtime loops otherwise. NOTE: 16 stays runtime: compiled in, it measured ~30 % slower.
template <typename F> static void with_head_dims(int64_t D, int64_t E, F&& fn) {
  using std::integral_constant;
  if (D == 32 && E == 32) fn(integral_constant<int, 32>{}, integral_constant<int, 32>{});
  else if (D == 64 && E == 64) fn(integral_constant<int, 64>{}, integral_constant<int, 64>{});
  else fn(integral_constant<int, 0>{}, integral_constant<int, 0>{});
}

static Dims dims_of(const torch::Tensor& q, const torch::Tensor& v) {
  const bool heads_adjacent = q.stride(2) <= q.stride(1);
  return {q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), heads_adjacent ? q.size(2) : 1};
}

// q, k, v: (B, N, H, d), the projections (ELU applied inside); real (B, N), 1 = real item, 0 = padding.
// Returns out (B, N, H, e). Bidirectional: fills `kept` (B, H, d*e + d) with the key state unless it is empty.
torch::Tensor forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real, bool causal,
                      double eps, torch::Tensor kept) {
  const Dims n = dims_of(q, v);
  TORCH_CHECK(kept.numel() == 0 || (kept.is_contiguous() && kept.numel() == n.B * n.H * (n.D * n.E + n.D)),
              "linrec cpp: kept state must be empty or (B, H, d*e + d)");
  auto out = torch::empty({n.B, n.N, n.H, n.E}, v.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linrec_forward", [&] {
    const Rows<scalar_t> Q(q), K(k), V(v), O(out);
    const scalar_t* M = real.data_ptr<scalar_t>();
    scalar_t* S = kept.numel() ? kept.data_ptr<scalar_t>() : nullptr;
    const scalar_t eps2 = scalar_t(eps * eps);
    with_head_dims(n.D, n.E, [&](auto dc, auto ec) {
      constexpr int kD = decltype(dc)::value, kE = decltype(ec)::value;
      if (causal) causal_forward_impl<scalar_t, kD, kE>(Q, K, V, M, O, n, eps2);
      else bidirectional_forward_impl<scalar_t, kD, kE>(Q, K, V, M, O, S, n, eps2);
    });
  });
  return out;
}

// Writes the gradients into dq, dk, dv (B, N, H, d), e.g. three slices of one packed (B, N, 3, H, d) tensor.
// `kept`: bidirectional, the key state the forward kept; causal, ignored.
void backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor real,
              bool causal, double eps, torch::Tensor kept, torch::Tensor dq, torch::Tensor dk, torch::Tensor dv) {
  const Dims n = dims_of(q, v);
  TORCH_CHECK(causal || (kept.is_contiguous() && kept.numel() == n.B * n.H * (n.D * n.E + n.D)),
              "linrec cpp: the bidirectional backward needs the forward's key state (B, H, d*e + d)");
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "linrec_backward", [&] {
    const Rows<scalar_t> G(grad), Q(q), K(k), V(v), dQ(dq), dK(dk), dV(dv);
    const scalar_t* M = real.data_ptr<scalar_t>();
    const scalar_t* S = causal ? nullptr : kept.data_ptr<scalar_t>();
    const scalar_t eps2 = scalar_t(eps * eps);
    with_head_dims(n.D, n.E, [&](auto dc, auto ec) {
      constexpr int kD = decltype(dc)::value, kE = decltype(ec)::value;
      if (causal) causal_backward_impl<scalar_t, kD, kE>(G, Q, K, V, M, dQ, dK, dV, n, eps2);
      else bidirectional_backward_impl<scalar_t, kD, kE>(G, Q, K, V, M, S, dQ, dK, dV, n, eps2);
    });
  });
}
