// Shared prelude of the CUDA ops.
//
// Deliberately light headers: torch/extension.h costs over a minute of nvcc time per file,
// and ATen/cuda/CUDAContext.h needs the cuBLAS/cuSPARSE headers that a bare toolkit lacks.
// c10::cuda::getCurrentCUDAStream is the function at::cuda::getCurrentCUDAStream names.
// A CPU build of torch ships the c10/cuda headers without the generated cuda_cmake_macros.h,
// which only sets Windows DLL export macros; skip it there so the sources still compile.
#pragma once
#if !__has_include(<c10/cuda/impl/cuda_cmake_macros.h>) && !defined(C10_CUDA_NO_CMAKE_CONFIGURE_FILE)
#define C10_CUDA_NO_CMAKE_CONFIGURE_FILE
#endif
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// The extension build (setup.py defines TORCH_EXTENSION_NAME) checks each definition against
// the shared declaration; standalone compiles skip ops.h, which includes torch/extension.h.
// torch::Tensor is at::Tensor, so the symbols are the same either way.
#ifdef TORCH_EXTENSION_NAME
#include "../ops.h"
#endif

// An attribute of the current device (SM count, compute capability), for the launch plans.
inline int current_device_attribute(cudaDeviceAttr attr) {
  int device = 0;
  int value = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

// Streaming multiprocessors of the current device: the launch plans size their splits by it.
inline int current_device_sms() { return current_device_attribute(cudaDevAttrMultiProcessorCount); }

// Loads widen to the accumulation type: float for 16-bit and float inputs, double for double.
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
