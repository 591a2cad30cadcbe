// CPU kernels of the fusedmlp ops (linear_relu, linear and their backwards): thin shape
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

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

void check_cpu_dtype(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": the CPU kernels support float32 and float64, got x of dtype ",
              x.scalar_type());
}

template <typename T>
StridedMatrix<T> matrix(const at::Tensor& t2d) {
  return {t2d.const_data_ptr<T>(), t2d.stride(0), t2d.stride(1)};
}

// y = act(x · W^T + b): A = x, B = W^T, the register tile starts from the bias.
at::Tensor forward(const char* op, const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, bool relu) {
  check_forward_args(op, x, weight, bias);
  check_cpu_dtype(op, x);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  at::Tensor y = at::empty(output_shape(x, weight), x.options());
  const bool has_bias = bias.has_value() && bias->defined();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fusedmlp_forward_cpu", [&] {
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
    pb.relu = relu;
    gemm(pb);
  });
  return y;
}

// Gradients of y = act(x · W^T + b). `relu_output` is the saved y of linear_relu (its sign
// is the ReLU mask), undefined for plain linear. The masked grad_y is never materialised:
// the mask is applied while grad_y is packed, and grad_b is summed in that same pass.
Grads backward(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
               const at::Tensor& weight, const at::Tensor& relu_output,
               std::array<bool, 3> output_mask) {
  check_backward_args(op, grad_y, x, weight, relu_output);
  check_cpu_dtype(op, x);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  const at::Tensor g2 = as_rows(grad_y, out_features);
  const at::Tensor y2 = relu_output.defined() ? as_rows(relu_output, out_features) : at::Tensor();
  const int64_t rows = x2.size(0);

  at::Tensor grad_x, grad_w, grad_b;
  if (output_mask[0]) grad_x = at::empty(x.sizes(), x.options());
  if (output_mask[1]) grad_w = at::empty({out_features, in_features}, weight.options());
  if (output_mask[2]) grad_b = at::empty({out_features}, weight.options());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fusedmlp_backward_cpu", [&] {
    const StridedMatrix<scalar_t> g = matrix<scalar_t>(g2);
    const StridedMatrix<scalar_t> mask = y2.defined() ? matrix<scalar_t>(y2) : StridedMatrix<scalar_t>{};
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

at::Tensor linear_relu_cpu(const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  return forward("fusedmlp.linear_relu", x, weight, bias, /*relu=*/true);
}

Grads linear_relu_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                               const at::Tensor& weight, const at::Tensor& y,
                               std::array<bool, 3> output_mask) {
  TORCH_CHECK(y.defined(), "fusedmlp.linear_relu_backward: y (the forward output) is required");
  return backward("fusedmlp.linear_relu_backward", grad_y, x, weight, y, output_mask);
}

at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias) {
  return forward("fusedmlp.linear", x, weight, bias, /*relu=*/false);
}

Grads linear_backward_cpu(const at::Tensor& grad_y, const at::Tensor& x,
                          const at::Tensor& weight, std::array<bool, 3> output_mask) {
  return backward("fusedmlp.linear_backward", grad_y, x, weight, at::Tensor(), output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, CPU, m) {
  m.impl("linear_relu", &linear_relu_cpu);
  m.impl("linear_relu_backward", &linear_relu_backward_cpu);
  m.impl("linear", &linear_cpu);
  m.impl("linear_backward", &linear_backward_cpu);
}

}  // namespace fusedmlp::cpu
