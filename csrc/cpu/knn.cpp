// Exact brute-force k-nearest-neighbour search in the max-norm, for the kNN
// entropy (Kozachenko-Leonenko) and KSG mutual-information estimators.
//
// z [B, N, D]: the first dx columns are x, the rest y. For every row i of every
// batch cell, with d_x(i, j) = max_{c < dx} |z_jc - z_ic| and d_y likewise over
// the columns c >= dx, and the joint distance max(d_x, d_y):
//
//   eps_i  = k-th smallest joint distance over j != i
//   mode 0 (radii only):  no counts
//   mode 1 (KSG variant 1): n_x = #{j != i : d_x(i, j) <  eps_i},            likewise n_y
//   mode 2 (KSG variant 2): n_x = #{j != i : d_x(i, j) <= max over the k joint neighbours of d_x}, likewise n_y
//
// |a - b| and max are exact in floating point, so every distance is the same
// number the torch reference (torch.cdist with p = inf) computes, in the input
// dtype, and eps / the counts match it bit for bit (up to which of several tied
// neighbours the variant-2 extent is taken over).
//
// Layout: each batch cell is transposed once to column-major [D, N] so the
// distance of one query to all N points is a run of unit-stride vector max /
// abs over N per column. Each thread keeps two length-N rows (d_x and d_y of its
// current query); no N x N matrix is formed. The k smallest joint distances are
// kept in a sorted insertion array (k is small); the branch that inserts is
// rarely taken once the array holds k real candidates.
//
// OpenMP over all B * N query rows (static chunks); compiled twice, for AVX2 and
// for the baseline ISA (see cpu_features.h).
#include "../ops.h"
#include "cpu_features.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

template <typename T>
struct KnnJob {
  const T* zt;       // [B, D, N] column-major copy of z
  int64_t batch, n, d, dx, k;
  int mode;          // 0 radii, 1 KSG variant 1, 2 KSG variant 2
  T* eps;            // [B, N]
  int64_t* nx;       // [B, N] (mode > 0)
  int64_t* ny;       // [B, N] (mode > 0)
};

// Max-norm distance from query q (column values qc[c]) over columns [c0, c1) to all n points.
template <typename T>
[[gnu::always_inline]] inline void marginal(const T* __restrict zt, int64_t n, int64_t c0, int64_t c1,
                                            const T* __restrict qc, T* __restrict out) {
  {
    const T* col = zt + c0 * n;
    const T q = qc[c0];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const T v = col[j] - q;
      out[j] = v < T(0) ? -v : v;
    }
  }
  for (int64_t c = c0 + 1; c < c1; ++c) {
    const T* col = zt + c * n;
    const T q = qc[c];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const T v = col[j] - q;
      const T a = v < T(0) ? -v : v;
      out[j] = a > out[j] ? a : out[j];
    }
  }
}

template <typename T>
[[gnu::always_inline]] inline int64_t count_below(const T* __restrict v, int64_t n, T bound, bool inclusive) {
  int64_t cnt = 0;
  if (inclusive) {
#pragma omp simd reduction(+ : cnt)
    for (int64_t j = 0; j < n; ++j) cnt += v[j] <= bound ? 1 : 0;
  } else {
#pragma omp simd reduction(+ : cnt)
    for (int64_t j = 0; j < n; ++j) cnt += v[j] < bound ? 1 : 0;
  }
  return cnt;
}

template <typename T>
[[gnu::always_inline]] inline void knn_body(const KnnJob<T>& job, int64_t r0, int64_t r1, T* dxm, T* dym,
                                            T* best, int64_t* best_idx) {
  const int64_t n = job.n, d = job.d, dx = job.dx, k = job.k;
  const bool has_y = dx < d;
  const T inf = std::numeric_limits<T>::infinity();
  T qc[64];
  std::vector<T> qbig;
  T* q = qc;
  if (d > 64) {
    qbig.resize(d);
    q = qbig.data();
  }
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / n, i = r % n;
    const T* zt = job.zt + b * d * n;
    for (int64_t c = 0; c < d; ++c) q[c] = zt[c * n + i];
    marginal<T>(zt, n, 0, dx, q, dxm);
    dxm[i] = inf;
    if (has_y) {
      marginal<T>(zt, n, dx, d, q, dym);
      dym[i] = inf;
    }
    // k smallest joint distances, ascending, in best[0..k).
    for (int64_t m = 0; m < k; ++m) {
      best[m] = inf;
      best_idx[m] = -1;
    }
    T kth = inf;
    for (int64_t j = 0; j < n; ++j) {
      const T v = has_y ? (dxm[j] > dym[j] ? dxm[j] : dym[j]) : dxm[j];
      if (v < kth) {
        int64_t m = k - 1;
        while (m > 0 && best[m - 1] > v) {
          best[m] = best[m - 1];
          best_idx[m] = best_idx[m - 1];
          --m;
        }
        best[m] = v;
        best_idx[m] = j;
        kth = best[k - 1];
      }
    }
    // Fewer than k finite candidates (a non-finite input): the reference's top-k
    // then includes inf entries, so its k-th value is inf as well.
    job.eps[r] = kth;
    if (job.mode == 0) continue;
    if (job.mode == 1) {
      job.nx[r] = count_below<T>(dxm, n, kth, false);
      job.ny[r] = count_below<T>(dym, n, kth, false);
    } else {
      T ex = -inf, ey = -inf;
      for (int64_t m = 0; m < k; ++m) {
        const int64_t j = best_idx[m];
        const T a = j >= 0 ? dxm[j] : inf, c = j >= 0 ? dym[j] : inf;
        ex = a > ex ? a : ex;
        ey = c > ey ? c : ey;
      }
      job.nx[r] = count_below<T>(dxm, n, ex, true);
      job.ny[r] = count_below<T>(dym, n, ey, true);
    }
  }
}

#ifdef EF_HAVE_AVX2_CLONE
template <typename T>
[[gnu::target("avx2,fma")]] void knn_rows_avx2(const KnnJob<T>& job, int64_t r0, int64_t r1, T* dxm, T* dym, T* best,
                                              int64_t* best_idx) {
  knn_body<T>(job, r0, r1, dxm, dym, best, best_idx);
}
#endif

template <typename T>
void knn_rows_generic(const KnnJob<T>& job, int64_t r0, int64_t r1, T* dxm, T* dym, T* best, int64_t* best_idx) {
  knn_body<T>(job, r0, r1, dxm, dym, best, best_idx);
}

template <typename T>
void knn_impl(const KnnJob<T>& job) {
  void (*rows_fn)(const KnnJob<T>&, int64_t, int64_t, T*, T*, T*, int64_t*) = knn_rows_generic<T>;
#ifdef EF_HAVE_AVX2_CLONE
  if (cpu_has_avx2_fma()) rows_fn = knn_rows_avx2<T>;
#endif
  const int64_t total = job.batch * job.n;
  const bool parallel = total * job.n * job.d > (int64_t{1} << 18);
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  constexpr int64_t kChunk = 16;  // query rows per scheduling unit
  const int64_t chunks = (total + kChunk - 1) / kChunk;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> buf(2 * job.n + job.k);
    std::vector<int64_t> idx(job.k);
    T* dxm = buf.data();
    T* dym = dxm + job.n;
    T* best = dym + job.n;
#pragma omp for schedule(dynamic, 4)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t r0 = c * kChunk, r1 = std::min(total, r0 + kChunk);
      rows_fn(job, r0, r1, dxm, dym, best, idx.data());
    }
  }
}

}  // namespace

std::vector<torch::Tensor> knn_maxnorm_cpu(const torch::Tensor& z, int64_t dx, int64_t k, int64_t mode) {
  TORCH_CHECK(z.device().is_cpu(), "knn_maxnorm_cpu: z must be a CPU tensor, got ", z.device());
  TORCH_CHECK(z.dim() == 3, "knn_maxnorm_cpu: z must be 3-D [B, N, D], got shape ", z.sizes());
  TORCH_CHECK(z.scalar_type() == torch::kFloat32 || z.scalar_type() == torch::kFloat64,
              "knn_maxnorm_cpu: z must be float32 or float64, got ", z.scalar_type());
  TORCH_CHECK(z.is_contiguous(), "knn_maxnorm_cpu: z must be contiguous");
  TORCH_CHECK(mode == 0 || mode == 1 || mode == 2, "knn_maxnorm_cpu: mode must be 0 (radii), 1 or 2 (KSG variant), got ",
              mode);
  const int64_t batch = z.size(0), n = z.size(1), d = z.size(2);
  TORCH_CHECK(d >= 1, "knn_maxnorm_cpu: z needs at least one column");
  if (mode == 0) {
    TORCH_CHECK(dx == d, "knn_maxnorm_cpu: mode 0 (radii) measures all columns: dx must equal D=", d, ", got ", dx);
  } else {
    TORCH_CHECK(dx >= 1 && dx < d, "knn_maxnorm_cpu: KSG needs 1 <= dx < D=", d, ", got dx=", dx);
  }
  TORCH_CHECK(k >= 1 && k < n, "knn_maxnorm_cpu: need 1 <= k < N=", n, ", got k=", k);

  auto eps = torch::empty({batch, n}, z.options());
  auto long_opts = z.options().dtype(torch::kInt64);
  auto nx = mode > 0 ? torch::empty({batch, n}, long_opts) : torch::empty({0}, long_opts);
  auto ny = mode > 0 ? torch::empty({batch, n}, long_opts) : torch::empty({0}, long_opts);
  if (batch == 0 || n == 0) return {eps, nx, ny};
  auto zt = z.transpose(1, 2).contiguous();  // [B, D, N]

  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "knn_maxnorm_cpu", [&] {
    KnnJob<scalar_t> job{zt.data_ptr<scalar_t>(), batch, n, d, dx, k, static_cast<int>(mode),
                         eps.data_ptr<scalar_t>(), mode > 0 ? nx.data_ptr<int64_t>() : nullptr,
                         mode > 0 ? ny.data_ptr<int64_t>() : nullptr};
    knn_impl<scalar_t>(job);
  });
  return {eps, nx, ny};
}
