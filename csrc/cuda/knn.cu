// Exact brute-force k-nearest-neighbour search in the max-norm on CUDA, for the kNN entropy
// (Kozachenko-Leonenko) and KSG mutual-information estimators. Same contract as
// knn_maxnorm_cpu (csrc/cpu/knn.cpp): z [B, N, D], columns [0, dx) are x and [dx, D) y;
// d(i, j) = max_c |z_jc - z_ic|, d_x / d_y the same over the x / y columns;
//
//   eps_i = k-th smallest d(i, j) over j != i
//   mode 1 (KSG variant 1): n_x = #{j != i : d_x(i, j) <  eps_i}, likewise n_y
//   mode 2 (KSG variant 2): n_x = #{j != i : d_x(i, j) <= e_x(i)}, likewise n_y, with e_x(i) the
//                           largest d_x(i, j) over the k nearest j
//
// The k nearest are the k smallest pairs (d, j) in lexicographic order (ties go to the lower
// index, as in the CPU kernel). |a - b| and max are exact, so eps is bit-identical to the torch
// reference (torch.cdist, p = inf) and the counts are exact.
//
// Kernels (one thread per query row, 128 rows per block; grid x = batch cell x row block,
// grid y = a split of the points, used when B * row blocks cannot fill the GPU):
//   1. knn_topk_kernel: point tiles of TN (32 fp32, 16 fp64) points x 32 columns in shared memory
//      (the block's query columns beside them, loaded once when D <= 32; larger D is walked in
//      32-column chunks, the queries reloaded per chunk); every thread accumulates the distances
//      of its query to the TN points in registers, then folds them into a sorted register list
//      of its k smallest (d, j). The list is KB = next bucket >= k long (4, 8, 16, 32), fully
//      unrolled so it stays in registers; slots below KB - k hold -inf and never move, so the
//      k-th distance is always slot KB - 1. A tile whose minimum is not below it skips the
//      insertion code, which is the common case once the first tiles have been seen. k <= kRegisterKMax.
//      With one split the kernel writes eps (and the mode-2 extents) itself; with several it
//      writes each split's sorted list and
//   2. knn_merge_kernel merges them per row (S sorted lists, k steps).
//   3. knn_count_kernel (modes 1, 2): the same tiling again with separate x and y distances,
//      counting against the row's bounds; split partial counts are atomically added (integers,
//      so the result does not depend on their order).
// Distances are formed and compared in the input dtype (float32 or float64). Inputs must be
// finite (the estimators check); out-of-range points are padded with +inf so they never count.

#include "common.cuh"
#include "../native_limits.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int kRows = 128;      // query rows per block, one per thread
constexpr int kCols = 32;       // columns per shared-memory chunk
constexpr int kMaxK = kRegisterKMax;  // largest register list
constexpr int kMaxSplits = 64;  // bounds the merge kernel's per-row head array

// Points per tile: TN distances live in registers (x2 in the count kernel), 128 bytes of them.
template <typename T>
__host__ __device__ constexpr int tile_points() {
  return static_cast<int>(128 / sizeof(T));
}
// Row stride of the point tile: 16-byte multiples let the unrolled reads of a row vectorise.
template <typename T>
__host__ __device__ constexpr int tile_stride() {
  return tile_points<T>() + static_cast<int>(16 / sizeof(T));
}

template <typename T>
__device__ __forceinline__ T inf_value() {
  return static_cast<T>(INFINITY);
}
// fabs / fmax: exact, one FADD and one FMNMX (with its |.| operand) per column and point.
__device__ __forceinline__ float abs_diff(float a, float b) { return fabsf(a - b); }
__device__ __forceinline__ double abs_diff(double a, double b) { return fabs(a - b); }
__device__ __forceinline__ float max_of(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double max_of(double a, double b) { return fmax(a, b); }

// Shared tiles: qs[c][r] = column c0 + c of query row r (stride kRows + 1: conflict-free for the
// per-thread reads and the column-fastest writes); ps[c][p] = column c0 + c of point j0 + p.
template <typename T>
struct Tiles {
  T qs[kCols][kRows + 1];
  __align__(16) T ps[kCols][tile_stride<T>()];
};

template <typename T>
__device__ __forceinline__ void load_queries(Tiles<T>& t, const T* __restrict__ zb, int N, int D, int row0, int c0,
                                             int dc) {
  for (int e = threadIdx.x; e < kRows * dc; e += kRows) {
    const int r = e / dc, c = e % dc;
    const int row = row0 + r;
    t.qs[c][r] = row < N ? zb[static_cast<int64_t>(row) * D + c0 + c] : T(0);
  }
}

template <typename T>
__device__ __forceinline__ void load_points(Tiles<T>& t, const T* __restrict__ zb, int p_end, int D, int j0, int c0,
                                            int dc) {
  constexpr int TN = tile_points<T>();
  for (int e = threadIdx.x; e < TN * dc; e += kRows) {
    const int p = e / dc, c = e % dc;
    const int j = j0 + p;
    t.ps[c][p] = j < p_end ? zb[static_cast<int64_t>(j) * D + c0 + c] : inf_value<T>();
  }
}

// acc[p] = max(acc[p], |ps[c][p] - q|) over the chunk's columns [c_lo, c_hi).
template <typename T>
__device__ __forceinline__ void accumulate(const Tiles<T>& t, int c_lo, int c_hi, T (&acc)[tile_points<T>()]) {
  for (int c = c_lo; c < c_hi; ++c) {
    const T q = t.qs[c][threadIdx.x];
#pragma unroll
    for (int p = 0; p < tile_points<T>(); ++p) acc[p] = max_of(acc[p], abs_diff(t.ps[c][p], q));
  }
}

// Insert (v, j) into the ascending list, dropping its last entry. j exceeds every stored index
// (points arrive in index order), so equal distances keep the older entry first.
template <typename T, int KB>
__device__ __forceinline__ void insert(T (&best)[KB], int (&idx)[KB], T v, int j) {
#pragma unroll
  for (int m = KB - 1; m > 0; --m) {
    const bool shift = best[m - 1] > v;
    const bool here = !shift && best[m] > v;
    best[m] = shift ? best[m - 1] : (here ? v : best[m]);
    idx[m] = shift ? idx[m - 1] : (here ? j : idx[m]);
  }
  if (best[0] > v) {
    best[0] = v;
    idx[0] = j;
  }
}

// Grow the mode-2 extents (ex, ey) by neighbour j of row i.
template <typename T>
__device__ __forceinline__ void extend(const T* __restrict__ zb, int D, int dx, int i, int j, T& ex, T& ey) {
  const T* zi = zb + static_cast<int64_t>(i) * D;
  const T* zj = zb + static_cast<int64_t>(j) * D;
  for (int c = 0; c < dx; ++c) ex = max_of(ex, abs_diff(zj[c], zi[c]));
  for (int c = dx; c < D; ++c) ey = max_of(ey, abs_diff(zj[c], zi[c]));
}

struct Shape {
  int64_t rows;  // B * N
  int N, D, dx, k, mode;
  int row_blocks;  // blocks per batch cell along the query rows
  int chunk;       // points per split (a multiple of the tile)
};

template <typename T, int KB>
__global__ void __launch_bounds__(kRows)
    knn_topk_kernel(const T* __restrict__ z, Shape s, T* __restrict__ eps, T* __restrict__ bounds,
                    T* __restrict__ part_d, int* __restrict__ part_j) {
  constexpr int TN = tile_points<T>();
  __shared__ Tiles<T> t;
  const int64_t b = blockIdx.x / s.row_blocks;
  const int row0 = (blockIdx.x % s.row_blocks) * kRows;
  const int i = row0 + threadIdx.x;
  const bool active = i < s.N;
  const T* zb = z + b * s.N * s.D;
  const int p_begin = blockIdx.y * s.chunk;
  const int p_end = min(s.N, p_begin + s.chunk);
  const T inf = inf_value<T>();

  T best[KB];
  int idx[KB];
#pragma unroll
  for (int m = 0; m < KB; ++m) {
    const bool pad = m < KB - s.k;
    best[m] = pad ? -inf : inf;
    idx[m] = pad ? -1 : INT_MAX;  // (inf, INT_MAX) sorts after every real entry in the merge
  }

  const bool resident = s.D <= kCols;  // the query columns fit once, for the whole sweep
  if (resident) load_queries(t, zb, s.N, s.D, row0, 0, s.D);
  for (int j0 = p_begin; j0 < p_end; j0 += TN) {
    T acc[TN];
#pragma unroll
    for (int p = 0; p < TN; ++p) acc[p] = T(0);
    for (int c0 = 0; c0 < s.D; c0 += kCols) {
      const int dc = min(kCols, s.D - c0);
      __syncthreads();  // the previous chunk's readers are done
      if (!resident) load_queries(t, zb, s.N, s.D, row0, c0, dc);
      load_points(t, zb, p_end, s.D, j0, c0, dc);
      __syncthreads();
      accumulate(t, 0, dc, acc);
    }
    if (!active) continue;
    if (static_cast<unsigned>(i - j0) < static_cast<unsigned>(TN)) {
#pragma unroll
      for (int p = 0; p < TN; ++p) acc[p] = j0 + p == i ? inf : acc[p];
    }
    T tile_min = acc[0];
#pragma unroll
    for (int p = 1; p < TN; ++p) tile_min = acc[p] < tile_min ? acc[p] : tile_min;
    if (tile_min < best[KB - 1]) {
      // Rare once the list has filled: go through local memory so that one copy of the
      // unrolled insertion serves all TN points (unrolling it TN times costs compile time and
      // instruction cache, not speed).
      T cand[TN];
#pragma unroll
      for (int p = 0; p < TN; ++p) cand[p] = acc[p];
#pragma unroll 1
      for (int p = 0; p < TN; ++p) {
        if (cand[p] < best[KB - 1]) insert(best, idx, cand[p], j0 + p);
      }
    }
  }
  if (!active) return;

  const int64_t row = b * s.N + i;
  if (gridDim.y == 1) {
    eps[row] = best[KB - 1];
    if (s.mode == 2) {
      T ex = T(0), ey = T(0);
#pragma unroll
      for (int m = 0; m < KB; ++m) {
        if (m >= KB - s.k) extend(zb, s.D, s.dx, i, idx[m], ex, ey);
      }
      bounds[row] = ex;
      bounds[row + s.rows] = ey;
    }
    return;
  }
  const int64_t base = (row * gridDim.y + blockIdx.y) * s.k;
#pragma unroll
  for (int m = 0; m < KB; ++m) {
    if (m >= KB - s.k) {
      part_d[base + m - (KB - s.k)] = best[m];
      part_j[base + m - (KB - s.k)] = idx[m];
    }
  }
}

// One thread per row: merge the splits' sorted lists, k steps of an S-way selection.
template <typename T>
__global__ void __launch_bounds__(kRows)
    knn_merge_kernel(const T* __restrict__ z, Shape s, int splits, const T* __restrict__ part_d,
                     const int* __restrict__ part_j, T* __restrict__ eps, T* __restrict__ bounds) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= s.rows) return;
  const int64_t b = row / s.N;
  const int i = static_cast<int>(row % s.N);
  const T* zb = z + b * s.N * s.D;
  const T* pd = part_d + row * splits * s.k;
  const int* pj = part_j + row * splits * s.k;
  int head[kMaxSplits];
  for (int q = 0; q < splits; ++q) head[q] = 0;
  T ex = T(0), ey = T(0), d = T(0);
  for (int m = 0; m < s.k; ++m) {
    int pick = -1, j = INT_MAX;
    for (int q = 0; q < splits; ++q) {
      if (head[q] == s.k) continue;
      const int64_t at = static_cast<int64_t>(q) * s.k + head[q];
      const T v = pd[at];
      const int w = pj[at];
      if (pick < 0 || v < d || (v == d && w < j)) {
        pick = q;
        d = v;
        j = w;
      }
    }
    ++head[pick];  // S * k >= k entries exist, so every step finds one
    if (s.mode == 2) extend(zb, s.D, s.dx, i, j, ex, ey);
  }
  eps[row] = d;
  if (s.mode == 2) {
    bounds[row] = ex;
    bounds[row + s.rows] = ey;
  }
}

template <typename T, bool INCLUSIVE>
__global__ void __launch_bounds__(kRows)
    knn_count_kernel(const T* __restrict__ z, Shape s, const T* __restrict__ bound_x, const T* __restrict__ bound_y,
                     int64_t* __restrict__ nx, int64_t* __restrict__ ny) {
  constexpr int TN = tile_points<T>();
  __shared__ Tiles<T> t;
  const int64_t b = blockIdx.x / s.row_blocks;
  const int row0 = (blockIdx.x % s.row_blocks) * kRows;
  const int i = row0 + threadIdx.x;
  const bool active = i < s.N;
  const T* zb = z + b * s.N * s.D;
  const int p_begin = blockIdx.y * s.chunk;
  const int p_end = min(s.N, p_begin + s.chunk);
  const T inf = inf_value<T>();
  const int64_t row = b * s.N + i;
  const T bx = active ? bound_x[row] : T(0);
  const T by = active ? bound_y[row] : T(0);

  int cx = 0, cy = 0;
  const bool resident = s.D <= kCols;
  if (resident) load_queries(t, zb, s.N, s.D, row0, 0, s.D);
  for (int j0 = p_begin; j0 < p_end; j0 += TN) {
    T ax[TN], ay[TN];
#pragma unroll
    for (int p = 0; p < TN; ++p) ax[p] = ay[p] = T(0);
    for (int c0 = 0; c0 < s.D; c0 += kCols) {
      const int dc = min(kCols, s.D - c0);
      __syncthreads();
      if (!resident) load_queries(t, zb, s.N, s.D, row0, c0, dc);
      load_points(t, zb, p_end, s.D, j0, c0, dc);
      __syncthreads();
      // The x / y boundary falls inside at most one chunk.
      const int split_c = min(dc, max(0, s.dx - c0));
      accumulate(t, 0, split_c, ax);
      accumulate(t, split_c, dc, ay);
    }
    if (!active) continue;
    if (static_cast<unsigned>(i - j0) < static_cast<unsigned>(TN)) {
#pragma unroll
      for (int p = 0; p < TN; ++p) {
        ax[p] = j0 + p == i ? inf : ax[p];
        ay[p] = j0 + p == i ? inf : ay[p];
      }
    }
#pragma unroll
    for (int p = 0; p < TN; ++p) {
      cx += INCLUSIVE ? (ax[p] <= bx) : (ax[p] < bx);
      cy += INCLUSIVE ? (ay[p] <= by) : (ay[p] < by);
    }
  }
  if (!active) return;
  atomicAdd(reinterpret_cast<unsigned long long*>(nx + row), static_cast<unsigned long long>(cx));
  atomicAdd(reinterpret_cast<unsigned long long*>(ny + row), static_cast<unsigned long long>(cy));
}

template <typename T, int KB>
void launch_topk(dim3 grid, cudaStream_t stream, const T* z, const Shape& s, T* eps, T* bounds, T* part_d,
                 int* part_j) {
  knn_topk_kernel<T, KB><<<grid, kRows, 0, stream>>>(z, s, eps, bounds, part_d, part_j);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void run_knn(const at::Tensor& z, Shape s, at::Tensor& eps, at::Tensor& nx, at::Tensor& ny) {
  constexpr int TN = tile_points<T>();
  const int64_t B = z.size(0);
  const int64_t blocks = B * s.row_blocks;
  TORCH_CHECK(blocks <= INT_MAX, "knn_maxnorm_cuda: too many query blocks (", blocks, ")");

  // Split the points when the row blocks alone give under ~4 blocks per SM, keeping at least
  // 8 tiles per split so the per-split list and merge stay cheap beside the sweep.
  const int64_t target = 4 * static_cast<int64_t>(current_device_sms());
  int64_t splits = 1;
  if (blocks < target) {
    splits = std::min<int64_t>({(target + blocks - 1) / blocks, kMaxSplits, std::max<int64_t>(1, s.N / (8 * TN))});
  }
  const int64_t per = (s.N + splits - 1) / splits;
  s.chunk = static_cast<int>((per + TN - 1) / TN * TN);
  splits = (s.N + s.chunk - 1) / s.chunk;

  const T* zp = z.data_ptr<T>();
  T* ep = eps.data_ptr<T>();
  at::Tensor bounds = s.mode == 2 ? z.new_empty({2, B, s.N}) : at::Tensor();
  T* bp = s.mode == 2 ? bounds.data_ptr<T>() : nullptr;
  at::Tensor part_d, part_j;
  if (splits > 1) {
    part_d = z.new_empty({B * s.N * splits * s.k});
    part_j = z.new_empty({B * s.N * splits * s.k}, z.options().dtype(at::kInt));
  }
  T* pd = splits > 1 ? part_d.data_ptr<T>() : nullptr;
  int* pj = splits > 1 ? part_j.data_ptr<int>() : nullptr;

  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(splits));
  if (s.k <= 4) {
    launch_topk<T, 4>(grid, stream, zp, s, ep, bp, pd, pj);
  } else if (s.k <= 8) {
    launch_topk<T, 8>(grid, stream, zp, s, ep, bp, pd, pj);
  } else if (s.k <= 16) {
    launch_topk<T, 16>(grid, stream, zp, s, ep, bp, pd, pj);
  } else {
    launch_topk<T, kMaxK>(grid, stream, zp, s, ep, bp, pd, pj);
  }
  if (splits > 1) {
    const unsigned merge_blocks = static_cast<unsigned>((s.rows + kRows - 1) / kRows);
    knn_merge_kernel<T><<<merge_blocks, kRows, 0, stream>>>(zp, s, static_cast<int>(splits), pd, pj, ep, bp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (s.mode == 1) {
    knn_count_kernel<T, false><<<grid, kRows, 0, stream>>>(zp, s, ep, ep, nx.data_ptr<int64_t>(),
                                                           ny.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else if (s.mode == 2) {
    knn_count_kernel<T, true><<<grid, kRows, 0, stream>>>(zp, s, bp, bp + s.rows, nx.data_ptr<int64_t>(),
                                                          ny.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

std::vector<at::Tensor> knn_maxnorm_cuda(const at::Tensor& z, int64_t dx, int64_t k, int64_t mode) {
  TORCH_CHECK(z.defined(), "knn_maxnorm_cuda: undefined input tensor");
  TORCH_CHECK(z.is_cuda(), "knn_maxnorm_cuda: z must be a CUDA tensor, got ", z.device());
  TORCH_CHECK(z.dim() == 3, "knn_maxnorm_cuda: z must be 3-D [B, N, D], got shape ", z.sizes());
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
              "knn_maxnorm_cuda: z must be float32 or float64, got ", z.scalar_type());
  TORCH_CHECK(z.is_contiguous(), "knn_maxnorm_cuda: z must be contiguous");
  TORCH_CHECK(mode == 0 || mode == 1 || mode == 2,
              "knn_maxnorm_cuda: mode must be 0 (radii), 1 or 2 (KSG variant), got ", mode);
  const int64_t B = z.size(0), N = z.size(1), D = z.size(2);
  TORCH_CHECK(D >= 1, "knn_maxnorm_cuda: z needs at least one column");
  if (mode == 0) {
    TORCH_CHECK(dx == D, "knn_maxnorm_cuda: mode 0 (radii) measures all columns: dx must equal D=", D, ", got ", dx);
  } else {
    TORCH_CHECK(dx >= 1 && dx < D, "knn_maxnorm_cuda: KSG needs 1 <= dx < D=", D, ", got dx=", dx);
  }
  TORCH_CHECK(k >= 1 && k < N, "knn_maxnorm_cuda: need 1 <= k < N=", N, ", got k=", k);
  TORCH_CHECK(k <= kMaxK, "knn_maxnorm_cuda: the CUDA kernel supports k <= ", kMaxK, ", got k=", k,
              "; use the cpp or torch backend for larger k");
  TORCH_CHECK(N <= INT_MAX - kRows && D <= INT_MAX, "knn_maxnorm_cuda: N=", N, " or D=", D,
              " does not fit the kernel's int32 indices");

  const c10::cuda::CUDAGuard guard(z.device());
  at::Tensor eps = z.new_empty({B, N});
  const auto long_opts = z.options().dtype(at::kLong);
  // Zeroed: the count kernel adds each split's counts into them.
  at::Tensor nx = mode > 0 ? z.new_zeros({B, N}, long_opts) : z.new_empty({0}, long_opts);
  at::Tensor ny = mode > 0 ? z.new_zeros({B, N}, long_opts) : z.new_empty({0}, long_opts);
  if (B == 0) return {eps, nx, ny};

  Shape s{B * N, static_cast<int>(N), static_cast<int>(D), static_cast<int>(dx), static_cast<int>(k), static_cast<int>(mode),
          static_cast<int>((N + kRows - 1) / kRows), 0};
  if (z.scalar_type() == at::kFloat) {
    run_knn<float>(z, s, eps, nx, ny);
  } else {
    run_knn<double>(z, s, eps, nx, ny);
  }
  return {eps, nx, ny};
}
