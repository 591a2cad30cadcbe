// Argument checks shared by every backend and the autograd kernel, so a bad call gets
// the same clear message (naming the argument and what was expected) wherever it lands.
// Sizes are compared as SymInts: the checks also run on fake tensors under torch.compile.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace fusedmlp {

void check_linear_relu_args(const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias);

void check_linear_relu_backward_args(const at::Tensor& grad_y, const at::Tensor& x,
                                     const at::Tensor& weight, const at::Tensor& y);

// Output shape of linear_relu: x.shape[:-1] + (out_features,).
std::vector<int64_t> linear_relu_output_shape(const at::Tensor& x, const at::Tensor& weight);

}  // namespace fusedmlp
