// The fusedmlp ops mapped onto GEMM problems, written once for every backend: argument
// checks, flattening to 2-D, output allocation and the GemmProblem of the forward and of
// each gradient. A backend (cpu/backend_cpu.cpp, cuda/backend_cuda.cpp) supplies only
// its GEMM and its dtype check, then registers the kernels with register_kernels<>().
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/FunctionRef.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "activation_names.h"
#include "gemm_problem.h"

namespace fusedmlp {

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

struct Backend {
  // Throws (naming op and x's dtype) when the backend has no kernels for x's dtype.
  DType (*dtype_of)(const char* op, const at::Tensor& x);
  // Solves `problem` on `like`'s device (scratch memory, if any, allocated like `like`).
  // m == 0 or n == 0: nothing to multiply, but a_row_sums (if set) must still be written.
  void (*gemm)(DType dtype, const GemmProblem& problem, const at::Tensor& like);
  // out[i] = activation_grad (order 1) or activation_grad2 (order 2) of (g[i], s[i]), for
  // `count` contiguous elements (the double backward's elementwise factors).
  void (*activation_grad)(DType dtype, Activation act, double slope, int order, int64_t count,
                          const void* g, const void* s, void* out, const at::Tensor& like);
  // Whether backward computes grad_y * act'(saved) once (activation_grad, into scratch)
  // for the transcendental activations instead of at every load in the GEMMs.
  bool derive_once;
  // The whole-MLP forward's walk over the batch (mlp_ops.cpp): calls run(r0, r1) on row
  // ranges covering [0, rows), each range going through every layer before the next, in
  // any order or in parallel. bytes_per_row: what one row writes over all layers (its
  // outputs and saved pre-activations); macs_per_row: its multiply-adds; weight_bytes: all
  // layers' weights, which every range reads; min_in_features: the smallest layer input.
  // nullptr: one range of all rows, i.e. layer by layer over the whole batch.
  void (*for_row_blocks)(int64_t rows, int64_t bytes_per_row, int64_t macs_per_row,
                         int64_t weight_bytes, int64_t min_in_features,
                         c10::function_ref<void(int64_t, int64_t)> run) = nullptr;
  // Optional: solves backward's two GEMMs, grad_x = g · W and grad_w = gᵀ · x (with grad_b
  // as grad_w's a_row_sums), together where the backend has a kernel that shares their
  // passes over memory (CPU: one sweep over W for a batch of 1 or 2 rows). Returns false,
  // having written nothing, where it has none; backward then calls `gemm` on each.
  bool (*gemm_pair)(DType dtype, const GemmProblem& grad_x, const GemmProblem& grad_w) =
      nullptr;
};

// "relu" -> Activation::relu; nullopt for a name that is none of activation.h's.
std::optional<Activation> find_activation(c10::string_view name);
// The same, an unknown name being an error from `op` listing the valid ones.
Activation parse_activation(const char* op, c10::string_view name);

// y = act(x · Wᵀ + b). With `pre` non-null, also returns z = x · Wᵀ + b in *pre.
at::Tensor forward(const Backend& backend, const char* op, const at::Tensor& x,
                   const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   Activation act, double slope, at::Tensor* pre = nullptr);

// Gradients of y = act(x · Wᵀ + b) from `saved` (y or z as saved_for(act, slope) says;
// undefined for identity): g = grad_y · act'(saved) is never materialised, the GEMMs
// apply the derivative as they load grad_y.
Grads backward(const Backend& backend, const char* op, const at::Tensor& grad_y,
               const at::Tensor& x, const at::Tensor& weight, const at::Tensor& saved,
               Activation act, double slope, std::array<bool, 3> output_mask);

// grad * act'(saved) (order 1) or grad * d act'(saved) / d saved (order 2), elementwise.
at::Tensor activation_grad(const Backend& backend, const char* op, const at::Tensor& grad,
                           const at::Tensor& saved, Activation act, double slope, int64_t order);

// The whole MLP: layer l computes h[l+1] = act[l](h[l] · weights[l]ᵀ + biases[l]), h[0] = x,
// y = h[L]. One activation (and negative_slope) per layer.
struct MlpLayer {
  Activation act;
  double slope;
  Saved saved() const { return saved_for(act, slope); }
};
// y, hidden = h[1..L-1] (each layer's input after the first), pre = the pre-activations z[l]
// of the layers whose activation backward differentiates from z (in layer order).
using MlpOutputs = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;
// grad_x (undefined unless asked), then the asked-for weight and bias gradients, in layer
// order (only those asked for).
using MlpGrads = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;

// The C++ signatures of the forward ops (fusedmlp.cpp's schemas), for callers that go
// through the dispatcher: linear_relu and linear, linear_act, mlp.
using LayerForwardSig = at::Tensor(const at::Tensor&, const at::Tensor&,
                                   const std::optional<at::Tensor>&);
using LayerActForwardSig = at::Tensor(const at::Tensor&, const at::Tensor&,
                                      const std::optional<at::Tensor>&, c10::string_view, double);
using MlpSig = MlpOutputs(const at::Tensor&, at::TensorList,
                          const c10::List<std::optional<at::Tensor>>&,
                          c10::ArrayRef<std::string>, c10::ArrayRef<double>);

// The typed handle of the op `name` ("fusedmlp::linear_relu"), for a static local.
template <class Sig>
c10::TypedOperatorHandle<Sig> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The layers from the ops' per-layer lists of names and slopes; `layer_count` is
// weights.size(). Errors name the op and the list.
std::vector<MlpLayer> parse_mlp_layers(const char* op, size_t layer_count,
                                       c10::ArrayRef<std::string> activations,
                                       c10::ArrayRef<double> negative_slopes);

// What backward of layer l reads: its output (hidden[l], or y for the last layer), its
// pre-activation (from pre) or nothing (undefined), as layers[l].saved() says.
at::Tensor mlp_saved(const std::vector<MlpLayer>& layers, size_t l, const at::Tensor& y,
                     at::TensorList hidden, at::TensorList pre);

// Shapes, dtypes and devices of x, the weights and biases (a chain of matching sizes), with
// messages naming the list entry (weights[2], biases[0], ...). Also runs on fake tensors.
void check_mlp_args(const char* op, const at::Tensor& x, at::TensorList weights,
                    const c10::List<std::optional<at::Tensor>>& biases);

MlpOutputs mlp_forward(const Backend& backend, const char* op, const at::Tensor& x,
                       at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases,
                       const std::vector<MlpLayer>& layers);

// Walks the layers in reverse, each with the per-layer backward (the activation derivative
// applied as grad is loaded). output_mask: [grad_x, grad_weights[0..L-1], grad_biases[0..L-1]].
MlpGrads mlp_backward(const Backend& backend, const char* op, const at::Tensor& grad_y,
                      const at::Tensor& x, at::TensorList weights, const at::Tensor& y,
                      at::TensorList hidden, at::TensorList pre,
                      const std::vector<MlpLayer>& layers, const c10::List<bool>& output_mask);

// The kernels of every op for one backend, registered in its TORCH_LIBRARY_IMPL.
template <const Backend& B>
void register_kernels(torch::Library& m) {
  m.impl("linear_relu", [](const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
    return forward(B, "fusedmlp.linear_relu", x, weight, bias, Activation::relu, 0.0);
  });
  m.impl("linear", [](const at::Tensor& x, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias) {
    return forward(B, "fusedmlp.linear", x, weight, bias, Activation::identity, 0.0);
  });
  m.impl("linear_relu_backward",
         [](const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
            const at::Tensor& y, std::array<bool, 3> output_mask) {
           TORCH_CHECK(y.defined(),
                       "fusedmlp.linear_relu_backward: y (the forward output) is required");
           return backward(B, "fusedmlp.linear_relu_backward", grad_y, x, weight, y,
                           Activation::relu, 0.0, output_mask);
         });
  m.impl("linear_backward", [](const at::Tensor& grad_y, const at::Tensor& x,
                               const at::Tensor& weight, std::array<bool, 3> output_mask) {
    return backward(B, "fusedmlp.linear_backward", grad_y, x, weight, at::Tensor(),
                    Activation::identity, 0.0, output_mask);
  });
  m.impl("linear_act", [](const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, c10::string_view activation,
                          double negative_slope) {
    const char* op = "fusedmlp.linear_act";
    return forward(B, op, x, weight, bias, parse_activation(op, activation), negative_slope);
  });
  m.impl("linear_act_pre", [](const at::Tensor& x, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias,
                              c10::string_view activation, double negative_slope) {
    const char* op = "fusedmlp.linear_act_pre";
    at::Tensor pre;
    at::Tensor y = forward(B, op, x, weight, bias, parse_activation(op, activation),
                           negative_slope, &pre);
    return std::make_tuple(y, pre);
  });
  m.impl("linear_act_backward",
         [](const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
            const std::optional<at::Tensor>& saved, c10::string_view activation,
            double negative_slope, std::array<bool, 3> output_mask) {
           const char* op = "fusedmlp.linear_act_backward";
           return backward(B, op, grad_y, x, weight, saved.value_or(at::Tensor()),
                           parse_activation(op, activation), negative_slope, output_mask);
         });
  m.impl("activation_grad", [](const at::Tensor& grad, const at::Tensor& saved,
                               c10::string_view activation, double negative_slope,
                               int64_t order) {
    const char* op = "fusedmlp.activation_grad";
    return activation_grad(B, op, grad, saved, parse_activation(op, activation),
                           negative_slope, order);
  });
  m.impl("mlp", [](const at::Tensor& x, at::TensorList weights,
                   const c10::List<std::optional<at::Tensor>>& biases,
                   c10::ArrayRef<std::string> activations, c10::ArrayRef<double> negative_slopes) {
    const char* op = "fusedmlp.mlp";
    return mlp_forward(B, op, x, weights, biases,
                       parse_mlp_layers(op, weights.size(), activations, negative_slopes));
  });
  m.impl("mlp_backward",
         [](const at::Tensor& grad_y, const at::Tensor& x, at::TensorList weights,
            const std::optional<at::Tensor>& y, at::TensorList hidden, at::TensorList pre,
            c10::ArrayRef<std::string> activations, c10::ArrayRef<double> negative_slopes,
            const c10::List<bool>& output_mask) {
           const char* op = "fusedmlp.mlp_backward";
           return mlp_backward(B, op, grad_y, x, weights, y.value_or(at::Tensor()), hidden, pre,
                               parse_mlp_layers(op, weights.size(), activations, negative_slopes),
                               output_mask);
         });
}

}  // namespace fusedmlp
