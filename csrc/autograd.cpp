// Autograd for fusedmlp::linear_relu, registered in C++ (the Autograd dispatch key) so a
// call costs what one eager ATen op costs; a Python-registered autograd adds ~20 us per
// call, which loses to eager at the small shapes of a classic MLP. The backward is the
// fusedmlp::linear_relu_backward op: the one backward implementation, which
// fusedmlp.LinearReLUFunction calls too.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "checks.h"

namespace fusedmlp {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_linear_relu(const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedmlp::linear_relu", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&)>();
  return op.call(x, weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_linear_relu_backward(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& y, std::array<bool, 3> output_mask) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedmlp::linear_relu_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              std::array<bool, 3>)>();
  return op.call(grad_y, x, weight, y, output_mask);
}

class LinearReLUNode : public torch::autograd::Function<LinearReLUNode> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    at::Tensor y;
    {
      // Function::apply does not step below the Autograd key: do it, or we re-enter here.
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      y = call_linear_relu(x, weight, bias);
    }
    // Exactly what eager Linear+ReLU keeps alive: x, weight and the output.
    ctx->save_for_backward({x, weight, y});
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // Autograd edges exist for tensor inputs only: bias is edge 2 only when it was given.
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    auto [grad_x, grad_w, grad_b] =
        call_linear_relu_backward(grads[0], saved[0], saved[1], saved[2], mask);
    return {grad_x, grad_w, grad_b};
  }
};

at::Tensor linear_relu_autograd(const at::Tensor& x, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias) {
  // Checked here too so that mixed devices get our message, not "no kernel for CUDA".
  check_linear_relu_args(x, weight, bias);
  return LinearReLUNode::apply(x, weight, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, Autograd, m) { m.impl("linear_relu", &linear_relu_autograd); }

}  // namespace fusedmlp
