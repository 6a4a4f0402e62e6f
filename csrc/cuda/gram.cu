// Batched cross-Gram matrix on CUDA:
//
//     out[k, i, j] = sum_n a[k, n, i] * b[k, n, j]       a: [B, N, da], b: [B, N, db]
//
// i.e. out[k] = a[k]^T b[k]. float16/bfloat16 inputs accumulate (and return) float32,
// float32 stays float32 (SIMT FFMA, no TF32, so results match a float32 reference),
// float64 accumulates and returns float64.
//
// Kernels (all share one pipeline: global -> registers -> shared memory, two shared
// stages, one __syncthreads per K step; the next step's global loads are in flight while
// the current step is computed):
//   * SIMT:  BMxBM output tile (BM = 128 or 64), 256 threads, TMxTM micro-tile per thread
//            (8x8 or 4x4), BK = 16 rows of N per step. Operands are converted to the
//            accumulator type when written to shared memory.
//   * WMMA:  tensor cores through nvcuda::wmma (mma.sync), sm_80+. fp16/bf16: 16x16x16
//            fragments with float accumulators; fp64: 8x8x4 DMMA fragments. Products of
//            fp16/bf16 are exact in float32, so this loses nothing against the SIMT path.
// Both tile the output over (tile_i, tile_j) x split x batch. When B * tiles cannot fill
// one wave of the GPU, N is split across blocks and the partial sums are atomically added
// into a zeroed output (the result then depends on the order of the float additions).
//
// EMERGENCE_FAST_GRAM_SIMT=1 in the environment forces the SIMT kernels (a switch for the
// tensor-core path, which was written without a GPU to run it on).

#include "common.cuh"
#include <mma.h>

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace {

template <typename T>
__device__ __forceinline__ T zero_value() {
  T z;
  memset(&z, 0, sizeof(z));  // all-zero bits are +0 in every float format used here
  return z;
}

// Global -> register stage of one BK x BM operand tile (rows n0.., columns c0..), shared by
// both kernels. Thread tid owns the VEC columns starting at col = (tid * VEC) % BM of rows
// row, row + ROWS_PER_PASS, ... (row = tid * VEC / BM): a warp reads consecutive columns of a
// row (coalesced), and one pointer per thread serves all passes. Rows >= n_end and columns
// >= d load as zeros, which add nothing to the sum. With VEC > 1 the caller guarantees
// d % VEC == 0 and 16-byte aligned rows, so a pack is wholly inside or outside the matrix.
template <typename T, int VEC, int BK, int BM, int THREADS>
struct TileLoader {
  static constexpr int ROWS_PER_PASS = THREADS * VEC / BM;
  static constexpr int PASSES = BK / ROWS_PER_PASS;
  static_assert((THREADS * VEC) % BM == 0 && BK % ROWS_PER_PASS == 0, "threads must tile the operand exactly");

  // VEC == 1: one element; otherwise 16 raw bytes, kept as uint4 so that loads and shared
  // stores stay single 128-bit instructions.
  using Reg = std::conditional_t<VEC == 1, T, uint4>;
  static_assert(VEC == 1 || VEC * sizeof(T) == 16, "vector accesses are 16 bytes");

  Reg reg[PASSES];
  int row;
  int col;

  __device__ __forceinline__ explicit TileLoader(int tid) : row(tid * VEC / BM), col(tid * VEC % BM) {}

  __device__ __forceinline__ void load(const T* __restrict__ src, int64_t n0, int64_t n_end, int c0, int d) {
    const int64_t n = n0 + row;
    const bool col_ok = c0 + col < d;
    const T* p = src + n * d + (c0 + col);  // only dereferenced when in bounds
#pragma unroll
    for (int k = 0; k < PASSES; ++k) {
      const bool ok = col_ok && n + k * ROWS_PER_PASS < n_end;
      const T* q = p + static_cast<int64_t>(k * ROWS_PER_PASS) * d;
      if constexpr (VEC == 1) {
        reg[k] = ok ? q[0] : zero_value<T>();
      } else {
        reg[k] = ok ? __ldg(reinterpret_cast<const uint4*>(q)) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
  }

  // Store converted to the accumulator type: dst is a [BK][BM] array (SIMT path).
  template <typename S>
  __device__ __forceinline__ void store_converted(S* dst) const {
#pragma unroll
    for (int k = 0; k < PASSES; ++k) {
      S* o = dst + (row + k * ROWS_PER_PASS) * BM + col;
      if constexpr (VEC == 1) {
        o[0] = to_acc(reg[k]);
      } else {
        T e[VEC];
        memcpy(e, &reg[k], 16);
#pragma unroll
        for (int q = 0; q < VEC; ++q) o[q] = to_acc(e[q]);
      }
    }
  }

  // Store raw with a padded row stride LD (WMMA path). LD * sizeof(T) is a multiple of 16
  // and col a multiple of VEC, so the vector stores stay 16-byte aligned.
  template <int LD>
  __device__ __forceinline__ void store_raw(T* dst) const {
#pragma unroll
    for (int k = 0; k < PASSES; ++k) {
      T* o = dst + (row + k * ROWS_PER_PASS) * LD + col;
      if constexpr (VEC == 1) {
        o[0] = reg[k];
      } else {
        *reinterpret_cast<uint4*>(o) = reg[k];
      }
    }
  }
};

template <int N>
__device__ __forceinline__ void load4(const float* p, float (&r)[N], int o) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  r[o] = v.x, r[o + 1] = v.y, r[o + 2] = v.z, r[o + 3] = v.w;
}
template <int N>
__device__ __forceinline__ void load4(const double* p, double (&r)[N], int o) {
  const double2 v0 = *reinterpret_cast<const double2*>(p);
  const double2 v1 = *reinterpret_cast<const double2*>(p + 2);
  r[o] = v0.x, r[o + 1] = v0.y, r[o + 2] = v1.x, r[o + 3] = v1.y;
}

template <typename acc_t>
__device__ __forceinline__ void emit(acc_t* dst, acc_t v, bool atomic) {
  if (atomic) {
    atomicAdd(dst, v);
  } else {
    *dst = v;
  }
}

constexpr int kSimtThreads = 256;
// BK = 8 for the 8x8 micro-tile keeps it within 128 registers (2 blocks per SM) unspilled.
__host__ __device__ constexpr int simt_bk(int tm) { return tm == 8 ? 8 : 16; }

// SIMT kernel. Thread (ty, tx) = (tid / 16, tid % 16) owns output rows
// {64 * c + 4 * ty + r : c < TM / 4, r < 4} and the same pattern of columns with tx. The
// two 64-apart halves (for TM = 8) make each 16-thread row of a warp read 16 consecutive
// float4s of shared memory, which is free of bank conflicts.
// Grid: x = tile_i * tiles_j + tile_j, y = N split, z = batch.
template <typename T, typename acc_t, int TM, int VEC>
__global__ void __launch_bounds__(kSimtThreads, TM == 8 ? 2 : 1)
    gram_simt_kernel(const T* __restrict__ a, const T* __restrict__ b, acc_t* __restrict__ out, int64_t N, int da,
                     int db, int64_t chunk, int tiles_j, int atomic) {
  constexpr int BM = 16 * TM;
  constexpr int BK = simt_bk(TM);
  static_assert(TM % 4 == 0, "micro-tile is made of 4-wide groups");
  __shared__ __align__(16) acc_t As[2][BK * BM];
  __shared__ __align__(16) acc_t Bs[2][BK * BM];

  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
  const int i0 = (blockIdx.x / tiles_j) * BM;
  const int j0 = (blockIdx.x % tiles_j) * BM;
  const int64_t batch = blockIdx.z;
  const int64_t n_begin = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t n_end = min(N, n_begin + chunk);
  const int steps = static_cast<int>((n_end - n_begin + BK - 1) / BK);  // >= 1: the host makes no empty split
  const T* a_k = a + batch * N * da;
  const T* b_k = b + batch * N * db;

  TileLoader<T, VEC, BK, BM, kSimtThreads> la(tid), lb(tid);
  la.load(a_k, n_begin, n_end, i0, da);
  lb.load(b_k, n_begin, n_end, j0, db);
  la.store_converted(As[0]);
  lb.store_converted(Bs[0]);
  __syncthreads();

  acc_t acc[TM][TM];
#pragma unroll
  for (int r = 0; r < TM; ++r)
#pragma unroll
    for (int c = 0; c < TM; ++c) acc[r][c] = acc_t(0);

  for (int s = 0; s < steps; ++s) {
    const int buf = s & 1;
    const bool more = s + 1 < steps;
    if (more) {
      const int64_t n0 = n_begin + static_cast<int64_t>(s + 1) * BK;
      la.load(a_k, n0, n_end, i0, da);
      lb.load(b_k, n0, n_end, j0, db);
    }
    const acc_t* as = As[buf];
    const acc_t* bs = Bs[buf];
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      acc_t fa[TM], fb[TM];
#pragma unroll
      for (int c = 0; c < TM / 4; ++c) {
        load4(as + kk * BM + 64 * c + 4 * ty, fa, 4 * c);
        load4(bs + kk * BM + 64 * c + 4 * tx, fb, 4 * c);
      }
#pragma unroll
      for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < TM; ++c) acc[r][c] = fma(fa[r], fb[c], acc[r][c]);
    }
    // The other buffer was last read in step s - 1, which every thread finished before
    // the barrier that ended it; the barrier below publishes it for step s + 1.
    if (more) {
      la.store_converted(As[buf ^ 1]);
      lb.store_converted(Bs[buf ^ 1]);
    }
    __syncthreads();
  }

  acc_t* out_k = out + batch * da * db;
#pragma unroll
  for (int r = 0; r < TM; ++r) {
    const int i = i0 + 64 * (r / 4) + 4 * ty + (r % 4);
    if (i >= da) continue;
#pragma unroll
    for (int c = 0; c < TM; ++c) {
      const int j = j0 + 64 * (c / 4) + 4 * tx + (c % 4);
      if (j < db) emit(out_k + static_cast<int64_t>(i) * db + j, acc[r][c], atomic != 0);
    }
  }
}

// Tensor-core kernel. WARPS_M x WARPS_N warps, each owning a (WFM*FM) x (WFN*FN) block of
// the output as WFM x WFN accumulator fragments. Shared tiles are stored k-major
// ([BK][BM + PAD], the layout of the input rows), which is the column-major A (m x k)
// and row-major B (k x n) that wmma loads directly. PAD (16 bytes for 2-byte types,
// 32 for double) staggers rows across banks; it also keeps every fragment pointer 32-byte
// aligned and every leading dimension a multiple of 16 bytes, as load_matrix_sync requires.
template <typename T, typename acc_t, int FM, int FN, int FK, int WARPS_M, int WARPS_N, int WFM, int WFN, int BK, int VEC>
struct WmmaConfig {
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr int BK_ = BK;
  static constexpr int WTM = WFM * FM;
  static constexpr int WTN = WFN * FN;
  static constexpr int BM = WARPS_M * WTM;
  static constexpr int BN = WARPS_N * WTN;
  static constexpr int PAD = sizeof(T) == 2 ? 8 : 4;
  static constexpr int LDA = BM + PAD;
  static constexpr int LDB = BN + PAD;
  static constexpr int A_STAGE = BK * LDA;  // elements
  static constexpr int B_STAGE = BK * LDB;
  static constexpr int TILE_BYTES = 2 * (A_STAGE + B_STAGE) * static_cast<int>(sizeof(T));
  static constexpr int STAGE_BYTES = WARPS_M * WARPS_N * FM * FN * static_cast<int>(sizeof(acc_t));
  static constexpr int SMEM_BYTES = TILE_BYTES > STAGE_BYTES ? TILE_BYTES : STAGE_BYTES;
  static_assert((LDA * sizeof(T)) % 16 == 0 && (LDB * sizeof(T)) % 16 == 0, "wmma ldm must be 16-byte multiple");
  static_assert((FK * LDA * sizeof(T)) % 32 == 0 && (FK * LDB * sizeof(T)) % 32 == 0, "fragment rows 32B aligned");
  static_assert((FM * sizeof(T)) % 32 == 0 && (FN * sizeof(T)) % 32 == 0, "fragment columns 32B aligned");
  static_assert((A_STAGE * sizeof(T)) % 128 == 0 && (B_STAGE * sizeof(T)) % 128 == 0, "stages stay aligned");
  static_assert(BK % FK == 0, "BK must be a multiple of the fragment depth");
  static_assert(SMEM_BYTES <= 48 * 1024, "static shared memory limit");
};

template <typename T, typename acc_t, int FM, int FN, int FK, int WARPS_M, int WARPS_N, int WFM, int WFN, int BK, int VEC>
__global__ void __launch_bounds__(32 * WARPS_M * WARPS_N)
    gram_wmma_kernel(const T* __restrict__ a, const T* __restrict__ b, acc_t* __restrict__ out, int64_t N, int da,
                     int db, int64_t chunk, int tiles_j, int atomic) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // The host launches this only when the kernel was built for sm_80+ (cudaFuncGetAttributes).
  __trap();
#else
  namespace wmma = nvcuda::wmma;
  using Cfg = WmmaConfig<T, acc_t, FM, FN, FK, WARPS_M, WARPS_N, WFM, WFN, BK, VEC>;
  constexpr int THREADS = Cfg::THREADS;
  constexpr int BM = Cfg::BM;
  constexpr int BN = Cfg::BN;
  constexpr int LDA = Cfg::LDA;
  constexpr int LDB = Cfg::LDB;
  __shared__ __align__(128) unsigned char smem[Cfg::SMEM_BYTES];
  T* As = reinterpret_cast<T*>(smem);            // [2][BK][LDA]
  T* Bs = As + 2 * Cfg::A_STAGE;                 // [2][BK][LDB]
  acc_t* staging = reinterpret_cast<acc_t*>(smem);  // reused after the main loop

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int wm = warp / WARPS_N;
  const int wn = warp % WARPS_N;
  const int i0 = (blockIdx.x / tiles_j) * BM;
  const int j0 = (blockIdx.x % tiles_j) * BN;
  const int64_t batch = blockIdx.z;
  const int64_t n_begin = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t n_end = min(N, n_begin + chunk);
  const int steps = static_cast<int>((n_end - n_begin + BK - 1) / BK);
  const T* a_k = a + batch * N * da;
  const T* b_k = b + batch * N * db;

  TileLoader<T, VEC, BK, BM, THREADS> la(tid);
  TileLoader<T, VEC, BK, BN, THREADS> lb(tid);
  la.load(a_k, n_begin, n_end, i0, da);
  lb.load(b_k, n_begin, n_end, j0, db);
  la.template store_raw<LDA>(As);
  lb.template store_raw<LDB>(Bs);
  __syncthreads();

  wmma::fragment<wmma::accumulator, FM, FN, FK, acc_t> acc[WFM][WFN];
#pragma unroll
  for (int x = 0; x < WFM; ++x)
#pragma unroll
    for (int y = 0; y < WFN; ++y) wmma::fill_fragment(acc[x][y], acc_t(0));

  for (int s = 0; s < steps; ++s) {
    const int buf = s & 1;
    const bool more = s + 1 < steps;
    if (more) {
      const int64_t n0 = n_begin + static_cast<int64_t>(s + 1) * BK;
      la.load(a_k, n0, n_end, i0, da);
      lb.load(b_k, n0, n_end, j0, db);
    }
    const T* as = As + buf * Cfg::A_STAGE + wm * Cfg::WTM;
    const T* bs = Bs + buf * Cfg::B_STAGE + wn * Cfg::WTN;
#pragma unroll
    for (int kk = 0; kk < BK; kk += FK) {
      wmma::fragment<wmma::matrix_a, FM, FN, FK, T, wmma::col_major> fa[WFM];
      wmma::fragment<wmma::matrix_b, FM, FN, FK, T, wmma::row_major> fb[WFN];
#pragma unroll
      for (int x = 0; x < WFM; ++x) wmma::load_matrix_sync(fa[x], as + kk * LDA + x * FM, LDA);
#pragma unroll
      for (int y = 0; y < WFN; ++y) wmma::load_matrix_sync(fb[y], bs + kk * LDB + y * FN, LDB);
#pragma unroll
      for (int x = 0; x < WFM; ++x)
#pragma unroll
        for (int y = 0; y < WFN; ++y) wmma::mma_sync(acc[x][y], fa[x], fb[y], acc[x][y]);
    }
    if (more) {  // see the SIMT kernel for why one barrier per step suffices
      la.template store_raw<LDA>(As + (buf ^ 1) * Cfg::A_STAGE);
      lb.template store_raw<LDB>(Bs + (buf ^ 1) * Cfg::B_STAGE);
    }
    __syncthreads();
  }

  // The barrier closing the last step means no warp still reads the tiles, so each warp
  // may reuse its own FM x FN slice of the shared buffer to bounds-check the fragments,
  // whose register layout is opaque.
  acc_t* stage = staging + warp * FM * FN;
  acc_t* out_k = out + batch * da * db;
#pragma unroll
  for (int x = 0; x < WFM; ++x) {
#pragma unroll
    for (int y = 0; y < WFN; ++y) {
      wmma::store_matrix_sync(stage, acc[x][y], FN, wmma::mem_row_major);
      __syncwarp();
      const int ib = i0 + wm * Cfg::WTM + x * FM;
      const int jb = j0 + wn * Cfg::WTN + y * FN;
      for (int e = lane; e < FM * FN; e += 32) {
        const int i = ib + e / FN;
        const int j = jb + e % FN;
        if (i < da && j < db) emit(out_k + static_cast<int64_t>(i) * db + j, stage[e], atomic != 0);
      }
      __syncwarp();  // lanes finish reading before the next fragment overwrites the slice
    }
  }
#endif
}

// fp16 / bf16: 128x128 (8 warps of 64x32) or 64x64 (4 warps of 32x32), BK = 32.
template <typename T, int VEC>
using Wmma16Big = WmmaConfig<T, float, 16, 16, 16, 2, 4, 4, 2, 32, VEC>;
template <typename T, int VEC>
using Wmma16Small = WmmaConfig<T, float, 16, 16, 16, 2, 2, 2, 2, 32, VEC>;
// fp64 (DMMA 8x8x4): 64x64 with 4 warps of 32x32, BK = 16.
template <int VEC>
using Wmma64 = WmmaConfig<double, double, 8, 8, 4, 2, 2, 4, 4, 16, VEC>;

template <typename Cfg>
struct WmmaKernelOf;
template <typename T, typename acc_t, int FM, int FN, int FK, int WARPS_M, int WARPS_N, int WFM, int WFN, int BK, int VEC>
struct WmmaKernelOf<WmmaConfig<T, acc_t, FM, FN, FK, WARPS_M, WARPS_N, WFM, WFN, BK, VEC>> {
  static constexpr auto kernel = gram_wmma_kernel<T, acc_t, FM, FN, FK, WARPS_M, WARPS_N, WFM, WFN, BK, VEC>;
};

// ---- launch planning (plain arithmetic) ----

// Fraction of a padded tile grid that holds real outputs.
inline double tile_efficiency(int64_t da, int64_t db, int64_t bm, int64_t bn) {
  const int64_t pa = (da + bm - 1) / bm * bm;
  const int64_t pb = (db + bn - 1) / bn * bn;
  return static_cast<double>(da) * static_cast<double>(db) / (static_cast<double>(pa) * static_cast<double>(pb));
}

// The big tile does ~2x the work per shared-memory byte; prefer it unless padding wastes
// noticeably more of it than the small tile (d = 576: 0.81 vs 1.0 -> big; d = 64 or 192 -> small).
inline bool prefer_big_tile(int64_t da, int64_t db, int big, int small) {
  return tile_efficiency(da, db, big, big) >= 0.75 * tile_efficiency(da, db, small, small);
}

struct SplitPlan {
  int splits;
  int64_t chunk;  // rows of N per split, a multiple of bk
};

// Split N only when B * tiles is below one wave (SMs x resident blocks per SM), and then
// only up to one wave, so every block runs concurrently. A split keeps at least
// kMinRowsPerSplit rows, which bounds the atomic traffic (da*db adds per split) to a
// small fraction of the FMAs (da*db*rows).
inline SplitPlan plan_splits(int64_t N, int64_t blocks, int64_t wave, int bk) {
  constexpr int64_t kMinRowsPerSplit = 256;
  constexpr int64_t kMaxSplits = 65535;  // gridDim.y
  int64_t splits = 1;
  if (blocks < wave) {
    splits = wave / blocks;
    const int64_t by_rows = N / kMinRowsPerSplit > 1 ? N / kMinRowsPerSplit : 1;
    if (splits > by_rows) splits = by_rows;
    if (splits > kMaxSplits) splits = kMaxSplits;
  }
  int64_t chunk = (N + splits - 1) / splits;
  chunk = (chunk + bk - 1) / bk * bk;
  if (chunk < bk) chunk = bk;
  splits = (N + chunk - 1) / chunk;  // rounding chunk up can leave trailing splits empty
  if (splits < 1) splits = 1;
  return {static_cast<int>(splits), chunk};
}

}  // namespace

// ---- Host side ----

namespace {

template <typename T, typename acc_t>
using TypedGramKernel = void (*)(const T*, const T*, acc_t*, int64_t, int, int, int64_t, int, int);

bool force_simt() {
  const char* e = std::getenv("EMERGENCE_FAST_GRAM_SIMT");
  return e != nullptr && e[0] != '\0' && e[0] != '0';
}

// True when the device can run tensor-core code and this kernel's loaded image was built for
// sm_80+ (an image built for an older target holds only the __trap stub, even when JIT-compiled
// for a newer GPU).
template <typename Kernel>
bool wmma_usable(Kernel kernel) {
  if (current_device_attribute(cudaDevAttrComputeCapabilityMajor) < 8) return false;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(kernel)) != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it so the next launch check does not report it
    return false;
  }
  return attr.binaryVersion >= 80 && attr.ptxVersion >= 80;
}

template <typename T, typename acc_t>
at::Tensor launch_gram(TypedGramKernel<T, acc_t> kernel, int threads, int bm, int bn, int bk, const at::Tensor& a,
                          const at::Tensor& b, const at::TensorOptions& out_opts) {
  const int64_t B = a.size(0);
  const int64_t N = a.size(1);
  const int da = static_cast<int>(a.size(2));
  const int db = static_cast<int>(b.size(2));
  const int64_t tiles_i = (da + bm - 1) / bm;
  const int64_t tiles_j = (db + bn - 1) / bn;
  TORCH_CHECK(tiles_i * tiles_j <= INT_MAX, "gram_cuda: too many output tiles (", tiles_i, " x ", tiles_j, ")");

  int occupancy = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occupancy, kernel, threads, 0));
  const int64_t sms = current_device_sms();
  const int64_t wave = sms * (occupancy > 0 ? occupancy : 1);
  const SplitPlan plan = plan_splits(N, B * tiles_i * tiles_j, wave, bk);
  const bool atomic = plan.splits > 1;

  at::Tensor out = atomic ? a.new_zeros({B, da, db}, out_opts) : a.new_empty({B, da, db}, out_opts);
  const T* a_ptr = reinterpret_cast<const T*>(a.data_ptr());
  const T* b_ptr = reinterpret_cast<const T*>(b.data_ptr());
  acc_t* o_ptr = out.data_ptr<acc_t>();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  constexpr int64_t kMaxGridZ = 65535;
  for (int64_t k0 = 0; k0 < B; k0 += kMaxGridZ) {
    const int64_t nb = B - k0 < kMaxGridZ ? B - k0 : kMaxGridZ;
    const dim3 grid(static_cast<unsigned>(tiles_i * tiles_j), static_cast<unsigned>(plan.splits),
                    static_cast<unsigned>(nb));
    kernel<<<grid, threads, 0, stream>>>(a_ptr + k0 * N * da, b_ptr + k0 * N * db, o_ptr + k0 * da * db, N, da, db,
                                         plan.chunk, static_cast<int>(tiles_j), atomic ? 1 : 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return out;
}

template <typename T, typename acc_t, int TM, int VEC>
at::Tensor run_simt(const at::Tensor& a, const at::Tensor& b, const at::TensorOptions& o) {
  return launch_gram<T, acc_t>(gram_simt_kernel<T, acc_t, TM, VEC>, kSimtThreads, 16 * TM, 16 * TM, simt_bk(TM), a, b, o);
}

template <typename Cfg, typename T, typename acc_t>
at::Tensor run_wmma(const at::Tensor& a, const at::Tensor& b, const at::TensorOptions& o) {
  return launch_gram<T, acc_t>(WmmaKernelOf<Cfg>::kernel, Cfg::THREADS, Cfg::BM, Cfg::BN, Cfg::BK_, a, b, o);
}

template <typename T>
at::Tensor run_reduced(const at::Tensor& a, const at::Tensor& b, const at::TensorOptions& o, bool simt_only, bool vec) {
  const bool big = prefer_big_tile(a.size(2), b.size(2), 128, 64);
  if (!simt_only && wmma_usable(WmmaKernelOf<Wmma16Big<T, 1>>::kernel)) {
    if (vec) return big ? run_wmma<Wmma16Big<T, 8>, T, float>(a, b, o) : run_wmma<Wmma16Small<T, 8>, T, float>(a, b, o);
    return big ? run_wmma<Wmma16Big<T, 1>, T, float>(a, b, o) : run_wmma<Wmma16Small<T, 1>, T, float>(a, b, o);
  }
  return big ? run_simt<T, float, 8, 1>(a, b, o) : run_simt<T, float, 4, 1>(a, b, o);
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

}  // namespace

at::Tensor gram_cuda(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.defined() && b.defined(), "gram_cuda: undefined input tensor");
  TORCH_CHECK(a.is_cuda() && b.is_cuda(), "gram_cuda: a and b must be CUDA tensors, got ", a.device(), " and ",
              b.device());
  TORCH_CHECK(a.device() == b.device(), "gram_cuda: a and b must be on the same device, got ", a.device(), " and ",
              b.device());
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3, "gram_cuda: expected a [B, N, da] and b [B, N, db], got shapes ",
              a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(1) == b.size(1),
              "gram_cuda: a and b must agree in B and N, got shapes ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "gram_cuda: a and b must have the same dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
  const auto dtype = a.scalar_type();
  TORCH_CHECK(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat || dtype == at::kDouble,
              "gram_cuda: unsupported dtype ", dtype, " (expected float16, bfloat16, float32 or float64)");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous(), "gram_cuda: a and b must be contiguous");
  TORCH_CHECK(a.size(2) <= INT_MAX && b.size(2) <= INT_MAX, "gram_cuda: feature dims must fit in int32");

  const c10::cuda::CUDAGuard guard(a.device());
  const int64_t B = a.size(0);
  const int64_t N = a.size(1);
  const int64_t da = a.size(2);
  const int64_t db = b.size(2);
  const auto out_opts = a.options().dtype(dtype == at::kDouble ? at::kDouble : at::kFloat);
  if (B == 0 || da == 0 || db == 0) return a.new_empty({B, da, db}, out_opts);
  if (N == 0) return a.new_zeros({B, da, db}, out_opts);

  const bool simt_only = force_simt();
  const bool both_aligned = aligned16(a) && aligned16(b);
  auto vec_ok = [&](int vec) { return both_aligned && da % vec == 0 && db % vec == 0; };

  if (dtype == at::kFloat) {
    const bool big = prefer_big_tile(da, db, 128, 64);
    if (vec_ok(4)) return big ? run_simt<float, float, 8, 4>(a, b, out_opts) : run_simt<float, float, 4, 4>(a, b, out_opts);
    return big ? run_simt<float, float, 8, 1>(a, b, out_opts) : run_simt<float, float, 4, 1>(a, b, out_opts);
  }
  if (dtype == at::kDouble) {
    if (!simt_only && wmma_usable(WmmaKernelOf<Wmma64<1>>::kernel)) {
      if (vec_ok(2)) return run_wmma<Wmma64<2>, double, double>(a, b, out_opts);
      return run_wmma<Wmma64<1>, double, double>(a, b, out_opts);
    }
    return run_simt<double, double, 4, 1>(a, b, out_opts);
  }
  if (dtype == at::kHalf) return run_reduced<__half>(a, b, out_opts, simt_only, vec_ok(8));
  return run_reduced<__nv_bfloat16>(a, b, out_opts, simt_only, vec_ok(8));
}
