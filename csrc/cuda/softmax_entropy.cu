// Entropy of softmax over the last dim, in nats, in one pass over the logits:
//
//     p_v = exp(l_v - M) / S,  S = sum_v exp(l_v - M)
//     H   = -sum_v p_v log p_v = log S - T / S,   T = sum_v exp(l_v - M) (l_v - M)
//
// for any shift M; each thread keeps a running state (m, s, t) with s = sum exp(l - m) and
// t = sum exp(l - m)(l - m) over the logits it has seen, m their running max. Two states
// merge at m = max(m1, m2) as
//     s = s1 e^{m1-m} + s2 e^{m2-m},   t = e^{m1-m}(t1 + (m1-m) s1) + e^{m2-m}(t2 + (m2-m) s2).
// Special values: -inf logits have zero probability and are skipped (so the 0 * -inf of
// their t term never arises); an empty state (m = -inf, s = 0) is the identity of the merge;
// a row with no finite logit (all -inf) gives NaN; NaN or +inf anywhere in a row gives NaN,
// carried as s = NaN, which every later merge and rescale propagates. A non-empty state
// always has s >= 1 (its max logit contributes exp(0)), so s == 0 means empty.
//
// Layout: 8 warps per block; a row gets one warp (V small) or the whole block, reading
// 16-byte vectors from the first aligned element (scalar head and tail), 4 vectors in flight
// per thread. When rows are too few to fill the GPU, a row is also split across blocks
// (grid.y), which write partial states that a second small kernel merges.
// Accumulation is float32 (float64 for float64 input); the output has that type.

#include "common.cuh"

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

// __expf (ex2.approx) for float: its relative error grows like |x| * 2^-23 only where
// exp(x) itself is tiny, so the entropy error stays ~1e-6; the accurate expf would make the
// bf16 case compute-bound.
__device__ __forceinline__ float exp_acc(float x) { return __expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }
__device__ __forceinline__ float max_acc(float x, float y) { return fmaxf(x, y); }
__device__ __forceinline__ double max_acc(double x, double y) { return fmax(x, y); }

template <typename acc_t>
struct State {
  acc_t m, s, t;
};

template <typename acc_t>
__device__ __forceinline__ State<acc_t> empty_state() {
  return {static_cast<acc_t>(-INFINITY), acc_t(0), acc_t(0)};
}

// Fold K logits into st. One rescale per call (to the max of the chunk) rather than per
// element. fmax ignores NaN, so NaN logits reach the sums below and poison s there.
template <typename acc_t, int K>
__device__ __forceinline__ void absorb(State<acc_t>& st, const acc_t (&v)[K]) {
  const acc_t ninf = static_cast<acc_t>(-INFINITY);
  acc_t cm = st.m;
#pragma unroll
  for (int q = 0; q < K; ++q) cm = max_acc(cm, v[q]);
  if (cm == static_cast<acc_t>(INFINITY)) {  // +inf logit: softmax is undefined
    st.s = static_cast<acc_t>(NAN);
    return;
  }
  if (cm > st.m) {
    if (st.s != acc_t(0)) {  // empty states skip this: (-inf) * 0 would be NaN
      const acc_t d = st.m - cm;
      const acc_t e = exp_acc(d);
      st.t = e * (st.t + d * st.s);
      st.s = e * st.s;
    }
    st.m = cm;
  }
#pragma unroll
  for (int q = 0; q < K; ++q) {
    const acc_t d = v[q] - st.m;
    const acc_t e = exp_acc(d);
    const bool live = v[q] != ninf;  // -inf: d is -inf (or NaN if m is -inf too); skip it
    st.s += live ? e : acc_t(0);
    st.t += live ? e * d : acc_t(0);
  }
}

template <typename acc_t>
__device__ __forceinline__ State<acc_t> merge(const State<acc_t>& x, const State<acc_t>& y) {
  if (y.s == acc_t(0)) return x;  // NaN (poisoned) is not == 0, so poison always merges in
  if (x.s == acc_t(0)) return y;
  const acc_t m = max_acc(x.m, y.m);
  const acc_t dx = x.m - m;
  const acc_t dy = y.m - m;
  const acc_t ex = exp_acc(dx);
  const acc_t ey = exp_acc(dy);
  return {m, x.s * ex + y.s * ey, ex * (x.t + dx * x.s) + ey * (y.t + dy * y.s)};
}

template <typename acc_t>
__device__ __forceinline__ acc_t entropy_of(const State<acc_t>& st) {
  if (st.s == acc_t(0)) return static_cast<acc_t>(NAN);  // no finite logit
  return log_acc(st.s) - st.t / st.s;
}

template <typename acc_t>
__device__ __forceinline__ State<acc_t> warp_merge(State<acc_t> st) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    State<acc_t> o;
    o.m = __shfl_xor_sync(0xffffffffu, st.m, off);
    o.s = __shfl_xor_sync(0xffffffffu, st.s, off);
    o.t = __shfl_xor_sync(0xffffffffu, st.t, off);
    st = merge(st, o);
  }
  return st;
}

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;  // 16-byte vectors in flight per thread

// Grid: x = row group (one row per WARPS_PER_ROW warps), y = split of each row.
// WARPS_PER_ROW = 1: 8 rows per block, warp-level reduction only.
// WARPS_PER_ROW = 8: one row per block, warp then shared-memory reduction.
// With gridDim.y > 1, block (x, y) covers vectors [y * per, (y + 1) * per) of its row's
// aligned body (split 0 also takes the scalar head and tail) and writes its state to
// partial[row][y]; otherwise it writes the entropy to out[row].
template <typename T, typename acc_t, int WARPS_PER_ROW>
__global__ void __launch_bounds__(kThreads)
    softmax_entropy_kernel(const T* __restrict__ x, int64_t R, int V, acc_t* __restrict__ out,
                           acc_t* __restrict__ partial) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int G = 32 * WARPS_PER_ROW;        // threads per row
  constexpr int ROWS = kWarps / WARPS_PER_ROW;  // rows per block
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = threadIdx.x % G;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * ROWS + warp / WARPS_PER_ROW;
  // Whole row groups leave together; the only block-wide barrier (WARPS_PER_ROW == kWarps)
  // has ROWS == 1, where row < R for every block.
  if (row >= R) return;

  const T* xr = x + row * V;
  const int misalign = static_cast<int>(reinterpret_cast<uintptr_t>(xr) & 15);
  const int head = min(V, misalign == 0 ? 0 : (16 - misalign) / static_cast<int>(sizeof(T)));
  const int nvec = (V - head) / VEC;
  const int tail = head + nvec * VEC;
  const int splits = gridDim.y;
  const int split = blockIdx.y;
  const int per = (nvec + splits - 1) / splits;
  const int v_begin = min(nvec, split * per);
  const int v_end = min(nvec, v_begin + per);

  State<acc_t> st = empty_state<acc_t>();
  if (split == 0) {  // < VEC scalars at each end, so one pass of the group covers them
    if (g < head) {
      const acc_t v[1] = {to_acc(xr[g])};
      absorb(st, v);
    }
    if (tail + g < V) {
      const acc_t v[1] = {to_acc(xr[tail + g])};
      absorb(st, v);
    }
  }

  const uint4* body = reinterpret_cast<const uint4*>(xr + head);  // 16-byte aligned by construction
  for (int base = v_begin + g; base < v_end; base += G * kUnroll) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int idx = base + u * G;
      raw[u] = idx < v_end ? __ldg(body + idx) : make_uint4(0u, 0u, 0u, 0u);
    }
    acc_t v[kUnroll * VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      T e[VEC];
      memcpy(e, &raw[u], 16);
      const bool ok = base + u * G < v_end;
#pragma unroll
      for (int q = 0; q < VEC; ++q) v[u * VEC + q] = ok ? to_acc(e[q]) : static_cast<acc_t>(-INFINITY);
    }
    absorb(st, v);  // out-of-range slots are -inf, which absorb skips
  }

  st = warp_merge(st);
  if constexpr (WARPS_PER_ROW > 1) {
    __shared__ State<acc_t> warp_states[kWarps];
    if (lane == 0) warp_states[warp] = st;
    __syncthreads();
    if (warp != 0) return;
    st = lane < kWarps ? warp_states[lane] : empty_state<acc_t>();
    st = warp_merge(st);
  }
  if (g != 0) return;
  if (splits == 1) {
    out[row] = entropy_of(st);
  } else {
    acc_t* p = partial + (row * splits + split) * 3;
    p[0] = st.m;
    p[1] = st.s;
    p[2] = st.t;
  }
}

// One thread per row: merge the row's split states.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    merge_partials_kernel(const acc_t* __restrict__ partial, int64_t R, int splits, acc_t* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= R) return;
  State<acc_t> st = empty_state<acc_t>();
  for (int s = 0; s < splits; ++s) {
    const acc_t* p = partial + (row * splits + s) * 3;
    st = merge(st, State<acc_t>{p[0], p[1], p[2]});
  }
  out[row] = entropy_of(st);
}

// ---- launch planning (plain arithmetic) ----

// Up to this many logits a row gets one warp; beyond, a whole block.
constexpr int64_t kWarpRowMaxV = 4096;

// Blocks per row for block-per-row launches: enough blocks for ~4 per SM, each split
// keeping at least one 16-byte vector per thread.
inline int plan_row_splits(int64_t R, int64_t V, int vec, int64_t sms) {
  const int64_t target = 4 * sms;
  if (R >= target) return 1;
  int64_t splits = (target + R - 1) / R;
  const int64_t by_size = (V / vec) / kThreads;
  if (splits > by_size) splits = by_size;
  if (splits > 65535) splits = 65535;
  return splits < 1 ? 1 : static_cast<int>(splits);
}

}  // namespace

// ---- Host side ----

namespace {

template <typename T, typename acc_t>
void launch_entropy(const at::Tensor& logits, at::Tensor& out) {
  const int64_t R = logits.size(0);
  const int V = static_cast<int>(logits.size(1));
  const T* x = reinterpret_cast<const T*>(logits.data_ptr());
  acc_t* o = out.data_ptr<acc_t>();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  if (V <= kWarpRowMaxV) {
    const int64_t blocks = (R + kWarps - 1) / kWarps;
    TORCH_CHECK(blocks <= INT_MAX, "softmax_entropy_cuda: too many rows (", R, ")");
    softmax_entropy_kernel<T, acc_t, 1><<<dim3(static_cast<unsigned>(blocks), 1), kThreads, 0, stream>>>(
        x, R, V, o, nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }

  TORCH_CHECK(R <= INT_MAX, "softmax_entropy_cuda: too many rows (", R, ")");
  const int splits = plan_row_splits(R, V, static_cast<int>(16 / sizeof(T)), current_device_sms());
  const dim3 grid(static_cast<unsigned>(R), static_cast<unsigned>(splits));
  if (splits == 1) {
    softmax_entropy_kernel<T, acc_t, kWarps><<<grid, kThreads, 0, stream>>>(x, R, V, o, nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  at::Tensor partial = out.new_empty({R, splits, 3});
  acc_t* p = partial.data_ptr<acc_t>();
  softmax_entropy_kernel<T, acc_t, kWarps><<<grid, kThreads, 0, stream>>>(x, R, V, nullptr, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const unsigned merge_blocks = static_cast<unsigned>((R + kThreads - 1) / kThreads);
  merge_partials_kernel<acc_t><<<merge_blocks, kThreads, 0, stream>>>(p, R, splits, o);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

at::Tensor softmax_entropy_cuda(const at::Tensor& logits) {
  TORCH_CHECK(logits.defined(), "softmax_entropy_cuda: undefined input tensor");
  TORCH_CHECK(logits.is_cuda(), "softmax_entropy_cuda: logits must be a CUDA tensor, got ", logits.device());
  TORCH_CHECK(logits.dim() == 2, "softmax_entropy_cuda: expected logits [R, V], got shape ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat || dtype == at::kDouble,
              "softmax_entropy_cuda: unsupported dtype ", dtype,
              " (expected float16, bfloat16, float32 or float64)");
  TORCH_CHECK(logits.is_contiguous(), "softmax_entropy_cuda: logits must be contiguous");
  // Row-internal indices are int; leave headroom for base + G * kUnroll.
  TORCH_CHECK(logits.size(1) <= INT_MAX - (1 << 16), "softmax_entropy_cuda: V = ", logits.size(1),
              " is too large");

  const c10::cuda::CUDAGuard guard(logits.device());
  const int64_t R = logits.size(0);
  const int64_t V = logits.size(1);
  at::Tensor out = logits.new_empty({R}, logits.options().dtype(dtype == at::kDouble ? at::kDouble : at::kFloat));
  if (R == 0) return out;
  if (V == 0) return out.fill_(NAN);  // an empty row has no finite logit, like an all -inf one

  switch (dtype) {
    case at::kHalf: launch_entropy<__half, float>(logits, out); break;
    case at::kBFloat16: launch_entropy<__nv_bfloat16, float>(logits, out); break;
    case at::kFloat: launch_entropy<float, float>(logits, out); break;
    default: launch_entropy<double, double>(logits, out); break;
  }
  return out;
}
