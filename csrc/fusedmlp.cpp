// The one schema file: every fusedmlp op is declared here; each backend registers its
// kernels in its own TORCH_LIBRARY_IMPL (cpu/linear_relu_cpu.cpp, cuda/..., autograd.cpp).
// The Python module fusedmlp._C itself is python_module.cpp.
#include <torch/library.h>

TORCH_LIBRARY(fusedmlp, m) {
  // y = relu(x @ weight.T + bias); x: (..., in_features), weight: (out_features, in_features),
  // bias: (out_features,) or None. Same conventions as F.linear.
  m.def("linear_relu(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Gradients of linear_relu from its saved output y (y's sign is the ReLU mask).
  // output_mask = which of (grad_x, grad_weight, grad_bias) to compute; the others are None.
  m.def(
      "linear_relu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor y, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // The same without activation: y = x @ weight.T + bias (the last layer of an MLP).
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def(
      "linear_backward(Tensor grad_y, Tensor x, Tensor weight, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}
