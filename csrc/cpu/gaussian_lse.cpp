// Log-sum-exp of unit Gaussian kernels between query rows and weighted key rows, on the CPU:
//
//     out[b, m, c] = log sum_n exp(w[b, n, c] - 0.5 * |q[b, m] - k[b, n]|_c^2)
//
// with |.|_0 over the x columns [0, dx), |.|_1 over the y columns [dx, D) and |.|_2 over all
// of them (so s_2 = s_0 + s_1). This is the inner loop of the noisy-channel MI estimator: the
// log-density of a mixture of unit Gaussians centred at the keys, for the x marginal, the y
// marginal and the joint at once.
//
// Distances are direct differences, sum_c (q_c - k_c)^2, never |q|^2 + |k|^2 - 2 q.k: the
// expansion cancels catastrophically when the states sit far from the origin relative to the
// unit noise. Everything (distances, running max and sum) is accumulated in the input dtype.
//
// Layout and blocking:
//  * An OpenMP task is (batch cell, block of kQueryBlock query rows). It walks the keys in
//    blocks of kKeyBlock; inside a block, for every KR-key group and every MR-row group of its
//    queries, the micro-kernel forms the MR x KR squared distances over the x columns and then
//    over the y columns. Queries and keys are read in place, row-major: the micro-kernel's loop
//    runs along the columns, the compiler vectorises it (omp simd with MR * KR reduction
//    variables, one vector accumulator each, summed across lanes at the end), and every
//    column step is MR + KR unit-stride loads for MR * KR subtract + FMA pairs. Nothing is
//    packed, so a call costs no copy of the keys and no fresh pages (a packed copy cost more
//    than the distances when M is small), and ragged column ranges are the vectoriser's tail.
//  * The distances go to a [kQueryBlock][kKeyBlock] scratch per side that stays in L1 / L2.
//    After each key block every query row folds its kKeyBlock values into its running (max,
//    sum) state for the three outputs (online log-sum-exp): nothing M x N is stored, and the
//    exps run over long unit-stride loops. exp is a polynomial the compiler vectorises
//    (exp_nonpositive.h): glibc's expf / exp are scalar calls here (no -ffast-math), which
//    would cost ~20% of the distance work at D ~ 1000 and far more at small D. Terms below
//    e^-87 (float) / e^-708 (double) of the running maximum count as 0.
//  * The last group of a block repeats its last valid query row or key and drops the surplus
//    results, so the micro-kernel has no ragged edge. The log-weights are repacked per cell
//    to [3][N] (3 N elements, cheap) so the fold reads them unit-stride.
//
// The hot code is compiled twice, for AVX2 + FMA (picked at run time) and for the baseline ISA,
// because setup.py builds without -march (see cpu_features.h).
#include "../ops.h"
#include "cpu_features.h"
#include "exp_nonpositive.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

namespace {

// Micro-tile: MR query rows x KR keys. 12 vector accumulators, the KR key vectors (one of them
// used straight from memory) and the query vector fill the 16 ymm registers without spilling.
constexpr int MR = 4;
constexpr int KR = 3;
// Query rows per task: the block's rows (kQueryBlock x D, ~150 KB at D = 1152 fp32) stay in L2
// while the keys stream past them; each task reads every key of its cell once.
constexpr int64_t kQueryBlock = 32;
// Keys per online log-sum-exp step: long enough that the max / exp-sum loops vectorise well,
// short enough that the two [kQueryBlock][kKeyBlock] distance scratches stay in L2.
constexpr int64_t kKeyBlock = 256;

template <typename T>
struct LseJob {
  const T* q;   // [B, M, D] queries, row-major
  const T* k;   // [B, N, D] keys, row-major
  const T* wp;  // [B, 3, N] log-weights, one row per output
  T* out;       // [B, M, 3]
  int64_t batch, m, n, d, dx;
};

// acc[r][j] = sum_{c in [c0, c1)} (q[r][c] - k[j][c])^2, vectorised along the columns. The
// accumulators are named scalars because gcc keeps simd reductions of scalars in registers
// (one vector each); the body is spelled out for MR = 4, KR = 3.
template <typename T>
[[gnu::always_inline]] inline void micro_kernel(const T* const (&q)[MR], const T* const (&k)[KR], int64_t c0,
                                                int64_t c1, T (&acc)[MR][KR]) {
  const T* __restrict q0 = q[0] + c0;
  const T* __restrict q1 = q[1] + c0;
  const T* __restrict q2 = q[2] + c0;
  const T* __restrict q3 = q[3] + c0;
  const T* __restrict k0 = k[0] + c0;
  const T* __restrict k1 = k[1] + c0;
  const T* __restrict k2 = k[2] + c0;
  static_assert(MR == 4 && KR == 3, "the body below is written out for a 4 x 3 tile");
  T a00 = 0, a01 = 0, a02 = 0, a10 = 0, a11 = 0, a12 = 0, a20 = 0, a21 = 0, a22 = 0, a30 = 0, a31 = 0, a32 = 0;
  const int64_t len = c1 - c0;
#pragma omp simd reduction(+ : a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32)
  for (int64_t c = 0; c < len; ++c) {
    const T x0 = k0[c], x1 = k1[c], x2 = k2[c];
    T v = q0[c], e;
    e = v - x0; a00 += e * e;
    e = v - x1; a01 += e * e;
    e = v - x2; a02 += e * e;
    v = q1[c];
    e = v - x0; a10 += e * e;
    e = v - x1; a11 += e * e;
    e = v - x2; a12 += e * e;
    v = q2[c];
    e = v - x0; a20 += e * e;
    e = v - x1; a21 += e * e;
    e = v - x2; a22 += e * e;
    v = q3[c];
    e = v - x0; a30 += e * e;
    e = v - x1; a31 += e * e;
    e = v - x2; a32 += e * e;
  }
  acc[0][0] = a00; acc[0][1] = a01; acc[0][2] = a02;
  acc[1][0] = a10; acc[1][1] = a11; acc[1][2] = a12;
  acc[2][0] = a20; acc[2][1] = a21; acc[2][2] = a22;
  acc[3][0] = a30; acc[3][1] = a31; acc[3][2] = a32;
}

// Fold n values v[j] = w[j] - 0.5 * s[j] into the running state (mx, sum) of one output:
// sum * exp(mx) = sum_j exp(v_j) over every key seen so far. When the block is all -inf (all
// its keys dropped) the state is left as it is; an empty state is (-inf, 0).
template <typename T>
[[gnu::always_inline]] inline void lse_fold(const T* __restrict w, const T* __restrict s, int64_t n, T* __restrict v,
                                            T& mx, T& sum) {
  T tile_max = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : tile_max)
  for (int64_t j = 0; j < n; ++j) {
    v[j] = w[j] - T(0.5) * s[j];
    tile_max = v[j] > tile_max ? v[j] : tile_max;
  }
  if (!(tile_max > -std::numeric_limits<T>::infinity())) return;  // every key of the block dropped
  if (tile_max > mx) {
    sum *= exp_nonpositive(mx - tile_max);  // mx = -inf: exp gives 0, and sum is 0 anyway
    mx = tile_max;
  }
  const T shift = mx;
  T part = T(0);
#pragma omp simd reduction(+ : part)
  for (int64_t j = 0; j < n; ++j) part += exp_nonpositive(v[j] - shift);
  sum += part;
}

// One task: query rows [r0, r1) of batch cell b, against every key. scratch holds
// 2 * kQueryBlock * kKeyBlock (x and y distances) + kKeyBlock (the fold's exp arguments).
template <typename T>
[[gnu::always_inline]] inline void lse_block(const LseJob<T>& job, int64_t b, int64_t r0, int64_t r1, T* scratch) {
  const int64_t d = job.d, dx = job.dx, n = job.n, rows = r1 - r0;
  T* sx = scratch;
  T* sy = sx + kQueryBlock * kKeyBlock;
  T* v = sy + kQueryBlock * kKeyBlock;
  const T* qb = job.q + (b * job.m) * d;
  const T* kb = job.k + b * n * d;
  const T* wb = job.wp + b * 3 * n;
  const T ninf = -std::numeric_limits<T>::infinity();
  T mx[kQueryBlock][3], sum[kQueryBlock][3];
  for (int64_t r = 0; r < rows; ++r)
    for (int c = 0; c < 3; ++c) {
      mx[r][c] = ninf;
      sum[r][c] = T(0);
    }
  for (int64_t k0 = 0; k0 < n; k0 += kKeyBlock) {
    const int64_t nk = std::min(kKeyBlock, n - k0);
    for (int64_t j = 0; j < nk; j += KR) {
      const T* kr[KR];
      for (int s = 0; s < KR; ++s) kr[s] = kb + (k0 + std::min<int64_t>(j + s, nk - 1)) * d;
      const int klive = static_cast<int>(std::min<int64_t>(KR, nk - j));
      for (int64_t g = 0; g < rows; g += MR) {
        const T* q[MR];
        for (int r = 0; r < MR; ++r) q[r] = qb + (r0 + std::min<int64_t>(g + r, rows - 1)) * d;
        T acc[MR][KR];
        const int live = static_cast<int>(std::min<int64_t>(MR, rows - g));
        micro_kernel<T>(q, kr, 0, dx, acc);
        for (int r = 0; r < live; ++r)
          for (int s = 0; s < klive; ++s) sx[(g + r) * kKeyBlock + j + s] = acc[r][s];
        micro_kernel<T>(q, kr, dx, d, acc);
        for (int r = 0; r < live; ++r)
          for (int s = 0; s < klive; ++s) sy[(g + r) * kKeyBlock + j + s] = acc[r][s];
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      T* rx = sx + r * kKeyBlock;
      T* ry = sy + r * kKeyBlock;
      lse_fold<T>(wb + k0, rx, nk, v, mx[r][0], sum[r][0]);
      lse_fold<T>(wb + n + k0, ry, nk, v, mx[r][1], sum[r][1]);
      // The joint squared distance s_x + s_y, formed in place of s_x (folded already).
#pragma omp simd
      for (int64_t j = 0; j < nk; ++j) rx[j] += ry[j];
      lse_fold<T>(wb + 2 * n + k0, rx, nk, v, mx[r][2], sum[r][2]);
    }
  }
  T* o = job.out + (b * job.m + r0) * 3;
  for (int64_t r = 0; r < rows; ++r)
    for (int c = 0; c < 3; ++c) o[r * 3 + c] = mx[r][c] + std::log(sum[r][c]);  // empty: -inf + log 0 = -inf
}

#ifdef EF_HAVE_AVX2_CLONE
template <typename T>
[[gnu::target("avx2,fma")]] void lse_block_avx2(const LseJob<T>& job, int64_t b, int64_t r0, int64_t r1, T* scratch) {
  lse_block<T>(job, b, r0, r1, scratch);
}
#endif

template <typename T>
void lse_block_generic(const LseJob<T>& job, int64_t b, int64_t r0, int64_t r1, T* scratch) {
  lse_block<T>(job, b, r0, r1, scratch);
}

template <typename T>
void gaussian_lse_impl(const T* q, const T* k, const T* w, T* out, int64_t batch, int64_t m, int64_t n, int64_t d,
                       int64_t dx) {
  void (*block_fn)(const LseJob<T>&, int64_t, int64_t, int64_t, T*) = lse_block_generic<T>;
#ifdef EF_HAVE_AVX2_CLONE
  if (cpu_has_avx2_fma()) block_fn = lse_block_avx2<T>;
#endif
  // Below ~4M pair-columns (~0.3 ms on one core) a second thread saves less than the fork / join
  // costs, and on a loaded machine a barrier waiting for a descheduled thread costs milliseconds.
  const bool parallel = batch * m * n * std::max<int64_t>(d, 1) > (int64_t{1} << 22);
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  // Allocated outside the parallel region (an exception must not leave one); uninitialised,
  // as every element is written before it is read.
  std::unique_ptr<T[]> wp(new T[static_cast<size_t>(batch * 3 * n)]);
  const int64_t scratch_size = 2 * kQueryBlock * kKeyBlock + kKeyBlock;
  std::unique_ptr<T[]> scratch(new T[static_cast<size_t>(threads * scratch_size)]);
  const int64_t qblocks = (m + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = batch * qblocks;
  const LseJob<T> job{q, k, wp.get(), out, batch, m, n, d, dx};
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t bj = 0; bj < batch * n; ++bj) {
      const int64_t b = bj / n, j = bj % n;
      for (int c = 0; c < 3; ++c) wp[(b * 3 + c) * n + j] = w[bj * 3 + c];
    }
    T* mine = scratch.get() + omp_get_thread_num() * scratch_size;
    // Blocks cost the same except the last of each cell; dynamic evens out that tail.
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / qblocks, r0 = (t % qblocks) * kQueryBlock;
      block_fn(job, b, r0, std::min(m, r0 + kQueryBlock), mine);
    }
  }
}

}  // namespace

torch::Tensor gaussian_lse_cpu(const torch::Tensor& queries, const torch::Tensor& keys,
                               const torch::Tensor& log_weights, int64_t dx) {
  TORCH_CHECK(queries.device().is_cpu() && keys.device().is_cpu() && log_weights.device().is_cpu(),
              "gaussian_lse_cpu: queries, keys and log_weights must be CPU tensors, got ", queries.device(), ", ",
              keys.device(), " and ", log_weights.device());
  TORCH_CHECK(queries.dim() == 3 && keys.dim() == 3 && log_weights.dim() == 3,
              "gaussian_lse_cpu: expected queries [B, M, D], keys [B, N, D], log_weights [B, N, 3], got shapes ",
              queries.sizes(), ", ", keys.sizes(), " and ", log_weights.sizes());
  const auto dtype = queries.scalar_type();
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kFloat64,
              "gaussian_lse_cpu: queries must be float32 or float64, got ", dtype);
  TORCH_CHECK(keys.scalar_type() == dtype && log_weights.scalar_type() == dtype,
              "gaussian_lse_cpu: keys and log_weights must have the queries' dtype ", dtype, ", got ",
              keys.scalar_type(), " and ", log_weights.scalar_type());
  const int64_t batch = queries.size(0), m = queries.size(1), d = queries.size(2), n = keys.size(1);
  TORCH_CHECK(keys.size(0) == batch && keys.size(2) == d,
              "gaussian_lse_cpu: keys must be [B, N, D] with the queries' B=", batch, " and D=", d, ", got ",
              keys.sizes());
  TORCH_CHECK(log_weights.size(0) == batch && log_weights.size(1) == n && log_weights.size(2) == 3,
              "gaussian_lse_cpu: log_weights must be [B, N, 3] = [", batch, ", ", n, ", 3], got ",
              log_weights.sizes());
  TORCH_CHECK(dx >= 0 && dx <= d, "gaussian_lse_cpu: dx must be in [0, D=", d, "], got ", dx);
  TORCH_CHECK(queries.is_contiguous() && keys.is_contiguous() && log_weights.is_contiguous(),
              "gaussian_lse_cpu: queries, keys and log_weights must be contiguous");

  auto out = torch::empty({batch, m, 3}, queries.options());
  if (out.numel() == 0) return out;
  if (n == 0) return out.fill_(-std::numeric_limits<double>::infinity());  // an empty sum
  AT_DISPATCH_FLOATING_TYPES(dtype, "gaussian_lse_cpu", [&] {
    gaussian_lse_impl<scalar_t>(queries.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(),
                                log_weights.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch, m, n, d, dx);
  });
  return out;
}
