// Autograd for the fusedmlp ops (linear_relu, linear, linear_act), registered in C++ (the
// Autograd dispatch key) so a call costs what one eager ATen op costs; autograd
// registered from Python adds ~20 us per call, which loses to eager at the small shapes
// of a classic MLP. The backward is the matching *_backward op: the one backward
// implementation, which the Python autograd.Functions call too. A layer's node and the
// whole-MLP op's are plain autograd Nodes like ATen's (LayerBackward, MlpBackward); the
// backward ops' own node (double backward only) is a torch::autograd::Function.
//
// What is saved besides x and weight is one tensor, as eager keeps: the output y
// (relu, leaky_relu, sigmoid, tanh) or the pre-activation z (gelu, gelu_tanh, silu,
// relu_squared), which linear_act_pre returns as a second output of the forward node.
//
// The backward ops are differentiable as well (double backward: gradient penalties,
// physics-informed losses). Their derivatives are computed with the same ops: the GEMM
// terms by our forward and backward kernels, the elementwise activation factors by
// activation_grad; only additions and products of whole tensors use ATen.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/add.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/zeros_like.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>

#include "checks.h"
#include "linear_ops.h"

namespace fusedmlp {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;

const at::Tensor kNoTensor;  // an undefined tensor: the edge of a missing bias

// Which schema a layer was called through: the ReLU and identity ops keep their own
// schemas (and graphs under torch.compile); every other activation is linear_act.
enum class Schema : int64_t { linear_relu, linear, linear_act };

struct Call {
  Schema schema;
  Activation act;
  double slope;

  Saved saved() const { return saved_for(act, slope); }
  const char* name() const { return activation_name(act); }
  static Call for_act(Activation act, double slope) {
    return {Schema::linear_act, act, slope};
  }
};

// The call in two saved_data entries (each entry is a hash-map insert on every call):
// "call" = schema | activation << 8, and "slope".
void put(AutogradContext* ctx, const Call& call) {
  ctx->saved_data["call"] = static_cast<int64_t>(call.schema) |
                            static_cast<int64_t>(call.act) << 8;
  ctx->saved_data["slope"] = call.slope;
}
Call get(AutogradContext* ctx) {
  const int64_t packed = ctx->saved_data["call"].toInt();
  return {static_cast<Schema>(packed & 0xff), static_cast<Activation>(packed >> 8 & 0xff),
          ctx->saved_data["slope"].toDouble()};
}

// The ops, through the dispatcher (below Autograd when the caller says so).
at::Tensor call_forward(const Call& call, const at::Tensor& x, const at::Tensor& weight,
                        const OptTensor& bias) {
  static const auto relu = find_op<LayerForwardSig>("fusedmlp::linear_relu");
  static const auto linear = find_op<LayerForwardSig>("fusedmlp::linear");
  static const auto act = find_op<LayerActForwardSig>("fusedmlp::linear_act");
  switch (call.schema) {
    case Schema::linear_relu: return relu.call(x, weight, bias);
    case Schema::linear: return linear.call(x, weight, bias);
    case Schema::linear_act: break;
  }
  return act.call(x, weight, bias, call.name(), call.slope);
}

std::tuple<at::Tensor, at::Tensor> call_forward_pre(const Call& call, const at::Tensor& x,
                                                    const at::Tensor& weight,
                                                    const OptTensor& bias) {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                 const OptTensor&, c10::string_view, double)>(
          "fusedmlp::linear_act_pre");
  return op.call(x, weight, bias, call.name(), call.slope);
}

Grads call_backward(const Call& call, const at::Tensor& grad_y, const at::Tensor& x,
                    const at::Tensor& weight, const at::Tensor& saved,
                    std::array<bool, 3> mask) {
  static const auto relu =
      find_op<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    std::array<bool, 3>)>("fusedmlp::linear_relu_backward");
  static const auto linear =
      find_op<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    std::array<bool, 3>)>("fusedmlp::linear_backward");
  static const auto act =
      find_op<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                    c10::string_view, double, std::array<bool, 3>)>(
          "fusedmlp::linear_act_backward");
  switch (call.schema) {
    case Schema::linear_relu: return relu.call(grad_y, x, weight, saved, mask);
    case Schema::linear: return linear.call(grad_y, x, weight, mask);
    case Schema::linear_act: break;
  }
  return act.call(grad_y, x, weight, saved.defined() ? OptTensor(saved) : std::nullopt,
                  call.name(), call.slope, mask);
}

at::Tensor activation_grad(const at::Tensor& grad, const at::Tensor& saved, const Call& call,
                           int64_t order) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, c10::string_view, double,
                         int64_t)>("fusedmlp::activation_grad");
  return op.call(grad, saved, call.name(), call.slope, order);
}

// Gradients of one layer y = act(z), z = x · Wᵀ + b, from the gradients reaching y and z
// (either may be undefined), through the backward ops: differentiable when grad mode is on.
Grads layer_backward(const Call& call, const at::Tensor& grad_y, const at::Tensor& grad_z,
                     const at::Tensor& x, const at::Tensor& weight, const at::Tensor& s,
                     std::array<bool, 3> mask) {
  if (grad_z.defined()) {
    // z itself received a gradient: dL/dz = grad_y * act'(z) + grad_z, then Linear's.
    at::Tensor g = grad_z;
    if (grad_y.defined()) g = at::add(activation_grad(grad_y, s, call, 1), grad_z);
    return call_backward(Call::for_act(Activation::identity, 0.0), g, x, weight, at::Tensor(),
                         mask);
  }
  if (grad_y.defined()) return call_backward(call, grad_y, x, weight, s, mask);
  return {};
}

// The graph's node pointer: std::shared_ptr<Node> up to torch 2.11 (the GPU machine's),
// c10::intrusive_ptr<Node> in later releases. Everything below that depends on which is
// a template on it, so only the branch for the torch we build against is compiled.
using NodePtr = decltype(torch::autograd::Edge::function);
constexpr bool kSharedPtrNodes =
    std::is_same_v<NodePtr, std::shared_ptr<torch::autograd::Node>>;

template <class N>
auto make_node() {
  if constexpr (kSharedPtrNodes) {
    // deleteNode frees a long chain of nodes without recursing (found by ADL on N).
    return std::shared_ptr<N>(new N(), [](N* node) { deleteNode(node); });
  } else {
    return c10::make_intrusive<N>();
  }
}

// An owning pointer to `node` (SavedVariable::unpack of a saved output asks for it).
template <class P = NodePtr, class N>
P self_ptr(N* node) {
  if constexpr (kSharedPtrNodes) {
    return node->shared_from_this();
  } else {
    return P::unsafe_reclaim_from_nonowning(node);
  }
}

// The autograd node of one layer (linear_relu, linear, linear_act), built the way ATen's
// generated nodes are rather than through torch::autograd::Function: that one keeps its
// state in a string-keyed map and packs inputs and outputs into vectors on every call,
// ~1.7 us per layer of forward + backward that a batch of 1 notices (benchmarks/NOTES.md).
//
// Saved: x, weight and one tensor, as eager keeps: the output y (relu, leaky_relu,
// sigmoid, tanh) or the pre-activation z (gelu, gelu_tanh, silu, relu_squared). z is then
// a second output of the node, so that a gradient reaching it (double backward of gelu,
// silu, ...) flows on into x, weight and bias. Edges: x, weight, bias (an invalid edge
// when there is none).
struct LayerBackward : public torch::autograd::TraceableFunction {
  Call call{Schema::linear, Activation::identity, 0.0};
  torch::autograd::SavedVariable x_, weight_, saved_;

  std::string name() const override { return "fusedmlp::LayerBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x_.reset_data();
    weight_.reset_data();
    saved_.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const at::Tensor x = x_.unpack(), weight = weight_.unpack();
    const at::Tensor s = saved_.unpack(self_ptr(this));
    const std::array<bool, 3> mask = {task_should_compute_output(0),
                                      task_should_compute_output(1),
                                      task_should_compute_output(2)};
    // An output that received no gradient arrives undefined (never as zeros), so an unused
    // z leaves the first-order backward the fused one.
    const at::Tensor grad_z = grads.size() > 1 ? grads[1] : at::Tensor();
    // A plain backward goes straight to the kernels (the backward ops' Autograd kernels
    // would find nothing to record); with create_graph they record their nodes.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!c10::GradMode::is_enabled()) below_autograd.emplace();
    const auto [grad_x, grad_w, grad_b] =
        layer_backward(call, grads[0], grad_z, x, weight, s, mask);
    return {grad_x, grad_w, grad_b};
  }

  // Compiled autograd: what identifies this node's computation, and the saved tensors it
  // swaps for its own while it traces apply().
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(x_, false);
    args.collect(weight_, false);
    args.collect(saved_, true);
    args.collect(static_cast<int64_t>(call.schema));
    args.collect(static_cast<int64_t>(call.act));
    args.collect(call.slope);
  }

  variable_list apply_with_saved(const variable_list& inputs,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    saved.before(x_);
    saved.before(weight_);
    saved.before(saved_);
    variable_list result = apply(variable_list(inputs));
    saved.after(x_);
    saved.after(weight_);
    saved.after(saved_);
    return result;
  }
};

// Derivatives of (grad_x, grad_w, grad_b) = backward(grad_y, x, weight, s), given the
// gradients gg* flowing into them (undefined: not used). With g = grad_y * act'(s):
//   grad_x = g W, grad_w = g^T x, grad_b = sum_rows g, so with
//   u = gg_x W^T + x gg_w^T + gg_b:
//   d grad_y = u * act'(s), d x = g gg_w, d W = g^T gg_x, d s = grad_y * u * act''(s).
// Every product of matrices is one of our ops: u = linear(gg_x, W, gg_b) + linear(x, gg_w);
// g gg_w and g^T gg_x are the backward op's grad_x and grad_w with gg_w as the weight
// and gg_x as the input.
variable_list backward_of_backward(const Call& call, const at::Tensor& grad_y,
                                   const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor& s, const variable_list& gg,
                                   std::array<bool, 4> needs) {
  const at::Tensor& gg_x = gg[0];
  const at::Tensor& gg_w = gg[1];
  const at::Tensor& gg_b = gg[2];
  const Call identity = Call::for_act(Activation::identity, 0.0);
  const bool curved = needs[3] && s.defined() && !piecewise_linear(call.act);
  at::Tensor u;  // gg_x W^T + x gg_w^T + gg_b, shaped like grad_y
  if ((needs[0] || curved) && (gg_x.defined() || gg_w.defined() || gg_b.defined())) {
    if (gg_x.defined()) u = call_forward(identity, gg_x, weight, gg_b);
    if (gg_w.defined()) {
      const at::Tensor t = call_forward(identity, x, gg_w, u.defined() ? OptTensor() : gg_b);
      u = u.defined() ? at::add(u, t) : t;
    }
    if (!u.defined()) u = at::add(at::zeros_like(grad_y), gg_b);
  }
  at::Tensor d_grad_y, d_x, d_w, d_s;
  if (needs[0] && u.defined()) d_grad_y = s.defined() ? activation_grad(u, s, call, 1) : u;
  if (needs[1] && gg_w.defined())
    d_x = std::get<0>(call_backward(call, grad_y, x, gg_w, s, {true, false, false}));
  if (needs[2] && gg_x.defined())
    d_w = std::get<1>(call_backward(call, grad_y, gg_x, weight, s, {false, true, false}));
  if (curved && u.defined()) d_s = activation_grad(at::mul(grad_y, u), s, call, 2);
  return {d_grad_y, d_x, d_w, d_s};
}

// Autograd for the backward ops: first-order values from our kernels, their own
// derivatives from backward_of_backward.
class LinearBackwardNode : public torch::autograd::Function<LinearBackwardNode> {
 public:
  // saved: y or z as call.saved() says, nullopt for identity (an undefined Tensor is no
  // autograd input).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_y,
                               const at::Tensor& x, const at::Tensor& weight,
                               const OptTensor& saved, Call call,
                               std::array<bool, 3> output_mask) {
    const at::Tensor s = saved.value_or(at::Tensor());
    Grads grads;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      grads = call_backward(call, grad_y, x, weight, s, output_mask);
    }
    ctx->save_for_backward({grad_y, x, weight, s});
    put(ctx, call);
    // A Function cannot return undefined tensors: return the computed grads only.
    variable_list computed;
    for (const at::Tensor& t : {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads)})
      if (t.defined()) computed.push_back(t);
    ctx->saved_data["output_mask"] =
        c10::List<bool>({output_mask[0], output_mask[1], output_mask[2]});
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
    // Edges exist for defined tensor inputs only: the saved tensor is edge 3 when given.
    const std::array<bool, 4> needs = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                       ctx->needs_input_grad(2),
                                       saved[3].defined() && ctx->needs_input_grad(3)};
    variable_list d =
        backward_of_backward(get(ctx), saved[0], saved[1], saved[2], saved[3], gg, needs);
    d.resize(6);  // call and output_mask get no gradient
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

Grads backward_autograd(const Call& call, const at::Tensor& grad_y, const at::Tensor& x,
                        const at::Tensor& weight, const at::Tensor& saved,
                        std::array<bool, 3> output_mask) {
  if (!c10::GradMode::is_enabled() || !any_requires_grad({&grad_y, &x, &weight, &saved})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // plain first-order backward
    return call_backward(call, grad_y, x, weight, saved, output_mask);
  }
  return to_grads(LinearBackwardNode::apply(grad_y, x, weight,
                                            saved.defined() ? OptTensor(saved) : std::nullopt,
                                            call, output_mask),
                  output_mask);
}

at::Tensor forward_autograd(const char* op, const Call& call, const at::Tensor& x,
                            const at::Tensor& weight, const OptTensor& bias) {
  // Checked here too so that mixed devices get our message, not "no kernel for CUDA".
  check_forward_args(op, x, weight, bias);
  const at::Tensor& b = bias.has_value() ? *bias : x;  // x stands in for a missing bias
  if (!c10::GradMode::is_enabled() || !any_requires_grad({&x, &weight, &b})) {
    // Nothing to record (inference, no_grad, frozen layer): skip building a graph node.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_forward(call, x, weight, bias);
  }
  const at::Tensor& given_bias = bias.has_value() ? *bias : kNoTensor;
  auto node = make_node<LayerBackward>();
  node->call = call;
  node->set_next_edges(torch::autograd::collect_next_edges(x, weight, given_bias));
  at::Tensor y, pre;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // the CPU/CUDA kernel itself
    if (call.saved() == Saved::pre_activation) {
      std::tie(y, pre) = call_forward_pre(call, x, weight, bias);
    } else {
      y = call_forward(call, x, weight, bias);
    }
  }
  torch::autograd::set_history(y, node);
  if (pre.defined()) torch::autograd::set_history(pre, node);
  node->x_ = torch::autograd::SavedVariable(x, false);
  node->weight_ = torch::autograd::SavedVariable(weight, false);
  if (call.saved() != Saved::none)
    node->saved_ = torch::autograd::SavedVariable(pre.defined() ? pre : y, /*is_output=*/true);
  return y;
}

// The whole MLP as one autograd node (fusedmlp::mlp): one forward call for every layer,
// and one backward call (mlp_backward) that walks the layers in reverse. A plain Node, as
// LayerBackward.
//
// Saved, as per-layer autograd would keep them: x, the weights, each hidden output (the
// next layer's input, and the saved output of an activation that differentiates from y),
// the pre-activations that gelu, silu, ... differentiate from, and y when the last
// activation differentiates from it. The hidden outputs and pre-activations are outputs of
// the node too (after y, in that order), so that gradients reaching them in a double
// backward flow on into x, the weights and biases. Edges: x, each weight, each bias (an
// invalid edge where a layer has none).
//
// Double backward: mlp_backward is not differentiable itself. When the backward runs with
// create_graph=True (or a gradient reaches a hidden output or pre-activation, which only
// a double backward does), it is the per-layer composition instead: each layer through
// layer_backward, i.e. the differentiable backward ops.
using MlpBackwardSig = MlpGrads(const at::Tensor&, const at::Tensor&, at::TensorList,
                                const OptTensor&, at::TensorList, at::TensorList,
                                c10::ArrayRef<std::string>, c10::ArrayRef<double>,
                                const c10::List<bool>&);

struct MlpBackward : public torch::autograd::TraceableFunction {
  std::vector<MlpLayer> layers;
  std::vector<std::string> activations;  // the names the ops' schemas take
  std::vector<double> slopes;
  torch::autograd::SavedVariable x_, y_;  // y_: only when the last activation reads y
  std::vector<torch::autograd::SavedVariable> weights_, hidden_, pre_;

  std::string name() const override { return "fusedmlp::MlpBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x_.reset_data();
    y_.reset_data();
    for (auto* list : {&weights_, &hidden_, &pre_})
      for (torch::autograd::SavedVariable& v : *list) v.reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t count = layers.size();
    const auto self = self_ptr(this);
    const at::Tensor x = x_.unpack();
    const at::Tensor y = y_.unpack(self);
    std::vector<at::Tensor> weights, hidden, pre;
    for (const auto& v : weights_) weights.push_back(v.unpack());
    for (const auto& v : hidden_) hidden.push_back(v.unpack(self));
    for (const auto& v : pre_) pre.push_back(v.unpack(self));

    c10::List<bool> mask;  // grad_x, each weight's, each bias's (edges in that order)
    for (size_t i = 0; i < 1 + 2 * count; ++i) mask.push_back(task_should_compute_output(i));
    variable_list result(1 + 2 * count);

    bool only_grad_y = true;
    for (size_t i = 1; i < grads.size(); ++i) only_grad_y = only_grad_y && !grads[i].defined();
    if (only_grad_y && !c10::GradMode::is_enabled()) {
      if (!grads[0].defined()) return result;
      static const auto op = find_op<MlpBackwardSig>("fusedmlp::mlp_backward");
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      const auto [grad_x, grad_w, grad_b] =
          op.call(grads[0], x, weights, y.defined() ? OptTensor(y) : std::nullopt, hidden, pre,
                  activations, slopes, mask);
      result[0] = grad_x;
      for (size_t l = 0, w = 0, b = 0; l < count; ++l) {
        if (mask[1 + l]) result[1 + l] = grad_w[w++];
        if (mask[1 + count + l]) result[1 + count + l] = grad_b[b++];
      }
      return result;
    }

    // The per-layer composition (double backward), walking down from y.
    std::vector<at::Tensor> grad_pre(count);
    for (size_t l = 0, p = 0; l < count; ++l)
      if (layers[l].saved() == Saved::pre_activation) grad_pre[l] = grads[count + p++];
    at::Tensor grad = grads[0];
    for (size_t l = count; l-- > 0;) {
      const at::Tensor s = mlp_saved(layers, l, y, hidden, pre);
      const std::array<bool, 3> layer_mask = {l > 0 || mask[0], mask[1 + l],
                                              mask[1 + count + l]};
      const auto [grad_in, grad_w, grad_b] =
          layer_backward(Call::for_act(layers[l].act, layers[l].slope), grad, grad_pre[l],
                         l == 0 ? x : hidden[l - 1], weights[l], s, layer_mask);
      result[1 + l] = grad_w;
      result[1 + count + l] = grad_b;
      if (l == 0) {
        result[0] = grad_in;
      } else {
        // hidden[l - 1] is also an output of this node: its own gradient adds in.
        const at::Tensor& grad_hidden = grads[l];
        grad = !grad_hidden.defined() ? grad_in
               : !grad_in.defined()   ? grad_hidden
                                      : at::add(grad_in, grad_hidden);
      }
    }
    return result;
  }

  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(x_, false);
    args.collect(y_, true);
    args.collect(weights_, false);
    args.collect(hidden_, true);
    args.collect(pre_, true);
    args.collect(activations);
    args.collect(slopes);
  }

  variable_list apply_with_saved(const variable_list& inputs,
                                 torch::dynamo::autograd::SwapSavedVariables& saved) override {
    saved.before(x_);
    saved.before(y_);
    saved.before(weights_);
    saved.before(hidden_);
    saved.before(pre_);
    variable_list result = apply(variable_list(inputs));
    saved.after(x_);
    saved.after(y_);
    saved.after(weights_);
    saved.after(hidden_);
    saved.after(pre_);
    return result;
  }
};

MlpOutputs mlp_autograd(const at::Tensor& x, at::TensorList weights,
                        const c10::List<std::optional<at::Tensor>>& biases,
                        c10::ArrayRef<std::string> activations,
                        c10::ArrayRef<double> negative_slopes) {
  const char* op = "fusedmlp.mlp";
  check_mlp_args(op, x, weights, biases);
  std::vector<MlpLayer> layers = parse_mlp_layers(op, weights.size(), activations, negative_slopes);
  std::vector<at::Tensor> bias_edges;  // every layer's bias, undefined where it has none
  bool any = x.requires_grad();
  for (const at::Tensor& w : weights) any = any || w.requires_grad();
  for (size_t l = 0; l < weights.size(); ++l) {
    const std::optional<at::Tensor> b = biases.get(l);
    bias_edges.push_back(b.has_value() ? *b : at::Tensor());
    any = any || (bias_edges.back().defined() && bias_edges.back().requires_grad());
  }
  static const auto mlp_op = find_op<MlpSig>("fusedmlp::mlp");
  if (!c10::GradMode::is_enabled() || !any) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return mlp_op.call(x, weights, biases, activations, negative_slopes);
  }
  auto node = make_node<MlpBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, weights, bias_edges));
  MlpOutputs out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = mlp_op.call(x, weights, biases, activations, negative_slopes);
  }
  auto& [y, hidden, pre] = out;
  torch::autograd::set_history(y, node);  // outputs: y, hidden..., pre...
  for (const at::Tensor& t : hidden) torch::autograd::set_history(t, node);
  for (const at::Tensor& t : pre) torch::autograd::set_history(t, node);
  node->x_ = torch::autograd::SavedVariable(x, false);
  for (const at::Tensor& w : weights) node->weights_.emplace_back(w, false);
  for (const at::Tensor& t : hidden) node->hidden_.emplace_back(t, true);
  for (const at::Tensor& t : pre) node->pre_.emplace_back(t, true);
  if (layers.back().saved() == Saved::output)
    node->y_ = torch::autograd::SavedVariable(y, true);
  node->activations = activations.vec();
  node->slopes = negative_slopes.vec();
  node->layers = std::move(layers);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, Autograd, m) {
  m.impl("linear_relu", [](const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias) {
    return forward_autograd("fusedmlp.linear_relu", {Schema::linear_relu, Activation::relu, 0.0},
                            x, weight, bias);
  });
  m.impl("linear", [](const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias) {
    return forward_autograd("fusedmlp.linear", {Schema::linear, Activation::identity, 0.0}, x,
                            weight, bias);
  });
  m.impl("linear_act", [](const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                          c10::string_view activation, double negative_slope) {
    const char* op = "fusedmlp.linear_act";
    return forward_autograd(
        op, Call::for_act(parse_activation(op, activation), negative_slope), x, weight, bias);
  });
  m.impl("linear_relu_backward",
         [](const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
            const at::Tensor& y, std::array<bool, 3> output_mask) {
           return backward_autograd({Schema::linear_relu, Activation::relu, 0.0}, grad_y, x,
                                    weight, y, output_mask);
         });
  m.impl("linear_backward", [](const at::Tensor& grad_y, const at::Tensor& x,
                               const at::Tensor& weight, std::array<bool, 3> output_mask) {
    return backward_autograd({Schema::linear, Activation::identity, 0.0}, grad_y, x, weight,
                             at::Tensor(), output_mask);
  });
  m.impl("linear_act_backward",
         [](const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
            const OptTensor& saved, c10::string_view activation, double negative_slope,
            std::array<bool, 3> output_mask) {
           const char* op = "fusedmlp.linear_act_backward";
           return backward_autograd(
               Call::for_act(parse_activation(op, activation), negative_slope), grad_y, x,
               weight, saved.value_or(at::Tensor()), output_mask);
         });
  m.impl("mlp", &mlp_autograd);
}

}  // namespace fusedmlp
