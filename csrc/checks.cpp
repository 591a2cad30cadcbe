#include "checks.h"

#include <c10/util/Exception.h>

namespace fusedmlp {

void check_same_device(const char* op, const char* name, const at::Tensor& t,
                       const at::Tensor& x) {
  TORCH_CHECK(t.device() == x.device(), op, ": expected ", name,
              " on the same device as x (", x.device(), "), got ", t.device());
}

void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                      const at::Tensor& x) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": expected ", name,
              " to have the dtype of x (", x.scalar_type(), "), got ", t.scalar_type());
}

void check_x_rank(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, op,
              ": expected x of shape (..., in_features) with at least 1 dimension, got a 0-D "
              "tensor");
}

void check_x_floating(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.is_floating_point(), op,
              ": expected x to be a floating-point tensor (float32 or float64; on CUDA also "
              "float16 or bfloat16), got ",
              x.scalar_type());
}

void check_weight_rank(const char* op, const char* name, const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2, op, ": expected ", name,
              " of shape (out_features, in_features), got a ", weight.dim(),
              "-D tensor of shape ", weight.sym_sizes());
}

void check_x_matches_weight(const char* op, const char* name, const at::Tensor& x,
                            const at::Tensor& weight) {
  TORCH_CHECK(x.sym_size(-1) == weight.sym_size(1), op, ": expected x of shape (..., ",
              weight.sym_size(1), ") to match ", name, " of shape ", weight.sym_sizes(),
              " (in_features = ", weight.sym_size(1), "), got x of shape ", x.sym_sizes());
}

void check_bias(const char* op, const char* name, const at::Tensor& bias,
                const at::Tensor& weight, const char* out_features, const at::Tensor& x) {
  TORCH_CHECK(bias.dim() == 1 && bias.sym_size(0) == weight.sym_size(0), op, ": expected ",
              name, " of shape (", weight.sym_size(0), ",) = (", out_features,
              ",) or None, got shape ", bias.sym_sizes());
  check_same_dtype(op, name, bias, x);
  check_same_device(op, name, bias, x);
}

namespace {

void check_x_and_weight(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  check_x_rank(op, x);
  check_weight_rank(op, "weight", weight);
  check_x_floating(op, x);
  check_same_dtype(op, "weight", weight, x);
  check_same_device(op, "weight", weight, x);
  check_x_matches_weight(op, "weight", x, weight);
}

}  // namespace

void check_forward_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias) {
  check_x_and_weight(op, x, weight);
  if (bias.has_value() && bias->defined())
    check_bias(op, "bias", *bias, weight, "out_features", x);
}

void check_backward_args(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
                         const at::Tensor& weight, const at::Tensor& y) {
  check_x_and_weight(op, x, weight);
  const auto leading = x.sym_sizes().slice(0, x.dim() - 1);
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"grad_y", grad_y},
                                std::pair<const char*, const at::Tensor&>{"y", y}}) {
    if (!t.defined()) continue;
    check_same_dtype(op, name, t, x);
    check_same_device(op, name, t, x);
    TORCH_CHECK(t.dim() == x.dim() && t.sym_sizes().slice(0, x.dim() - 1).equals(leading) &&
                    t.sym_size(-1) == weight.sym_size(0),
                op, ": expected ", name, " of shape x.shape[:-1] + (out_features,) = ",
                leading, " + (", weight.sym_size(0), ",), got ", t.sym_sizes());
  }
}

std::vector<int64_t> output_shape(const at::Tensor& x, const at::Tensor& weight) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(weight.size(0));
  return shape;
}

at::Tensor as_rows(const at::Tensor& t, int64_t cols) {
  // A 2-D t already is its rows: no reshape (a dispatched view op, ~0.1 us each, three of
  // them in a backward call that a batch of 1 notices).
  if (t.dim() == 2 && t.size(1) == cols) return t;
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return t.reshape({rows, cols});
}

}  // namespace fusedmlp
