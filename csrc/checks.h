// Argument checks shared by every backend and the autograd kernel, so a bad call gets
// the same clear message (naming the argument and what was expected) wherever it lands;
// and the shape helpers every backend's kernels use.
// Sizes are compared as SymInts: the checks also run on fake tensors under torch.compile.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace fusedmlp {

// `op` names the op in messages ("fusedmlp.linear_relu", "fusedmlp.linear", ...).
void check_forward_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias);

// y: the saved output for linear_relu_backward, undefined for linear_backward.
void check_backward_args(const char* op, const at::Tensor& grad_y, const at::Tensor& x,
                         const at::Tensor& weight, const at::Tensor& y);

// The pieces of those checks, for ops with other argument lists (the whole-MLP op names
// its layers weights[i], biases[i]); `name` is the argument as messages name it.
void check_same_device(const char* op, const char* name, const at::Tensor& t,
                       const at::Tensor& x);
void check_same_dtype(const char* op, const char* name, const at::Tensor& t,
                      const at::Tensor& x);
void check_x_rank(const char* op, const at::Tensor& x);      // at least 1-D
void check_x_floating(const char* op, const at::Tensor& x);  // a floating-point dtype
void check_weight_rank(const char* op, const char* name, const at::Tensor& weight);  // 2-D
// x's last dimension is the weight's in_features.
void check_x_matches_weight(const char* op, const char* name, const at::Tensor& x,
                            const at::Tensor& weight);
// bias: (out_features,) with x's dtype and device; `out_features` says what that is.
void check_bias(const char* op, const char* name, const at::Tensor& bias,
                const at::Tensor& weight, const char* out_features, const at::Tensor& x);

// Output shape of the forward ops: x.shape[:-1] + (out_features,).
std::vector<int64_t> output_shape(const at::Tensor& x, const at::Tensor& weight);

// (..., cols) -> (rows, cols); a view whenever the strides allow, works for cols == 0.
at::Tensor as_rows(const at::Tensor& t, int64_t cols);

}  // namespace fusedmlp
