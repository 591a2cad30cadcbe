// The one schema file: every fusedmlp op is declared here; each backend registers its
// kernels in its own TORCH_LIBRARY_IMPL (cpu/backend_cpu.cpp, cuda/backend_cuda.cpp,
// cuda/autocast.cpp, autograd.cpp).
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
  // y = act(x @ weight.T + bias) for any activation of csrc/activation.h, by name
  // ("identity", "relu", "leaky_relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh",
  // "relu_squared"); negative_slope is leaky_relu's.
  m.def(
      "linear_act(Tensor x, Tensor weight, Tensor? bias=None, str activation=\"identity\", "
      "float negative_slope=0.01) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // The same, also returning the pre-activation z = x @ weight.T + bias (what backward of
  // gelu, gelu_tanh, silu and relu_squared differentiates from): (y, z).
  m.def(
      "linear_act_pre(Tensor x, Tensor weight, Tensor? bias, str activation, "
      "float negative_slope) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Gradients of linear_act from `saved`: the output y (identity: None; relu, sigmoid,
  // tanh, leaky_relu with negative_slope >= 0) or the pre-activation z (the others).
  m.def(
      "linear_act_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor? saved, "
      "str activation, float negative_slope, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Elementwise: grad * act'(saved) (order 1) or grad * d act'(saved) / d saved (order 2),
  // saved as linear_act_backward reads it (the double backward's pieces).
  m.def(
      "activation_grad(Tensor grad, Tensor saved, str activation, float negative_slope, "
      "int order) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // A whole MLP in one call: h[0] = x, h[l+1] = activations[l](h[l] @ weights[l].T +
  // biases[l]) with negative_slopes[l] (leaky_relu's; one entry per layer in every list),
  // y = h[L]. Returns (y, hidden, pre): hidden = h[1..L-1], pre = the pre-activations of
  // the layers whose activation backward differentiates from z (gelu, gelu_tanh, silu,
  // relu_squared, leaky_relu with a negative slope), in layer order: what backward reads.
  m.def(
      "mlp(Tensor x, Tensor[] weights, Tensor?[] biases, str[] activations, "
      "float[] negative_slopes) -> (Tensor, Tensor[], Tensor[])",
      {at::Tag::pt2_compliant_tag});
  // Gradients of mlp from its saved tensors (y: the output, needed when the last
  // activation differentiates from it). output_mask: [grad_x, grad of each weight, grad of
  // each bias]; returns (grad_x or None, the asked-for weight grads, the asked-for bias
  // grads), in layer order.
  m.def(
      "mlp_backward(Tensor grad_y, Tensor x, Tensor[] weights, Tensor? y, Tensor[] hidden, "
      "Tensor[] pre, str[] activations, float[] negative_slopes, bool[] output_mask) "
      "-> (Tensor, Tensor[], Tensor[])",
      {at::Tag::pt2_compliant_tag});
}
