// CUDA kernels of the fusedmlp ops (linear_relu, linear and their backwards): shape
// plumbing that maps each op onto the GEMM of gemm.h (C = epilogue(A · Bᵀ)) and the
// column sums, on the current stream of x's device. Operands are passed as strided views
// (no copies; reshape copies only an N-D x whose strides cannot be flattened).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "checks.h"
#include "cuda/gemm.h"

namespace fusedmlp::cuda {
namespace {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

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

// A 2-D tensor as a GEMM operand whose rows are the "outer" dimension.
Operand rows_of(const at::Tensor& t2d) {
  return {t2d.const_data_ptr(), t2d.stride(0), t2d.stride(1)};
}
// ... and as one whose columns are (the transposed matrix).
Operand columns_of(const at::Tensor& t2d) {
  return {t2d.const_data_ptr(), t2d.stride(1), t2d.stride(0)};
}

// Device scratch memory from torch's caching allocator (stream-ordered, so it may be
// released as soon as the kernels using it are queued).
at::Tensor workspace(const at::Tensor& like, size_t bytes) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

void launch_gemm(DType dtype, const GemmArgs& args, const at::Tensor& like) {
  if (args.m == 0 || args.n == 0) return;  // nothing to write (k == 0 still runs: C = act(b))
  const GemmPlan plan = plan_gemm(dtype, args);
  const at::Tensor scratch = plan.workspace_bytes > 0 ? workspace(like, plan.workspace_bytes)
                                                      : at::Tensor();
  gemm(dtype, args, plan, scratch.defined() ? scratch.mutable_data_ptr() : nullptr,
       c10::cuda::getCurrentCUDAStream().stream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// y = act(x · Wᵀ + b): A = x (rows x in), B = W (out x in).
at::Tensor forward(const char* op, const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, bool relu) {
  check_forward_args(op, x, weight, bias);
  const DType dtype = cuda_dtype(op, x);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  at::Tensor y = at::empty(output_shape(x, weight), x.options());

  GemmArgs args;
  args.m = x2.size(0);
  args.n = out_features;
  args.k = in_features;
  args.a = rows_of(x2);
  args.b = rows_of(weight);
  if (bias.has_value() && bias->defined()) {
    args.bias = bias->const_data_ptr();
    args.bias_stride = bias->stride(0);
  }
  args.relu = relu;
  args.c = y.mutable_data_ptr();
  args.ldc = out_features;
  launch_gemm(dtype, args, y);
  return y;
}

// Gradients of y = act(x · Wᵀ + b); `relu_output` is linear_relu's saved y (the mask),
// undefined for plain linear. g = grad_y masked by !(y <= 0), never materialised: the
// kernels apply the mask as they load grad_y.
Grads backward(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
               const at::Tensor& weight, const at::Tensor& relu_output,
               std::array<bool, 3> output_mask) {
  check_backward_args(op, grad_y, x, weight, relu_output);
  const DType dtype = cuda_dtype(op, x);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  const at::Tensor g2 = as_rows(grad_y, out_features);
  const at::Tensor y2 =
      relu_output.defined() ? as_rows(relu_output, out_features) : at::Tensor();
  const int64_t rows = x2.size(0);

  at::Tensor grad_x, grad_w, grad_b;
  if (output_mask[0]) grad_x = at::empty(x.sizes(), x.options());
  if (output_mask[1]) grad_w = at::empty({out_features, in_features}, weight.options());
  if (output_mask[2]) grad_b = at::empty({out_features}, weight.options());

  if (grad_x.defined()) {  // grad_x = g · W: A = g (rows x out), B = Wᵀ (in x out)
    GemmArgs args;
    args.m = rows;
    args.n = in_features;
    args.k = out_features;
    args.a = rows_of(g2);
    if (y2.defined()) args.a_mask = rows_of(y2);
    args.b = columns_of(weight);
    args.c = grad_x.mutable_data_ptr();
    args.ldc = in_features;
    launch_gemm(dtype, args, grad_x);
  }
  if (grad_w.defined()) {  // grad_w = gᵀ · x: A = gᵀ (out x rows), B = xᵀ (in x rows)
    GemmArgs args;
    args.m = out_features;
    args.n = in_features;
    args.k = rows;
    args.a = columns_of(g2);
    if (y2.defined()) args.a_mask = columns_of(y2);
    args.b = columns_of(x2);
    args.c = grad_w.mutable_data_ptr();
    args.ldc = in_features;
    launch_gemm(dtype, args, grad_w);
  }
  if (grad_b.defined() && out_features > 0) {  // grad_b = column sums of g
    const size_t bytes = column_sums_workspace_bytes(dtype, rows, out_features);
    const at::Tensor scratch = bytes > 0 ? workspace(grad_b, bytes) : at::Tensor();
    masked_column_sums(dtype, rows, out_features, rows_of(g2),
                       y2.defined() ? rows_of(y2) : Operand{},
                       scratch.defined() ? scratch.mutable_data_ptr() : nullptr,
                       grad_b.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream().stream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {grad_x, grad_w, grad_b};
}

at::Tensor linear_relu_cuda(const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
  return forward("fusedmlp.linear_relu", x, weight, bias, /*relu=*/true);
}

Grads linear_relu_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                                const at::Tensor& weight, const at::Tensor& y,
                                std::array<bool, 3> output_mask) {
  TORCH_CHECK(y.defined(), "fusedmlp.linear_relu_backward: y (the forward output) is required");
  return backward("fusedmlp.linear_relu_backward", grad_y, x, weight, y, output_mask);
}

at::Tensor linear_cuda(const at::Tensor& x, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias) {
  return forward("fusedmlp.linear", x, weight, bias, /*relu=*/false);
}

Grads linear_backward_cuda(const at::Tensor& grad_y, const at::Tensor& x,
                           const at::Tensor& weight, std::array<bool, 3> output_mask) {
  return backward("fusedmlp.linear_backward", grad_y, x, weight, at::Tensor(), output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, CUDA, m) {
  m.impl("linear_relu", &linear_relu_cuda);
  m.impl("linear_relu_backward", &linear_relu_backward_cuda);
  m.impl("linear", &linear_cuda);
  m.impl("linear_backward", &linear_backward_cuda);
}

}  // namespace fusedmlp::cuda
