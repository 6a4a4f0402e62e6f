// Batched Gram product on the CPU:
//
//     out[k, i, j] = sum_n a[k, n, i] * b[k, n, j]        (out = a^T b, [B, da, db])
//
// GotoBLAS-style blocking. The output of each batch element is cut into tiles
// of at most kMaxTile x kMaxTile and n into ranges ("parts") of whole KC-row
// blocks; every (part, batch, tile) triple is an independent OpenMP task. A task
// walks its rows in blocks of KC, packs the a- and b-slices of a block into MR-
// and NR-wide panels (zero-padded, so the micro-kernel never sees a ragged edge)
// and runs an MR x NR register-blocked micro-kernel on every pair of panels.
// For each n the micro-kernel is a rank-1 update: MR broadcasts of a times one
// NR-wide row of b, which gcc turns into MR * NR / lanes FMAs. Parts sum into
// separate copies of out that are added up at the end.
//
// The kernels are compiled twice, for AVX2 + FMA (chosen at run time) and for
// the baseline ISA, because setup.py builds without -march.
//
// a is b (same storage, same shape): out is symmetric, so only tiles on or
// above the diagonal are computed and the lower triangle is copied from them.
#include "../ops.h"
#include "cpu_features.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

// Largest output tile side. Every tile packs its own slices of a and b, so
// packing work per FMA is 1 / tile_i + 1 / tile_j; 144 keeps it small and still
// leaves several tiles per thread at d ~ 500.
constexpr int64_t kMaxTile = 144;
// Rows of n per packed block: an a-panel (KC x MR) plus a b-panel (KC x NR)
// fit in L1 while the micro-kernel streams them.
constexpr int64_t KC = 256;
// Bytes of a and b rows a range of n may span and still be reused from cache
// by all tiles (L3 here is 16 MiB, shared).
constexpr int64_t kCacheBytes = int64_t{4} << 20;
// Upper bound on the per-range copies of out.
constexpr int64_t kScratchBytes = int64_t{64} << 20;

// Micro-tile MR x NR with NR two AVX2 vectors: 12 accumulators + 2 b vectors +
// 1 broadcast fill 15 of the 16 ymm registers.
constexpr int MR = 6;
template <typename T>
constexpr int nr_for() { return 64 / static_cast<int>(sizeof(T)); }

// Copies rows [0, kc) x columns [c0, c0 + width) of src (row stride ld) into
// panels of R columns each: dst[p][n][r] = src[n][c0 + p * R + r], zero past width.
// Packing is redone for every tile, so full panels take a fixed-size copy that
// gcc turns into a few vector moves; only the last panel needs bounds.
template <typename T, int R>
[[gnu::always_inline]] inline void pack(const T* src, int64_t ld, int64_t kc, int64_t c0, int64_t width,
                                        T* dst) {
  const int64_t full = width / R;
  const int64_t tail = width - full * R;
  for (int64_t n = 0; n < kc; ++n) {
    const T* row = src + n * ld + c0;
    for (int64_t p = 0; p < full; ++p) {
      T* d = dst + (p * kc + n) * R;
      for (int r = 0; r < R; ++r) d[r] = row[p * R + r];
    }
    if (tail > 0) {
      T* d = dst + (full * kc + n) * R;
      for (int r = 0; r < R; ++r) d[r] = r < tail ? row[full * R + r] : T(0);
    }
  }
}

// acc[r][j] = sum_n ap[n][r] * bp[n][j]. The fixed trip counts let gcc unroll
// the r-loop and keep acc entirely in registers.
template <typename T, int NR>
[[gnu::always_inline]] inline void micro_kernel(int64_t kc, const T* __restrict ap, const T* __restrict bp,
                                                T (&acc)[MR][NR]) {
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < NR; ++j) acc[r][j] = T(0);
  for (int64_t n = 0; n < kc; ++n) {
    for (int r = 0; r < MR; ++r) {
      const T ar = ap[n * MR + r];
#pragma omp simd
      for (int j = 0; j < NR; ++j) acc[r][j] += ar * bp[n * NR + j];
    }
  }
}

// o[r][c] = acc[r][c] (first block of n: out needs no zeroing beforehand) or
// o[r][c] += acc[r][c], over the valid rows x cols of a micro-tile. Full-width
// micro-tiles take fixed-trip loops that vectorise.
template <typename T, int NR>
[[gnu::always_inline]] inline void write_back(const T (&acc)[MR][NR], int64_t rows, int64_t cols, bool add, T* o,
                                              int64_t ld) {
  if (cols == NR && add) {
    for (int64_t r = 0; r < rows; ++r)
      for (int c = 0; c < NR; ++c) o[r * ld + c] += acc[r][c];
  } else if (cols == NR) {
    for (int64_t r = 0; r < rows; ++r)
      for (int c = 0; c < NR; ++c) o[r * ld + c] = acc[r][c];
  } else {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) o[r * ld + c] = add ? o[r * ld + c] + acc[r][c] : acc[r][c];
  }
}

// One output tile [i0, i0 + mi) x [j0, j0 + nj), summed over `rows` rows of n.
// a, b point at the first of those rows; out is the [da, db] block it writes.
template <typename T>
struct TileJob {
  const T* a;
  const T* b;
  T* out;
  int64_t rows, da, db;
  int64_t i0, mi, j0, nj;
};

template <typename T>
[[gnu::always_inline]] inline void tile_body(const TileJob<T>& job, T* apack, T* bpack) {
  constexpr int NR = nr_for<T>();
  for (int64_t n0 = 0; n0 < job.rows; n0 += KC) {
    const int64_t kc = std::min(KC, job.rows - n0);
    pack<T, MR>(job.a + n0 * job.da, job.da, kc, job.i0, job.mi, apack);
    pack<T, NR>(job.b + n0 * job.db, job.db, kc, job.j0, job.nj, bpack);
    // b-panel outer: it stays in L1 while all a-panels of the block pass by.
    for (int64_t jp = 0; jp * NR < job.nj; ++jp) {
      for (int64_t ip = 0; ip * MR < job.mi; ++ip) {
        T acc[MR][NR];
        micro_kernel<T, NR>(kc, apack + ip * kc * MR, bpack + jp * kc * NR, acc);
        const int64_t rows = std::min<int64_t>(MR, job.mi - ip * MR);
        const int64_t cols = std::min<int64_t>(NR, job.nj - jp * NR);
        T* o = job.out + (job.i0 + ip * MR) * job.db + job.j0 + jp * NR;
        write_back<T, NR>(acc, rows, cols, n0 > 0, o, job.db);
      }
    }
  }
}

// The same source compiled twice (see cpu_features.h).
#ifdef EF_HAVE_AVX2_CLONE
template <typename T>
[[gnu::target("avx2,fma")]] void tile_avx2(const TileJob<T>& job, T* apack, T* bpack) {
  tile_body<T>(job, apack, bpack);
}
#endif

template <typename T>
void tile_generic(const TileJob<T>& job, T* apack, T* bpack) {
  tile_body<T>(job, apack, bpack);
}

int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// Tile side for a dimension of size d: ceil(d / kMaxTile) near-equal tiles
// (d = 200 gives 104 + 96, not 144 + 56), rounded up to a multiple of 8.
int64_t tile_side(int64_t d) { return ceil_div(ceil_div(d, ceil_div(d, kMaxTile)), 8) * 8; }

template <typename T>
void gram_impl(const T* a, const T* b, T* out, int64_t batch, int64_t n, int64_t da, int64_t db, bool symmetric) {
  constexpr int NR = nr_for<T>();
  void (*tile)(const TileJob<T>&, T*, T*) = tile_generic<T>;
#ifdef EF_HAVE_AVX2_CLONE
  if (cpu_has_avx2_fma()) tile = tile_avx2<T>;
#endif

  const int64_t ti_side = tile_side(da), tj_side = tile_side(db);
  // Flattened (i0, j0) tile origins; the symmetric case keeps tiles on or above
  // the diagonal (da == db, so both sides agree).
  std::vector<std::pair<int64_t, int64_t>> tiles;
  for (int64_t i0 = 0; i0 < da; i0 += ti_side)
    for (int64_t j0 = symmetric ? i0 : 0; j0 < db; j0 += tj_side) tiles.emplace_back(i0, j0);
  const int64_t tile_count = static_cast<int64_t>(tiles.size());
  const int64_t out_size = batch * da * db;

  // n is cut into `parts` ranges of whole KC blocks, each summed into its own
  // copy of out (part 0 into out itself), for two reasons: enough tasks for all
  // threads when batch * tiles is small, and, when a batch element has several
  // tiles, ranges short enough that their a and b rows stay in cache while every
  // tile reads them (tasks run part-major). Scratch memory caps the count.
  const bool parallel = batch * n * da * db > (int64_t{1} << 19);  // ~1 MFLOP: below, threads cost more
  const int64_t threads = parallel ? omp_get_max_threads() : 1;
  int64_t parts = 1;
  if (threads > 1) parts = ceil_div(4 * threads, batch * tile_count);
  if (parallel && tile_count > 1)
    parts = std::max(parts, ceil_div(n * (da + db) * static_cast<int64_t>(sizeof(T)), kCacheBytes));
  parts = std::min({parts, ceil_div(n, KC), 1 + kScratchBytes / (out_size * static_cast<int64_t>(sizeof(T)))});
  const int64_t part_rows = ceil_div(ceil_div(n, parts), KC) * KC;
  parts = ceil_div(n, part_rows);
  const int64_t tasks = parts * batch * tile_count;
  const int64_t grain = std::max<int64_t>(1, tasks / (64 * threads));

  // Allocated here: an exception must not leave an OpenMP region. Zeroed: in
  // the symmetric case the lower triangle is summed too (then overwritten).
  std::vector<T> scratch((parts - 1) * out_size, T(0));
  const int64_t apack_size = KC * ceil_div(ti_side, MR) * MR, bpack_size = KC * ceil_div(tj_side, NR) * NR;
  std::vector<T> packs(threads * (apack_size + bpack_size));

#pragma omp parallel num_threads(threads)
  {
    T* apack = packs.data() + omp_get_thread_num() * (apack_size + bpack_size);
    T* bpack = apack + apack_size;
    // Edge tiles are thinner and cost less, hence dynamic; many tiny tasks
    // (large batch of small matrices) are handed out in runs.
#pragma omp for schedule(dynamic, grain)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t part = task / (batch * tile_count);
      const int64_t k = task / tile_count % batch;
      const auto [i0, j0] = tiles[task % tile_count];
      const int64_t n0 = part * part_rows;
      T* dst = part == 0 ? out : scratch.data() + (part - 1) * out_size;
      const TileJob<T> job{a + (k * n + n0) * da, b + (k * n + n0) * db, dst + k * da * db,
                           std::min(part_rows, n - n0), da, db,
                           i0, std::min(ti_side, da - i0), j0, std::min(tj_side, db - j0)};
      tile(job, apack, bpack);
    }
    if (parts > 1) {
      constexpr int64_t kChunk = 4096;  // contiguous runs, so the adds vectorise
#pragma omp for schedule(static)
      for (int64_t e0 = 0; e0 < out_size; e0 += kChunk) {
        const int64_t e1 = std::min(out_size, e0 + kChunk);
        for (int64_t p = 1; p < parts; ++p) {
          const T* src = scratch.data() + (p - 1) * out_size;
          for (int64_t e = e0; e < e1; ++e) out[e] += src[e];
        }
      }
    }
    if (symmetric) {
#pragma omp for schedule(static)
      for (int64_t row = 0; row < batch * da; ++row) {
        T* o = out + row / da * da * da;
        const int64_t i = row % da;
        for (int64_t j = 0; j < i; ++j) o[i * da + j] = o[j * da + i];
      }
    }
  }
}

}  // namespace

torch::Tensor gram_cpu(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "gram_cpu: a and b must be CPU tensors, got ", a.device(),
              " and ", b.device());
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3, "gram_cpu: a and b must be 3-D [B, N, d], got shapes ", a.sizes(),
              " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "gram_cpu: a and b must have the same dtype, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.scalar_type() == torch::kFloat32 || a.scalar_type() == torch::kFloat64,
              "gram_cpu: dtype must be float32 or float64 (cast float16/bfloat16 to float32 first), got ",
              a.scalar_type());
  TORCH_CHECK(a.size(0) == b.size(0) && a.size(1) == b.size(1),
              "gram_cpu: a [B, N, da] and b [B, N, db] must agree in B and N, got shapes ", a.sizes(), " and ",
              b.sizes());
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous(), "gram_cpu: a and b must be contiguous");

  const int64_t batch = a.size(0), n = a.size(1), da = a.size(2), db = b.size(2);
  if (n == 0) return torch::zeros({batch, da, db}, a.options());
  auto out = torch::empty({batch, da, db}, a.options());
  if (out.numel() == 0) return out;

  const bool symmetric = a.data_ptr() == b.data_ptr() && a.sizes() == b.sizes();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gram_cpu", [&] {
    gram_impl<scalar_t>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch, n, da, db,
                        symmetric);
  });
  return out;
}
