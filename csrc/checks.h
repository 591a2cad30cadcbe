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

// Output shape of the forward ops: x.shape[:-1] + (out_features,).
std::vector<int64_t> output_shape(const at::Tensor& x, const at::Tensor& weight);

// (..., cols) -> (rows, cols); a view whenever the strides allow, works for cols == 0.
at::Tensor as_rows(const at::Tensor& t, int64_t cols);

}  // namespace fusedmlp
