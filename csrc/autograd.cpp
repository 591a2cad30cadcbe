// Autograd for fusedmlp::linear_relu and fusedmlp::linear, registered in C++ (the
// Autograd dispatch key) so a call costs what one eager ATen op costs; autograd
// registered from Python adds ~20 us per call, which loses to eager at the small shapes
// of a classic MLP. The backward is the matching *_backward op: the one backward
// implementation, which the Python autograd.Functions call too.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "checks.h"

namespace fusedmlp {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using ForwardSig = at::Tensor(const at::Tensor&, const at::Tensor&,
                              const std::optional<at::Tensor>&);

c10::TypedOperatorHandle<ForwardSig> forward_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<ForwardSig>();
}

// The two ops differ only in the activation: ReLU saves its output y for the mask.
struct ReLU {
  static constexpr const char* name = "fusedmlp::linear_relu";
  static constexpr const char* message_name = "fusedmlp.linear_relu";
  static Grads backward(const at::Tensor& grad_y, const variable_list& saved,
                        std::array<bool, 3> mask) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedmlp::linear_relu_backward", "")
            .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, std::array<bool, 3>)>();
    return op.call(grad_y, saved[0], saved[1], saved[2], mask);
  }
};

struct Identity {
  static constexpr const char* name = "fusedmlp::linear";
  static constexpr const char* message_name = "fusedmlp.linear";
  static Grads backward(const at::Tensor& grad_y, const variable_list& saved,
                        std::array<bool, 3> mask) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedmlp::linear_backward", "")
            .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         std::array<bool, 3>)>();
    return op.call(grad_y, saved[0], saved[1], mask);
  }
};

template <class Activation>
class LinearNode : public torch::autograd::Function<LinearNode<Activation>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    static const auto op = forward_op(Activation::name);
    at::Tensor y;
    {
      // Function::apply does not step below the Autograd key: do it, or we re-enter here.
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      y = op.call(x, weight, bias);
    }
    // What eager Linear(+ReLU) keeps alive: x, weight (and the output for the ReLU mask).
    if (std::is_same_v<Activation, ReLU>) {
      ctx->save_for_backward({x, weight, y});
    } else {
      ctx->save_for_backward({x, weight});
    }
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    // Autograd edges exist for tensor inputs only: bias is edge 2 only when it was given.
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    auto [grad_x, grad_w, grad_b] =
        Activation::backward(grads[0], ctx->get_saved_variables(), mask);
    return {grad_x, grad_w, grad_b};
  }
};

template <class Activation>
at::Tensor autograd_kernel(const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  // Checked here too so that mixed devices get our message, not "no kernel for CUDA".
  check_forward_args(Activation::message_name, x, weight, bias);
  return LinearNode<Activation>::apply(x, weight, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, Autograd, m) {
  m.impl("linear_relu", &autograd_kernel<ReLU>);
  m.impl("linear", &autograd_kernel<Identity>);
}

}  // namespace fusedmlp
