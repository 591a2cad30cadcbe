// The CUDA backend of the fusedmlp ops: its dtype check, its GEMM (gemm.h's kernels, plus
// the column sums for grad_b) and the elementwise activation factors, on the current
// stream of x's device; linear_ops.cpp does the rest.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/gemm.h"
#include "linear_ops.h"

namespace fusedmlp::cuda {
namespace {

DType cuda_dtype(const char* op, const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: break;
  }
  TORCH_CHECK(false, op,
              ": the CUDA kernels support float32, float64, float16 and bfloat16, got x of "
              "dtype ", x.scalar_type());
}

// Device scratch memory from torch's caching allocator (stream-ordered, so it may be
// released as soon as the kernels using it are queued).
at::Tensor workspace(const at::Tensor& like, size_t bytes) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

void cuda_gemm(DType dtype, const GemmProblem& args, const at::Tensor& like) {
  const c10::cuda::CUDAGuard device_guard(like.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  if (args.m > 0 && args.n > 0) {  // (k == 0 still runs: C = act(b))
    const GemmPlan plan = plan_gemm(dtype, args);
    const at::Tensor scratch =
        plan.workspace_bytes > 0 ? workspace(like, plan.workspace_bytes) : at::Tensor();
    gemm(dtype, args, plan, scratch.defined() ? scratch.mutable_data_ptr() : nullptr, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (args.a_row_sums != nullptr && args.m > 0) {
    // The row sums of A' = the column sums of A'ᵀ (k x m): for grad_w's A = gᵀ, grad_b is
    // the column sums of g.
    const size_t bytes = column_sums_workspace_bytes(dtype, args.k, args.m);
    const at::Tensor scratch = bytes > 0 ? workspace(like, bytes) : at::Tensor();
    derived_column_sums(dtype, args.k, args.m, args.a.transposed(), args.a_saved.transposed(),
                        args.a_act, args.slope,
                        scratch.defined() ? scratch.mutable_data_ptr() : nullptr,
                        args.a_row_sums, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void cuda_activation_grad(DType dtype, Activation act, double slope, int order, int64_t count,
                          const void* g, const void* s, void* out, const at::Tensor& like) {
  const c10::cuda::CUDAGuard device_guard(like.device());
  launch_activation_grad(dtype, act, slope, order, count, g, s, out,
                         c10::cuda::getCurrentCUDAStream().stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

constexpr Backend kCuda{&cuda_dtype, &cuda_gemm, &cuda_activation_grad, /*derive_once=*/false};

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, CUDA, m) { register_kernels<kCuda>(m); }

}  // namespace fusedmlp::cuda
