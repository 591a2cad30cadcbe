// The CUDA kernels' host interface: plain C++ (raw pointers, sizes, strides, a stream), no
// torch headers, so the .cu files compile quickly and linear_relu_cuda.cpp (g++) does the
// torch plumbing. Every kernel computes in the "NT" form
//     C[m, n] = epilogue(bias[n] + sum_k A(i, k) * B(j, k))
// where A is m x k and B is n x k (both "outer x k"), so forward, grad_x and grad_w are
// the same GEMM with different operand views (see linear_relu_cuda.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/index_math.h"

namespace fusedmlp::cuda {

enum class DType { f32, f64, f16, bf16 };

// A read-only strided matrix view: element (outer, k) is data[outer * outer_stride +
// k * k_stride]. Any strides work (transposed, sliced, 0 for expanded).
struct Operand {
  const void* data = nullptr;
  int64_t outer_stride = 0;
  int64_t k_stride = 0;
};

struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  Operand a;             // m x k
  Operand b;             // n x k
  // If a_mask.data is set, A(i, k) counts only where !(a_mask(i, k) <= 0): the ReLU mask
  // taken from the saved output y, applied as A tiles are loaded (no masked copy).
  Operand a_mask;
  const void* bias = nullptr;  // n values, stride bias_stride; null: no bias
  int64_t bias_stride = 1;
  bool relu = false;     // NaN-preserving ReLU before the single store of C
  void* c = nullptr;     // m x n, row stride ldc, column stride 1; only written
  int64_t ldc = 0;
};

// GemmPlan (how a GEMM is cut into blocks and k slices): see index_math.h.

// The plan for this problem on the current device. Throws std::runtime_error where the
// kernels cannot run (fp16/bf16 need sm_80+).
GemmPlan plan_gemm(DType dtype, const GemmArgs& args);

// C = epilogue(A · Bᵀ), m, n > 0 (k may be 0: C = epilogue(bias)), on `stream` of the
// current device; the caller checks the launch (C10_CUDA_KERNEL_LAUNCH_CHECK).
void gemm(DType dtype, const GemmArgs& args, const GemmPlan& plan, void* workspace,
          cudaStream_t stream);

// The kernels gemm() picks from: CUDA cores for f32/f64 (gemm_simt.cu), tensor cores for
// f16/bf16 (gemm_mma.cu), each with its own tile sizes.
GemmPlan plan_simt_gemm(DType dtype, const GemmArgs& args, int sm_count);
void launch_simt_gemm(DType dtype, const GemmArgs& args, const GemmPlan& plan, void* workspace,
                      cudaStream_t stream);
GemmPlan plan_mma_gemm(DType dtype, const GemmArgs& args, int sm_count);
// The image of the tensor-core kernel that the current device loaded, as major * 10 +
// minor: `binary` the machine code's arch (cudaFuncAttributes::binaryVersion), `ptx` the
// virtual arch its code was compiled for (ptxVersion; lower than the device's when the
// driver JIT-compiled older PTX). Throws if this build has no image the device can load.
struct KernelImage {
  int binary = 0, ptx = 0;
};
KernelImage mma_kernel_image(DType dtype);
void launch_mma_gemm(DType dtype, const GemmArgs& args, const GemmPlan& plan, void* workspace,
                     cudaStream_t stream);

// out[j] = sum over rows i of G(i, j), masked like GemmArgs::a_mask (G is rows x cols with
// row stride src.outer_stride and column stride src.k_stride), in a fixed order: the same
// inputs give bitwise the same sums on every run (no atomics). cols > 0, rows >= 0.
// `workspace` must hold column_sums_workspace_bytes(dtype, rows, cols) bytes.
size_t column_sums_workspace_bytes(DType dtype, int64_t rows, int64_t cols);
void masked_column_sums(DType dtype, int64_t rows, int64_t cols, Operand src, Operand mask,
                        void* workspace, void* out, cudaStream_t stream);

}  // namespace fusedmlp::cuda
