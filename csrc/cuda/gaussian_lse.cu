// Log-sum-exp of unit Gaussian kernels between query rows and weighted key rows, on CUDA. Same
// contract as gaussian_lse_cpu (csrc/cpu/gaussian_lse.cpp, csrc/ops.h):
//
//     out[b, m, c] = log sum_n exp(w[b, n, c] - 0.5 * |q[b, m] - k[b, n]|_c^2)
//
// with the squared norm over the x columns [0, dx) (c = 0), the y columns [dx, D) (c = 1) and all
// columns (c = 2). Distances are direct differences, sum_c (q_c - k_c)^2: the GEMM form
// |q|^2 + |k|^2 - 2 q.k would be faster on tensor cores but cancels catastrophically for states
// far from the origin relative to the unit noise. Accumulation is in the input dtype.
//
// Tiling (SGEMM-like, a subtraction before each FMA): a block of 256 threads owns kBM = 64 query
// rows of one batch cell and sweeps the keys in tiles of kBN = 64. For each key tile the x
// columns and then the y columns are walked in chunks of kKC columns staged in shared memory
// (queries Qs[c][row], keys Ks[c][key], column-major so a thread reads its RM rows / RN keys of a
// column as one 16-byte load); columns past the end of a part are staged as zeros, which add
// (0 - 0)^2 = 0, so the inner loop always runs kKC unrolled steps. Each thread owns an RM x RN = 4 x 4
// register tile of (query, key) pairs, with separate x and y accumulators. After the sweep each
// thread folds its tile into a running (max, sum) per query row and output (online log-sum-exp);
// nothing M x N is stored. At the end the 16 threads that share query rows (one half-warp) merge
// their states with shuffles. Keys past N get a -inf weight (dropped); a row whose keys are all
// dropped keeps (max, sum) = (-inf, 0) and gets -inf.
//
// When B * row blocks cannot fill the GPU, the keys are also split across grid.y; each split
// writes its rows' (max, sum) states and gaussian_lse_merge_kernel combines them.
//
// exp: __expf (ex2.approx) for float. Its error grows like |x| * 2^-23 only where exp(x) is
// tiny relative to the row's largest term (which contributes exp(0) = 1), so the sum keeps ~1e-7
// relative accuracy; the accurate expf would be a large share of the work at small D.

#include "common.cuh"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

namespace {

constexpr int kThreads = 256;
constexpr int RM = 4;                          // query rows per thread
constexpr int RN = 4;                          // keys per thread
constexpr int kTY = 16;                        // thread rows: kBM = kTY * RM
constexpr int kTX = kThreads / kTY;            // thread columns: kBN = kTX * RN
constexpr int kBM = kTY * RM;                  // query rows per block
constexpr int kBN = kTX * RN;                  // keys per tile
constexpr int kKC = 16;                        // columns per shared-memory chunk
constexpr int kPad = 4;                        // row padding of the tiles: keeps 16-byte alignment
constexpr int kMaxSplits = 64;

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return static_cast<T>(-INFINITY);
}
__device__ __forceinline__ float exp_fast(float x) { return __expf(x); }
__device__ __forceinline__ double exp_fast(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }
__device__ __forceinline__ float max_acc(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double max_acc(double a, double b) { return fmax(a, b); }

// Four consecutive values from 16-byte-aligned shared memory, as wide loads.
__device__ __forceinline__ void load4(const float* p, float (&v)[4]) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  v[0] = t.x;
  v[1] = t.y;
  v[2] = t.z;
  v[3] = t.w;
}
__device__ __forceinline__ void load4(const double* p, double (&v)[4]) {
  const double2 a = *reinterpret_cast<const double2*>(p);
  const double2 b = *reinterpret_cast<const double2*>(p + 2);
  v[0] = a.x;
  v[1] = a.y;
  v[2] = b.x;
  v[3] = b.y;
}

template <typename T>
struct Tiles {
  __align__(16) T qs[kKC][kBM + kPad];
  __align__(16) T ks[kKC][kBN + kPad];
  T ws[3][kBN];
};

struct Shape {
  int M, N, D, dx;
  int row_blocks;   // query blocks per batch cell
  int chunk;        // keys per split (a multiple of kBN)
  int64_t outputs;  // B * M * 3
};

// Stage columns [c0, c0 + kKC) of the block's query rows and the tile's keys, zero past c_end
// (the end of the current part) and past the last row / key.
template <typename T>
__device__ __forceinline__ void stage(Tiles<T>& t, const T* __restrict__ qb, const T* __restrict__ kb, const Shape& s,
                                      int row0, int key0, int key_end, int c0, int c_end) {
  for (int e = threadIdx.x; e < kBM * kKC; e += kThreads) {
    const int r = e / kKC, c = e % kKC;  // consecutive threads read consecutive columns of a row
    const int row = row0 + r, col = c0 + c;
    t.qs[c][r] = (row < s.M && col < c_end) ? qb[static_cast<int64_t>(row) * s.D + col] : T(0);
  }
  for (int e = threadIdx.x; e < kBN * kKC; e += kThreads) {
    const int p = e / kKC, c = e % kKC;
    const int key = key0 + p, col = c0 + c;
    t.ks[c][p] = (key < key_end && col < c_end) ? kb[static_cast<int64_t>(key) * s.D + col] : T(0);
  }
}

// acc[i][j] += sum over columns [lo, hi) of (q_i - k_j)^2 for this thread's tile.
template <typename T>
__device__ __forceinline__ void sweep(Tiles<T>& t, const T* __restrict__ qb, const T* __restrict__ kb,
                                      const Shape& s, int row0, int key0, int key_end, int lo, int hi,
                                      T (&acc)[RM][RN]) {
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  for (int c0 = lo; c0 < hi; c0 += kKC) {
    __syncthreads();  // the previous chunk's readers are done
    stage(t, qb, kb, s, row0, key0, key_end, c0, hi);
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kKC; ++c) {
      T q[RM], k[RN];
      load4(&t.qs[c][ty * RM], q);
      load4(&t.ks[c][tx * RN], k);
#pragma unroll
      for (int i = 0; i < RM; ++i) {
#pragma unroll
        for (int j = 0; j < RN; ++j) {
          const T diff = q[i] - k[j];
          acc[i][j] = fma(diff, diff, acc[i][j]);
        }
      }
    }
  }
}

// Fold RN values into the running (max, sum): sum * e^max = sum of e^v over the keys seen.
template <typename T>
__device__ __forceinline__ void fold(T& mx, T& total, const T (&v)[RN]) {
  T tile_max = v[0];
#pragma unroll
  for (int j = 1; j < RN; ++j) tile_max = max_acc(tile_max, v[j]);
  if (tile_max > mx) {
    total *= exp_fast(mx - tile_max);  // mx = -inf: exp(-inf) = 0, and total is 0 anyway
    mx = tile_max;
  }
  if (mx == neg_inf<T>()) return;  // every key so far dropped: -inf - (-inf) would be NaN
#pragma unroll
  for (int j = 0; j < RN; ++j) total += exp_fast(v[j] - mx);
}

// (mx, total) <- the merge of two states; an empty state (-inf, 0) is the identity.
template <typename T>
__device__ __forceinline__ void merge(T& mx, T& total, T mx2, T total2) {
  const T m = max_acc(mx, mx2);
  if (m == neg_inf<T>()) return;
  total = total * exp_fast(mx - m) + total2 * exp_fast(mx2 - m);
  mx = m;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gaussian_lse_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ w, Shape s,
                        T* __restrict__ out, T* __restrict__ part) {
  __shared__ Tiles<T> t;
  const int64_t b = blockIdx.x / s.row_blocks;
  const int row0 = (blockIdx.x % s.row_blocks) * kBM;
  const int ty = threadIdx.x / kTX, tx = threadIdx.x % kTX;
  const T* qb = q + b * s.M * s.D;
  const T* kb = k + b * s.N * s.D;
  const T* wb = w + b * s.N * 3;
  const int key_begin = blockIdx.y * s.chunk;
  const int key_end = min(s.N, key_begin + s.chunk);

  T mx[RM][3], total[RM][3];
#pragma unroll
  for (int i = 0; i < RM; ++i) {
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      mx[i][c] = neg_inf<T>();
      total[i][c] = T(0);
    }
  }

  for (int key0 = key_begin; key0 < key_end; key0 += kBN) {
    __syncthreads();  // the previous tile's weight readers are done
    for (int e = threadIdx.x; e < 3 * kBN; e += kThreads) {
      const int p = e / 3, c = e % 3;
      const int key = key0 + p;
      t.ws[c][p] = key < key_end ? wb[static_cast<int64_t>(key) * 3 + c] : neg_inf<T>();
    }
    __syncthreads();
    T ax[RM][RN], ay[RM][RN];
#pragma unroll
    for (int i = 0; i < RM; ++i) {
#pragma unroll
      for (int j = 0; j < RN; ++j) ax[i][j] = ay[i][j] = T(0);
    }
    sweep(t, qb, kb, s, row0, key0, key_end, 0, s.dx, ax);
    sweep(t, qb, kb, s, row0, key0, key_end, s.dx, s.D, ay);

    T w0[RN], w1[RN], w2[RN];
#pragma unroll
    for (int j = 0; j < RN; ++j) {
      w0[j] = t.ws[0][tx * RN + j];
      w1[j] = t.ws[1][tx * RN + j];
      w2[j] = t.ws[2][tx * RN + j];
    }
#pragma unroll
    for (int i = 0; i < RM; ++i) {
      T v0[RN], v1[RN], v2[RN];
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        v0[j] = w0[j] - T(0.5) * ax[i][j];
        v1[j] = w1[j] - T(0.5) * ay[i][j];
        v2[j] = w2[j] - T(0.5) * (ax[i][j] + ay[i][j]);
      }
      fold(mx[i][0], total[i][0], v0);
      fold(mx[i][1], total[i][1], v1);
      fold(mx[i][2], total[i][2], v2);
    }
  }

  // The kTX threads holding the same rows are one half-warp (threadIdx.x = ty * kTX + tx).
#pragma unroll
  for (int off = kTX / 2; off > 0; off >>= 1) {
#pragma unroll
    for (int i = 0; i < RM; ++i) {
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        const T m2 = __shfl_xor_sync(0xffffffffu, mx[i][c], off);
        const T t2 = __shfl_xor_sync(0xffffffffu, total[i][c], off);
        merge(mx[i][c], total[i][c], m2, t2);
      }
    }
  }
  if (tx != 0) return;
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int row = row0 + ty * RM + i;
    if (row >= s.M) continue;
    const int64_t at = (b * s.M + row) * 3;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      if (gridDim.y == 1) {
        out[at + c] = mx[i][c] + log_acc(total[i][c]);  // empty: -inf + log 0 = -inf
      } else {
        T* p = part + (blockIdx.y * s.outputs + at + c) * 2;  // [splits][B * M * 3][max, sum]
        p[0] = mx[i][c];
        p[1] = total[i][c];
      }
    }
  }
}

// One thread per output: merge the splits' states.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gaussian_lse_merge_kernel(const T* __restrict__ part, int64_t outputs, int splits, T* __restrict__ out) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= outputs) return;
  T mx = neg_inf<T>(), total = T(0);
  for (int q = 0; q < splits; ++q) {
    const T* p = part + (q * outputs + o) * 2;
    merge(mx, total, p[0], p[1]);
  }
  out[o] = mx + log_acc(total);
}

template <typename T>
void run_gaussian_lse(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& log_weights, Shape s,
                      at::Tensor& out) {
  const int64_t B = queries.size(0);
  const int64_t blocks = B * s.row_blocks;
  TORCH_CHECK(blocks <= INT_MAX, "gaussian_lse_cuda: too many query blocks (", blocks, ")");

  // Split the keys when the row blocks alone give under ~4 blocks per SM (ptxas, sm_90: 128
  // registers a thread for float, so two blocks are resident per SM; 226 for double, one),
  // keeping at least 4 key tiles per split so the states written and merged stay small beside
  // the sweep.
  const int64_t target = 4 * static_cast<int64_t>(current_device_sms());
  int64_t splits = 1;
  if (blocks < target) {
    splits = std::min<int64_t>({(target + blocks - 1) / blocks, kMaxSplits, std::max<int64_t>(1, s.N / (4 * kBN))});
  }
  const int64_t per = (s.N + splits - 1) / splits;
  s.chunk = static_cast<int>((per + kBN - 1) / kBN * kBN);
  splits = (s.N + s.chunk - 1) / s.chunk;

  at::Tensor part = splits > 1 ? queries.new_empty({splits, s.outputs, 2}) : at::Tensor();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(splits));
  gaussian_lse_kernel<T><<<grid, kThreads, 0, stream>>>(queries.data_ptr<T>(), keys.data_ptr<T>(),
                                                        log_weights.data_ptr<T>(), s, out.data_ptr<T>(),
                                                        splits > 1 ? part.data_ptr<T>() : nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (splits > 1) {
    const unsigned merge_blocks = static_cast<unsigned>((s.outputs + kThreads - 1) / kThreads);
    gaussian_lse_merge_kernel<T><<<merge_blocks, kThreads, 0, stream>>>(part.data_ptr<T>(), s.outputs,
                                                                        static_cast<int>(splits), out.data_ptr<T>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

at::Tensor gaussian_lse_cuda(const at::Tensor& queries, const at::Tensor& keys, const at::Tensor& log_weights,
                             int64_t dx) {
  TORCH_CHECK(queries.defined() && keys.defined() && log_weights.defined(),
              "gaussian_lse_cuda: undefined input tensor");
  TORCH_CHECK(queries.is_cuda() && keys.device() == queries.device() && log_weights.device() == queries.device(),
              "gaussian_lse_cuda: queries, keys and log_weights must be on one CUDA device, got ", queries.device(),
              ", ", keys.device(), " and ", log_weights.device());
  TORCH_CHECK(queries.dim() == 3 && keys.dim() == 3 && log_weights.dim() == 3,
              "gaussian_lse_cuda: expected queries [B, M, D], keys [B, N, D], log_weights [B, N, 3], got shapes ",
              queries.sizes(), ", ", keys.sizes(), " and ", log_weights.sizes());
  const auto dtype = queries.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "gaussian_lse_cuda: queries must be float32 or float64, got ", dtype);
  TORCH_CHECK(keys.scalar_type() == dtype && log_weights.scalar_type() == dtype,
              "gaussian_lse_cuda: keys and log_weights must have the queries' dtype ", dtype, ", got ",
              keys.scalar_type(), " and ", log_weights.scalar_type());
  const int64_t B = queries.size(0), M = queries.size(1), D = queries.size(2), N = keys.size(1);
  TORCH_CHECK(keys.size(0) == B && keys.size(2) == D, "gaussian_lse_cuda: keys must be [B, N, D] with the queries' B=",
              B, " and D=", D, ", got ", keys.sizes());
  TORCH_CHECK(log_weights.size(0) == B && log_weights.size(1) == N && log_weights.size(2) == 3,
              "gaussian_lse_cuda: log_weights must be [B, N, 3] = [", B, ", ", N, ", 3], got ", log_weights.sizes());
  TORCH_CHECK(dx >= 0 && dx <= D, "gaussian_lse_cuda: dx must be in [0, D=", D, "], got ", dx);
  TORCH_CHECK(queries.is_contiguous() && keys.is_contiguous() && log_weights.is_contiguous(),
              "gaussian_lse_cuda: queries, keys and log_weights must be contiguous");
  TORCH_CHECK(M <= INT_MAX - kBM && N <= INT_MAX - kBN && D <= INT_MAX - kKC, "gaussian_lse_cuda: M=", M, ", N=", N,
              " or D=", D, " does not fit the kernel's int32 indices");

  const c10::cuda::CUDAGuard guard(queries.device());
  at::Tensor out = queries.new_empty({B, M, 3});
  if (out.numel() == 0) return out;
  if (N == 0) return out.fill_(-INFINITY);  // an empty sum

  Shape s{static_cast<int>(M), static_cast<int>(N), static_cast<int>(D), static_cast<int>(dx),
          static_cast<int>((M + kBM - 1) / kBM), 0, B * M * 3};
  if (dtype == at::kFloat) {
    run_gaussian_lse<float>(queries, keys, log_weights, s, out);
  } else {
    run_gaussian_lse<double>(queries, keys, log_weights, s, out);
  }
  return out;
}
