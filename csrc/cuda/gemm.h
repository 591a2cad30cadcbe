// The CUDA kernels' host interface: plain C++ (raw pointers, sizes, strides, a stream), no
// torch headers, so the .cu files compile quickly and backend_cuda.cpp (g++) does the
// torch plumbing. Every kernel solves the shared GemmProblem (gemm_problem.h):
//     C[m, n] = epilogue(bias[n] + sum_k A'(i, k) * B(j, k))
// A'(i, k) = A(i, k) * act'(a_saved(i, k)) applied as A tiles are loaded (no copy), the
// epilogue's activation applied to the accumulators before the single store.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/index_math.h"
#include "gemm_problem.h"

namespace fusedmlp::cuda {

using fusedmlp::DType;
using fusedmlp::GemmProblem;
using fusedmlp::Operand;
// The name the .cu files use for the problem they are launched with.
using GemmArgs = GemmProblem;

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

// out[j] = sum over rows i of G'(i, j), G' = G * act'(saved) as GemmProblem::a_saved
// derives A (G is rows x cols with row stride src.outer_stride and column stride
// src.k_stride; saved likewise, or no data), in a fixed order: the same inputs give
// bitwise the same sums on every run (no atomics). cols > 0, rows >= 0.
// `workspace` must hold column_sums_workspace_bytes(dtype, rows, cols) bytes.
size_t column_sums_workspace_bytes(DType dtype, int64_t rows, int64_t cols);
void derived_column_sums(DType dtype, int64_t rows, int64_t cols, Operand src, Operand saved,
                         Activation act, double slope, void* workspace, void* out,
                         cudaStream_t stream);

// out[i] = activation_grad (order 1) or activation_grad2 (order 2) of (g[i], s[i]) for
// `count` contiguous elements, computed in the accumulator type.
void launch_activation_grad(DType dtype, Activation act, double slope, int order,
                            int64_t count, const void* g, const void* s, void* out,
                            cudaStream_t stream);

}  // namespace fusedmlp::cuda
