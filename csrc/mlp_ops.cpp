// The whole-MLP ops (mlp, mlp_backward) mapped onto GEMM problems, for every backend.
// Forward: the backend's for_row_blocks hands out row ranges, and each range runs through
// every layer before the next one starts, so on the CPU a block's hidden activations are
// still in cache when the next layer reads them; the weights are shared by all blocks.
// Backward: the layers in reverse, each with the per-layer backward of linear_ops.cpp
// (grad_w sums over the whole batch, so it is not split into row blocks).
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>

#include "checks.h"
#include "linear_ops.h"

namespace fusedmlp {
namespace {

// A row range of a 2-D operand (rows outer).
Operand rows_from(const at::Tensor& t2d, int64_t r0) {
  const auto* base = static_cast<const char*>(t2d.const_data_ptr());
  return {base + r0 * t2d.stride(0) * t2d.element_size(), t2d.stride(0), t2d.stride(1)};
}

void* row_ptr(at::Tensor& t2d, int64_t r0) {
  return static_cast<char*>(t2d.mutable_data_ptr()) + r0 * t2d.stride(0) * t2d.element_size();
}

// prefix + l + "]" into buf, without printf's format parsing.
template <size_t N>
void indexed_name(char (&buf)[N], const char* prefix, size_t l) {
  const size_t len = std::strlen(prefix);
  std::memcpy(buf, prefix, len);
  char* end = std::to_chars(buf + len, buf + N - 2, l).ptr;
  end[0] = ']';
  end[1] = '\0';
}

}  // namespace

at::Tensor mlp_saved(const std::vector<MlpLayer>& layers, size_t l, const at::Tensor& y,
                     at::TensorList hidden, at::TensorList pre) {
  switch (layers[l].saved()) {
    case Saved::none: return at::Tensor();
    case Saved::output: return l + 1 == layers.size() ? y : hidden[l];
    case Saved::pre_activation: break;
  }
  size_t p = 0;  // pre holds the pre-activations of the layers that save one, in order
  for (size_t i = 0; i < l; ++i) p += layers[i].saved() == Saved::pre_activation;
  return pre[p];
}

std::vector<MlpLayer> parse_mlp_layers(const char* op, size_t layer_count,
                                       c10::ArrayRef<std::string> activations,
                                       c10::ArrayRef<double> negative_slopes) {
  TORCH_CHECK(activations.size() == layer_count, op, ": expected one activation per layer (",
              layer_count, "), got ", activations.size());
  TORCH_CHECK(negative_slopes.size() == layer_count, op,
              ": expected one negative_slope per layer (", layer_count, "), got ",
              negative_slopes.size());
  std::vector<MlpLayer> layers;
  layers.reserve(layer_count);
  for (size_t l = 0; l < layer_count; ++l)
    layers.push_back({parse_activation(op, activations[l]), negative_slopes[l]});
  return layers;
}

void check_mlp_args(const char* op, const at::Tensor& x, at::TensorList weights,
                    const c10::List<std::optional<at::Tensor>>& biases) {
  TORCH_CHECK(!weights.empty(), op, ": expected at least one layer, got an empty weights list");
  TORCH_CHECK(biases.size() == weights.size(), op, ": expected one bias (or None) per weight (",
              weights.size(), "), got ", biases.size());
  check_x_rank(op, x);
  check_x_floating(op, x);
  // The names messages use, written on the stack: this runs on every call (twice: the
  // Autograd and the backend kernel), and std::strings or snprintf per layer cost more
  // than the checks themselves (snprintf: ~0.45 us of a 5.8 us call at 1 x 784-128-10).
  char name[32], bias_name[32], out_features[48];
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    indexed_name(name, "weights[", l);
    check_weight_rank(op, name, w);
    check_same_dtype(op, name, w, x);
    check_same_device(op, name, w, x);
    if (l == 0) {
      check_x_matches_weight(op, name, x, w);
    } else {
      TORCH_CHECK(w.sym_size(1) == weights[l - 1].sym_size(0), op, ": weights[", l,
                  "] has in_features = ", w.sym_size(1), " but weights[", l - 1,
                  "] has out_features = ", weights[l - 1].sym_size(0),
                  " (each layer takes the previous layer's output)");
    }
    const std::optional<at::Tensor> b = biases.get(l);
    if (b.has_value() && b->defined()) {
      indexed_name(bias_name, "biases[", l);
      indexed_name(out_features, "out_features of weights[", l);
      check_bias(op, bias_name, *b, w, out_features, x);
    }
  }
}

MlpOutputs mlp_forward(const Backend& backend, const char* op, const at::Tensor& x,
                       at::TensorList weights, const c10::List<std::optional<at::Tensor>>& biases,
                       const std::vector<MlpLayer>& layers) {
  check_mlp_args(op, x, weights, biases);
  const DType dtype = backend.dtype_of(op, x);
  const size_t count = weights.size();
  const at::Tensor x2 = as_rows(x, weights[0].size(1));
  const int64_t rows = x2.size(0);

  // Every layer's output (the hidden ones are saved for backward: the next layer's input),
  // and the pre-activations that backward needs; all contiguous (rows, width).
  std::vector<at::Tensor> outputs, pre;
  std::vector<at::Tensor> pre_of(count);
  // A block's rows of x are read once whatever the blocking; what should stay in cache is
  // what one layer writes and the next reads back: the outputs (and saved pre-activations).
  int64_t bytes_per_row = 0, macs_per_row = 0, weight_bytes = 0;
  int64_t min_in_features = weights[0].size(1);
  for (size_t l = 0; l < count; ++l) {
    const int64_t width = weights[l].size(0);
    outputs.push_back(at::empty({rows, width}, x.options()));
    bytes_per_row += width;
    if (layers[l].saved() == Saved::pre_activation) {
      pre_of[l] = at::empty({rows, width}, x.options());
      pre.push_back(pre_of[l]);
      bytes_per_row += width;
    }
    macs_per_row += width * weights[l].size(1);
    weight_bytes += width * weights[l].size(1) * x.element_size();
    min_in_features = std::min(min_in_features, weights[l].size(1));
  }
  bytes_per_row *= x.element_size();

  // The bias data of each layer, read once (c10::List::get copies an optional Tensor).
  std::vector<at::Tensor> bias(count);
  for (size_t l = 0; l < count; ++l) {
    const std::optional<at::Tensor> b = biases.get(l);
    if (b.has_value()) bias[l] = *b;
  }
  const auto run = [&](int64_t r0, int64_t r1) {
    for (size_t l = 0; l < count; ++l) {
      GemmProblem pb;  // h[l+1] = act(h[l] · W[l]ᵀ + b[l]) on rows [r0, r1)
      pb.m = r1 - r0;
      pb.n = weights[l].size(0);
      pb.k = weights[l].size(1);
      pb.a = rows_from(l == 0 ? x2 : outputs[l - 1], r0);
      pb.b = rows_from(weights[l], 0);
      if (bias[l].defined()) {
        pb.bias = bias[l].const_data_ptr();
        pb.bias_stride = bias[l].stride(0);
      }
      pb.act = layers[l].act;
      pb.slope = layers[l].slope;
      pb.c = row_ptr(outputs[l], r0);
      pb.ldc = pb.n;
      if (pre_of[l].defined()) pb.c_pre = row_ptr(pre_of[l], r0);
      backend.gemm(dtype, pb, outputs[l]);
    }
  };
  if (rows > 0) {
    if (backend.for_row_blocks != nullptr) {
      backend.for_row_blocks(rows, bytes_per_row, macs_per_row, weight_bytes, min_in_features,
                             run);
    } else {
      run(0, rows);
    }
  }

  // Outputs shaped like x's leading dimensions, as the per-layer ops return them (a 2-D x
  // needs no view: the common case, and a view per output costs as much as a small GEMM).
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(0);
  const auto shaped = [&](const at::Tensor& t) {
    if (x.dim() == 2) return t;
    shape.back() = t.size(1);
    return t.view(shape);
  };
  std::vector<at::Tensor> hidden;
  for (size_t l = 0; l + 1 < count; ++l) hidden.push_back(shaped(outputs[l]));
  for (at::Tensor& t : pre) t = shaped(t);
  return {shaped(outputs.back()), std::move(hidden), std::move(pre)};
}

MlpGrads mlp_backward(const Backend& backend, const char* op, const at::Tensor& grad_y,
                      const at::Tensor& x, at::TensorList weights, const at::Tensor& y,
                      at::TensorList hidden, at::TensorList pre,
                      const std::vector<MlpLayer>& layers, const c10::List<bool>& output_mask) {
  const size_t count = weights.size();
  TORCH_CHECK(count > 0, op, ": expected at least one layer, got an empty weights list");
  TORCH_CHECK(output_mask.size() == 1 + 2 * count, op,
              ": expected output_mask of 1 + 2 * layers = ", 1 + 2 * count,
              " entries (grad_x, each weight, each bias), got ", output_mask.size());
  TORCH_CHECK(hidden.size() + 1 == count, op, ": expected ", count - 1,
              " hidden activations (one per layer but the last), got ", hidden.size());
  size_t pre_count = 0;
  for (const MlpLayer& layer : layers) pre_count += layer.saved() == Saved::pre_activation;
  TORCH_CHECK(pre.size() == pre_count, op, ": expected ", pre_count,
              " saved pre-activations (one per layer whose activation needs it), got ",
              pre.size());
  TORCH_CHECK(y.defined() || layers.back().saved() != Saved::output, op,
              ": the last layer's activation '", activation_name(layers.back().act),
              "' needs the forward output y, got None");

  // The lowest layer that wants anything: below it nothing is computed.
  const auto wants = [&](size_t l) { return output_mask[1 + l] || output_mask[1 + count + l]; };
  size_t lowest = count;
  if (output_mask[0]) {
    lowest = 0;
  } else {
    for (size_t l = 0; l < count && lowest == count; ++l)
      if (wants(l)) lowest = l;
  }

  at::Tensor grad_x;
  std::vector<at::Tensor> grad_w(count), grad_b(count);
  at::Tensor grad = grad_y;  // the gradient of layer l's output, walking down
  for (size_t l = count; l-- > lowest;) {
    const at::Tensor& input = l == 0 ? x : hidden[l - 1];
    const std::array<bool, 3> mask = {l > lowest || output_mask[0], output_mask[1 + l],
                                      output_mask[1 + count + l]};
    at::Tensor grad_in;
    std::tie(grad_in, grad_w[l], grad_b[l]) =
        backward(backend, op, grad, input, weights[l], mlp_saved(layers, l, y, hidden, pre),
                 layers[l].act, layers[l].slope, mask);
    if (l == 0) grad_x = grad_in;
    grad = grad_in;
  }
  std::vector<at::Tensor> weight_grads, bias_grads;
  for (size_t l = 0; l < count; ++l) {
    if (output_mask[1 + l]) weight_grads.push_back(grad_w[l]);
    if (output_mask[1 + count + l]) bias_grads.push_back(grad_b[l]);
  }
  return {grad_x, std::move(weight_grads), std::move(bias_grads)};
}

}  // namespace fusedmlp
