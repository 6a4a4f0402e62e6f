// Entropy of softmax over the last dim, on the CPU, in one pass over each row:
//
//     p_v = exp(l_v - m) / s,   s = sum_v exp(l_v - m),   t = sum_v exp(l_v - m) (l_v - m)
//     H   = -sum_v p_v log p_v = log s - t / s                         (nats)
//
// m is a running maximum. When it grows from m to m' every term picks up a factor
// c = exp(m - m') and every (l_v - m) becomes (l_v - m) + (m - m'), so
//
//     s' = c s,   t' = c (t + (m - m') s).
//
// The row is read in blocks small enough to stay in L1: block maximum first,
// at most one rescale per block, then the exp terms relative to the (new) running
// maximum. Partial states of the same row combine with the same rule, which lets
// a few very long rows be split across threads.
//
// -inf logits have zero probability and are skipped (their 0 * (-inf) term would
// be NaN). A row with +inf or NaN, or with no finite logit, gives NaN.
// Accumulation is in double for both float32 and float64 input.
#include "../ops.h"
#include "cpu_features.h"
#include "exp_nonpositive.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Terms below exp(-708) (about the smallest normal double) are dropped: they
// vanish next to the row maximum's exp(0) = 1 (exp_nonpositive gives +0 there).
constexpr double kMinExpArg = kExpNonpositiveMinArg;
// Elements per block: the block is re-read from L1 for the exp pass.
constexpr int64_t kBlock = 512;
// A row is split across threads only in pieces at least this long.
constexpr int64_t kMinChunk = 16384;

// v where mask is all ones, +0.0 where it is zero.
[[gnu::always_inline]] inline double masked(double v, uint64_t mask) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof v);
  bits &= mask;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// Online-softmax state of a run of logits: s and t are relative to m.
// s == 0 means no finite logit has been seen yet (the maximum alone adds 1).
struct State {
  double m = -kInf;
  double s = 0.0;
  double t = 0.0;
  bool nonfinite = false;  // +inf or NaN seen
};

// Re-expresses st relative to m_new >= st.m.
inline void rescale(State& st, double m_new) {
  if (st.s > 0.0) {
    const double delta = st.m - m_new;
    const double c = std::exp(delta);
    st.t = c * (st.t + delta * st.s);
    st.s *= c;
  }
  st.m = m_new;
}

inline State merge(State a, State b) {
  const double m = std::max(a.m, b.m);
  rescale(a, m);
  rescale(b, m);
  return {m, a.s + b.s, a.t + b.t, a.nonfinite || b.nonfinite};
}

inline double entropy_of(const State& st) {
  if (st.nonfinite || !(st.s > 0.0)) return std::numeric_limits<double>::quiet_NaN();
  return std::log(st.s) - st.t / st.s;
}

template <typename T>
[[gnu::always_inline]] inline State chunk_state_body(const T* x, int64_t len) {
  State st;
  for (int64_t b0 = 0; b0 < len; b0 += kBlock) {
    const T* blk = x + b0;
    const int64_t n = std::min(kBlock, len - b0);

    double bmax = -kInf;
    int bad = 0;
#pragma omp simd reduction(max : bmax) reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(blk[i]);
      bmax = v > bmax ? v : bmax;
      bad |= !(v < kInf);  // true for +inf and NaN
    }
    if (bad) {
      st.nonfinite = true;  // the row is NaN whatever else it holds
      return st;
    }
    if (bmax == -kInf) continue;  // all -inf: zero probability mass
    if (bmax > st.m) rescale(st, bmax);

    // Every lane computes exp (exp_nonpositive: +0 below kMinExpArg and at -inf);
    // the e * d term is then zeroed with an integer bit mask where it does not
    // count (0 * -inf would be NaN). A floating-point ?: instead lets gcc move the
    // product into a branch, which it does not if-convert under its default
    // -ftrapping-math, and the loop would stay scalar.
    const double m = st.m;
    double s = 0.0, t = 0.0;
#pragma omp simd reduction(+ : s, t)
    for (int64_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(blk[i]) - m;
      const uint64_t keep = d >= kMinExpArg ? ~uint64_t{0} : 0;
      const double e = exp_nonpositive(d);
      s += e;
      t += masked(e * d, keep);
    }
    st.s += s;
    st.t += t;
  }
  return st;
}

// The same source compiled twice (see cpu_features.h).
#ifdef EF_HAVE_AVX2_CLONE
template <typename T>
[[gnu::target("avx2,fma")]] State chunk_state_avx2(const T* x, int64_t len) {
  return chunk_state_body<T>(x, len);
}
#endif

template <typename T>
State chunk_state_generic(const T* x, int64_t len) {
  return chunk_state_body<T>(x, len);
}

template <typename T>
void softmax_entropy_impl(const T* x, T* out, int64_t rows, int64_t cols) {
  State (*chunk_state)(const T*, int64_t) = chunk_state_generic<T>;
#ifdef EF_HAVE_AVX2_CLONE
  if (cpu_has_avx2_fma()) chunk_state = chunk_state_avx2<T>;
#endif

  const bool parallel = rows * cols > 32768;  // below, thread start-up costs more than it saves
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  // Fewer rows than threads: split each row into chunks so every thread works.
  int64_t chunks = 1;
  if (rows < threads) chunks = std::max<int64_t>(1, std::min((threads + rows - 1) / rows, cols / kMinChunk));
  const int64_t chunk_len = (cols + chunks - 1) / chunks;
  std::vector<State> states(rows * chunks);

#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t task = 0; task < rows * chunks; ++task) {
      const int64_t r = task / chunks, c = task % chunks;
      const int64_t begin = c * chunk_len, end = std::min(cols, begin + chunk_len);
      if (begin < end) states[task] = chunk_state(x + r * cols + begin, end - begin);
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      State st = states[r * chunks];
      for (int64_t c = 1; c < chunks; ++c) st = merge(st, states[r * chunks + c]);
      out[r] = static_cast<T>(entropy_of(st));
    }
  }
}

}  // namespace

torch::Tensor softmax_entropy_cpu(const torch::Tensor& logits) {
  TORCH_CHECK(logits.device().is_cpu(), "softmax_entropy_cpu: logits must be a CPU tensor, got ", logits.device());
  TORCH_CHECK(logits.dim() == 2, "softmax_entropy_cpu: logits must be 2-D [R, V], got shape ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == torch::kFloat32 || logits.scalar_type() == torch::kFloat64,
              "softmax_entropy_cpu: dtype must be float32 or float64 (cast float16/bfloat16 to float32 first), got ",
              logits.scalar_type());
  TORCH_CHECK(logits.is_contiguous(), "softmax_entropy_cpu: logits must be contiguous");

  const int64_t rows = logits.size(0), cols = logits.size(1);
  auto out = torch::empty({rows}, logits.options());
  if (rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "softmax_entropy_cpu", [&] {
    softmax_entropy_impl<scalar_t>(logits.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), rows, cols);
  });
  return out;
}
