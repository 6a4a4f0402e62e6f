// Native op declarations shared by the CPU (OpenMP) and CUDA implementations.
//
// Contract (the Python dispatch layer in emergence_fast/_dispatch.py enforces it):
//   gram_*(a, b):            a [B, N, da], b [B, N, db], same dtype, contiguous
//                            -> a^T b of shape [B, da, db].
//                            float64 in -> float64 out (float64 accumulation);
//                            float32/float16/bfloat16 in -> float32 out (float32 accumulation).
//   softmax_entropy_*(x):    x [R, V] contiguous logits
//                            -> [R] entropy of softmax(x) in nats, one pass (online max / sum),
//                            -inf logits contribute zero probability.
//                            float64 in -> float64 out; otherwise float32 out.
//   knn_maxnorm_*(z, dx, k, mode): z [B, N, D] float32/float64 contiguous, columns [0, dx) are x and
//                            [dx, D) y; exact brute-force max-norm k-NN (self excluded)
//                            -> {eps [B, N] (z's dtype): k-th smallest joint distance,
//                                n_x, n_y [B, N] int64}. mode 0: radii only (dx == D; n_x, n_y empty),
//                            mode 1: KSG variant-1 counts (strict <, eps), mode 2: variant-2 counts
//                            (<= the largest marginal distance to the k joint neighbours, the k
//                            smallest (distance, index) pairs); 1 <= dx < D. CUDA: k <= kRegisterKMax.
//   gaussian_lse_*(q, k, w, dx): q [B, M, D], k [B, N, D], w [B, N, 3] log-weights, one dtype
//                            (float32 or float64), contiguous; 0 <= dx <= D
//                            -> out [B, M, 3] (that dtype): out[b, m, c] =
//                            log sum_n exp(w[b, n, c] - 0.5 |q[b, m] - k[b, n]|_c^2), the squared
//                            norm over columns [0, dx) (c = 0), [dx, D) (c = 1), all (c = 2).
//                            Direct differences sum (q - k)^2 (no |q|^2 + |k|^2 - 2 q.k), online
//                            max / sum over key tiles (nothing M x N stored), accumulated in the
//                            input dtype. A -inf weight drops its key; a row with every key
//                            dropped (or N = 0) gets -inf. Inputs finite, weights < +inf.
#pragma once
#include <torch/extension.h>

#include "native_limits.h"

torch::Tensor gram_cpu(const torch::Tensor& a, const torch::Tensor& b);
torch::Tensor softmax_entropy_cpu(const torch::Tensor& logits);
std::vector<torch::Tensor> knn_maxnorm_cpu(const torch::Tensor& z, int64_t dx, int64_t k, int64_t mode);
torch::Tensor gaussian_lse_cpu(const torch::Tensor& queries, const torch::Tensor& keys,
                               const torch::Tensor& log_weights, int64_t dx);

#ifdef WITH_CUDA
torch::Tensor gram_cuda(const torch::Tensor& a, const torch::Tensor& b);
torch::Tensor softmax_entropy_cuda(const torch::Tensor& logits);
std::vector<torch::Tensor> knn_maxnorm_cuda(const torch::Tensor& z, int64_t dx, int64_t k, int64_t mode);
torch::Tensor gaussian_lse_cuda(const torch::Tensor& queries, const torch::Tensor& keys,
                                const torch::Tensor& log_weights, int64_t dx);
#endif
