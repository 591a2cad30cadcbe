// CPU kernels of fusedmlp::linear_relu and fusedmlp::linear_relu_backward: thin shape
// plumbing around the blocked GEMM (gemm.h), which does all the arithmetic.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "checks.h"
#include "cpu/gemm.h"

namespace fusedmlp::cpu {
namespace {

void check_cpu_dtype(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": the CPU kernels support float32 and float64, got x of dtype ",
              x.scalar_type());
}

template <typename T>
StridedMatrix<T> matrix(const at::Tensor& t2d) {
  return {t2d.const_data_ptr<T>(), t2d.stride(0), t2d.stride(1)};
}

// (..., cols) -> (rows, cols); a view whenever the strides allow, works for cols == 0.
at::Tensor as_rows(const at::Tensor& t, int64_t cols) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return t.reshape({rows, cols});
}

at::Tensor linear_relu_cpu(const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  check_linear_relu_args(x, weight, bias);
  check_cpu_dtype("fusedmlp.linear_relu", x);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  at::Tensor y = at::empty(linear_relu_output_shape(x, weight), x.options());
  const bool has_bias = bias.has_value() && bias->defined();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fusedmlp_linear_relu_cpu", [&] {
    // y = relu(x · W^T + b): A = x, B = W^T, the tile starts from the bias.
    GemmProblem<scalar_t> pb;
    pb.m = x2.size(0);
    pb.n = out_features;
    pb.k = in_features;
    pb.a = matrix<scalar_t>(x2);
    pb.b = matrix<scalar_t>(weight).transposed();
    pb.c = y.mutable_data_ptr<scalar_t>();
    if (has_bias) {
      pb.bias = bias->const_data_ptr<scalar_t>();
      pb.bias_stride = bias->stride(0);
    }
    pb.relu = true;
    gemm(pb);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_relu_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& y, std::array<bool, 3> output_mask) {
  check_linear_relu_backward_args(grad_y, x, weight, y);
  check_cpu_dtype("fusedmlp.linear_relu_backward", x);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  const at::Tensor g2 = as_rows(grad_y, out_features);
  const at::Tensor y2 = as_rows(y, out_features);
  const int64_t rows = x2.size(0);

  at::Tensor grad_x, grad_w, grad_b;
  if (output_mask[0]) grad_x = at::empty(x.sizes(), x.options());
  if (output_mask[1]) grad_w = at::empty({out_features, in_features}, weight.options());
  if (output_mask[2]) grad_b = at::empty({out_features}, weight.options());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fusedmlp_linear_relu_backward_cpu", [&] {
    // g = grad_y masked by y > 0 is never materialised: the mask is applied as g is packed.
    const StridedMatrix<scalar_t> g = matrix<scalar_t>(g2), mask = matrix<scalar_t>(y2);
    if (grad_x.defined()) {  // grad_x = g · W
      GemmProblem<scalar_t> pb;
      pb.m = rows;
      pb.n = in_features;
      pb.k = out_features;
      pb.a = g;
      pb.a_mask = mask;
      pb.b = matrix<scalar_t>(weight);
      pb.c = grad_x.mutable_data_ptr<scalar_t>();
      gemm(pb);
    }
    scalar_t* grad_b_out = grad_b.defined() ? grad_b.mutable_data_ptr<scalar_t>() : nullptr;
    if (grad_w.defined()) {  // grad_w = g^T · x; grad_b = row sums of g^T, taken while packing
      GemmProblem<scalar_t> pb;
      pb.m = out_features;
      pb.n = in_features;
      pb.k = rows;
      pb.a = g.transposed();
      pb.a_mask = mask.transposed();
      pb.b = matrix<scalar_t>(x2);
      pb.c = grad_w.mutable_data_ptr<scalar_t>();
      pb.a_row_sums = grad_b_out;
      gemm(pb);
    } else if (grad_b_out) {
      masked_row_sums(out_features, rows, g.transposed(), mask.transposed(), grad_b_out);
    }
  });
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, CPU, m) {
  m.impl("linear_relu", &linear_relu_cpu);
  m.impl("linear_relu_backward", &linear_relu_backward_cpu);
}

}  // namespace fusedmlp::cpu
