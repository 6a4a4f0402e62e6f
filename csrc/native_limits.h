// Limits of the native kernels, declared once. bindings.cpp exports them from _C, where Python
// reads them (emergence_fast._dispatch.register_k_max); the Triton twin of a kernel declares the
// same number (kernels/knn.py MAX_K), and tests/kernels/test_knn_kernel.py checks they agree.
#pragma once

// The CUDA kNN kernel keeps each query row's k nearest in a register list of at most this many
// entries; a larger k needs the cpp or torch backend.
constexpr int kRegisterKMax = 32;
