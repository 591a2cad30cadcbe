// Autograd for fusedmlp::linear_relu and fusedmlp::linear, registered in C++ (the
// Autograd dispatch key) so a call costs what one eager ATen op costs; autograd
// registered from Python adds ~20 us per call, which loses to eager at the small shapes
// of a classic MLP. The backward is the matching *_backward op: the one backward
// implementation, which the Python autograd.Functions call too.
//
// The backward ops are differentiable as well (double backward, e.g. gradient penalties):
// their first-order values still come from our kernels; only their own derivatives, the
// second-order path, use composite ATen ops.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/add.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/threshold_backward.h>
#include <c10/core/GradMode.h>
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
// `backward` calls the *_backward op; `y` is undefined for Identity.
struct ReLU {
  static constexpr const char* name = "fusedmlp::linear_relu";
  static constexpr const char* message_name = "fusedmlp.linear_relu";
  static Grads backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                        const at::Tensor& y, std::array<bool, 3> mask) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedmlp::linear_relu_backward", "")
            .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, std::array<bool, 3>)>();
    return op.call(grad_y, x, weight, y, mask);
  }
};

struct Identity {
  static constexpr const char* name = "fusedmlp::linear";
  static constexpr const char* message_name = "fusedmlp.linear";
  static Grads backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                        const at::Tensor& /*y*/, std::array<bool, 3> mask) {
    static const auto op =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("fusedmlp::linear_backward", "")
            .typed<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         std::array<bool, 3>)>();
    return op.call(grad_y, x, weight, mask);
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
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor y = std::is_same_v<Activation, ReLU> ? saved[2] : at::Tensor();
    auto [grad_x, grad_w, grad_b] = Activation::backward(grads[0], saved[0], saved[1], y, mask);
    return {grad_x, grad_w, grad_b};
  }
};

// Derivatives of (grad_x, grad_w, grad_b) = backward(grad_y, x, weight, y), given the
// gradients gg* flowing into them (undefined: not used). With g = mask(grad_y):
//   grad_x = g W, grad_w = g^T x, grad_b = sum_rows g, so
//   d grad_y = mask(gg_x W^T + x gg_w^T + gg_b), d x = g gg_w, d W = g^T gg_x.
// y enters only through the ReLU mask, which is locally constant: its derivative is 0.
variable_list backward_of_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                   const at::Tensor& weight, const at::Tensor& y,
                                   const variable_list& gg, std::array<bool, 3> needs) {
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor g_in = as_rows(grad_y, out_features);
  const at::Tensor x2 = as_rows(x, in_features);
  const at::Tensor y2 = y.defined() ? as_rows(y, out_features) : at::Tensor();
  const auto mask = [&](const at::Tensor& t) {
    return y2.defined() ? at::threshold_backward(t, y2, 0) : t;
  };
  const at::Tensor& gg_x = gg[0];
  const at::Tensor& gg_w = gg[1];
  const at::Tensor& gg_b = gg[2];
  at::Tensor d_grad_y, d_x, d_w;
  if (needs[0] && (gg_x.defined() || gg_w.defined() || gg_b.defined())) {
    at::Tensor sum = at::zeros_like(g_in);
    if (gg_x.defined()) sum = at::add(sum, at::mm(as_rows(gg_x, in_features), weight.t()));
    if (gg_w.defined()) sum = at::add(sum, at::mm(x2, gg_w.t()));
    if (gg_b.defined()) sum = at::add(sum, gg_b);
    d_grad_y = mask(sum).reshape(grad_y.sizes());
  }
  const at::Tensor g = (needs[1] && gg_w.defined()) || (needs[2] && gg_x.defined())
                           ? mask(g_in)
                           : at::Tensor();
  if (needs[1] && gg_w.defined()) d_x = at::mm(g, gg_w).reshape(x.sizes());
  if (needs[2] && gg_x.defined()) d_w = at::mm(g.t(), as_rows(gg_x, in_features));
  return {d_grad_y, d_x, d_w};
}

// Autograd for the backward ops: first-order values from our kernels, their own
// derivatives from backward_of_backward.
template <class Activation>
class LinearBackwardNode : public torch::autograd::Function<LinearBackwardNode<Activation>> {
 public:
  // y: the ReLU output, nullopt for Identity (an undefined Tensor is no autograd input).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_y,
                               const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& y,
                               std::array<bool, 3> output_mask) {
    const at::Tensor y_or_undefined = y.value_or(at::Tensor());
    Grads grads;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      grads = Activation::backward(grad_y, x, weight, y_or_undefined, output_mask);
    }
    ctx->save_for_backward({grad_y, x, weight, y_or_undefined});
    // A Function cannot return undefined tensors: return the computed grads only.
    variable_list computed;
    for (const at::Tensor& t : {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads)})
      if (t.defined()) computed.push_back(t);
    ctx->saved_data["output_mask"] = c10::List<bool>({output_mask[0], output_mask[1], output_mask[2]});
    return computed;
  }

  // The gradients flowing into (grad_x, grad_w, grad_b), undefined where not computed.
  static variable_list expand(AutogradContext* ctx, const variable_list& gg_computed) {
    const c10::List<bool> computed = ctx->saved_data["output_mask"].toBoolList();
    variable_list gg(3);
    size_t next = 0;
    for (size_t i = 0; i < 3; ++i)
      if (computed[i]) gg[i] = gg_computed[next++];
    return gg;
  }

  static variable_list backward(AutogradContext* ctx, variable_list gg_computed) {
    const variable_list gg = expand(ctx, gg_computed);
    const variable_list saved = ctx->get_saved_variables();
    const std::array<bool, 3> needs = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                       ctx->needs_input_grad(2)};
    variable_list d = backward_of_backward(saved[0], saved[1], saved[2], saved[3], gg, needs);
    d.resize(5);  // y (locally constant mask) and output_mask get no gradient
    return d;
  }
};

// The computed grads back into their (grad_x, grad_w, grad_b) slots.
Grads to_grads(const variable_list& computed, std::array<bool, 3> output_mask) {
  at::Tensor slots[3];
  size_t next = 0;
  for (size_t i = 0; i < 3; ++i)
    if (output_mask[i]) slots[i] = computed[next++];
  return {slots[0], slots[1], slots[2]};
}

bool any_requires_grad(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

Grads linear_relu_backward_autograd(const at::Tensor& grad_y, const at::Tensor& x,
                                    const at::Tensor& weight, const at::Tensor& y,
                                    std::array<bool, 3> output_mask) {
  if (!c10::GradMode::is_enabled() || !any_requires_grad({&grad_y, &x, &weight})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain first-order backward
    return ReLU::backward(grad_y, x, weight, y, output_mask);
  }
  return to_grads(LinearBackwardNode<ReLU>::apply(grad_y, x, weight,
                                                  std::optional<at::Tensor>(y), output_mask),
                  output_mask);
}

Grads linear_backward_autograd(const at::Tensor& grad_y, const at::Tensor& x,
                               const at::Tensor& weight, std::array<bool, 3> output_mask) {
  if (!c10::GradMode::is_enabled() || !any_requires_grad({&grad_y, &x, &weight})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return Identity::backward(grad_y, x, weight, at::Tensor(), output_mask);
  }
  return to_grads(
      LinearBackwardNode<Identity>::apply(grad_y, x, weight, std::nullopt, output_mask),
      output_mask);
}

template <class Activation>
at::Tensor autograd_kernel(const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  // Checked here too so that mixed devices get our message, not "no kernel for CUDA".
  check_forward_args(Activation::message_name, x, weight, bias);
  const at::Tensor& b = bias.has_value() ? *bias : x;  // x stands in for a missing bias
  if (!c10::GradMode::is_enabled() || !any_requires_grad({&x, &weight, &b})) {
    // Nothing to record (inference, no_grad, frozen layer): skip building a graph node.
    static const auto op = forward_op(Activation::name);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(x, weight, bias);
  }
  return LinearNode<Activation>::apply(x, weight, bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, Autograd, m) {
  m.impl("linear_relu", &autograd_kernel<ReLU>);
  m.impl("linear", &autograd_kernel<Identity>);
  m.impl("linear_relu_backward", &linear_relu_backward_autograd);
  m.impl("linear_backward", &linear_backward_autograd);
}

}  // namespace fusedmlp
