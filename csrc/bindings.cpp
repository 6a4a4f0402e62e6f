#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "emergence_fast native ops (CPU OpenMP; CUDA when built with it)";
  m.def("gram_cpu", &gram_cpu, "Batched a^T b over [B, N, d] (CPU, OpenMP, blocked)");
  m.def("softmax_entropy_cpu", &softmax_entropy_cpu, "Entropy of softmax over the last dim (CPU)");
  m.def("knn_maxnorm_cpu", &knn_maxnorm_cpu, "Exact max-norm k-NN radii and KSG counts over [B, N, D] (CPU, OpenMP)",
        py::arg("z"), py::arg("dx"), py::arg("k"), py::arg("mode"));
  m.def("gaussian_lse_cpu", &gaussian_lse_cpu,
        "Log-sum-exp of unit Gaussian kernels, x / y / joint, over [B, M, D] x [B, N, D] (CPU, OpenMP)",
        py::arg("queries"), py::arg("keys"), py::arg("log_weights"), py::arg("dx"));
  // Largest k of the register-list kNN kernels (CUDA here, Triton in kernels/knn.py): one number.
  m.attr("REGISTER_K_MAX") = kRegisterKMax;
#ifdef WITH_CUDA
  m.def("gram_cuda", &gram_cuda, "Batched a^T b over [B, N, d] (CUDA, tiled)");
  m.def("softmax_entropy_cuda", &softmax_entropy_cuda, "Entropy of softmax over the last dim (CUDA)");
  m.def("knn_maxnorm_cuda", &knn_maxnorm_cuda, "Exact max-norm k-NN radii and KSG counts over [B, N, D] (CUDA, k <= REGISTER_K_MAX)",
        py::arg("z"), py::arg("dx"), py::arg("k"), py::arg("mode"));
  m.def("gaussian_lse_cuda", &gaussian_lse_cuda,
        "Log-sum-exp of unit Gaussian kernels, x / y / joint, over [B, M, D] x [B, N, D] (CUDA, tiled)",
        py::arg("queries"), py::arg("keys"), py::arg("log_weights"), py::arg("dx"));
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
