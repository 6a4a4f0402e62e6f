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
#pragma once
#include <torch/extension.h>

torch::Tensor gram_cpu(const torch::Tensor& a, const torch::Tensor& b);
torch::Tensor softmax_entropy_cpu(const torch::Tensor& logits);

#ifdef WITH_CUDA
torch::Tensor gram_cuda(const torch::Tensor& a, const torch::Tensor& b);
torch::Tensor softmax_entropy_cuda(const torch::Tensor& logits);
#endif
