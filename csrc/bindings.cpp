#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "emergence_fast native ops (CPU OpenMP; CUDA when built with it)";
  m.def("gram_cpu", &gram_cpu, "Batched a^T b over [B, N, d] (CPU, OpenMP, blocked)");
  m.def("softmax_entropy_cpu", &softmax_entropy_cpu, "Entropy of softmax over the last dim (CPU)");
#ifdef WITH_CUDA
  m.def("gram_cuda", &gram_cuda, "Batched a^T b over [B, N, d] (CUDA, tiled)");
  m.def("softmax_entropy_cuda", &softmax_entropy_cuda, "Entropy of softmax over the last dim (CUDA)");
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
