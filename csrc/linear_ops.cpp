// The op -> GEMM mapping of linear_ops.h.
#include "linear_ops.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <cstring>

#include "checks.h"

namespace fusedmlp {
namespace {

// A 2-D tensor as a GEMM operand whose rows are the outer dimension (its transposed()
// is the operand whose columns are).
Operand rows_of(const at::Tensor& t2d) {
  return {t2d.const_data_ptr(), t2d.stride(0), t2d.stride(1)};
}

}  // namespace

std::string activation_names() {
  std::string names;
  for (int i = 0; i < kActivationCount; ++i)
    names += (i ? ", " : "") + std::string(activation_name(static_cast<Activation>(i)));
  return names;
}

std::optional<Activation> find_activation(c10::string_view name) {
  for (int i = 0; i < kActivationCount; ++i)
    if (name == activation_name(static_cast<Activation>(i))) return static_cast<Activation>(i);
  return std::nullopt;
}

Activation parse_activation(const char* op, c10::string_view name) {
  if (const std::optional<Activation> act = find_activation(name)) return *act;
  TORCH_CHECK(false, op, ": unknown activation '", std::string(name.data(), name.size()),
              "'; expected one of ", activation_names());
}

at::Tensor forward(const Backend& backend, const char* op, const at::Tensor& x,
                   const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   Activation act, double slope, at::Tensor* pre) {
  check_forward_args(op, x, weight, bias);
  const DType dtype = backend.dtype_of(op, x);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  at::Tensor y = at::empty(output_shape(x, weight), x.options());

  GemmProblem pb;  // y = act(x · Wᵀ + b): A = x, B = W
  pb.m = x2.size(0);
  pb.n = out_features;
  pb.k = in_features;
  pb.a = rows_of(x2);
  pb.b = rows_of(weight);
  if (bias.has_value() && bias->defined()) {
    pb.bias = bias->const_data_ptr();
    pb.bias_stride = bias->stride(0);
  }
  pb.act = act;
  pb.slope = slope;
  pb.c = y.mutable_data_ptr();
  pb.ldc = out_features;
  if (pre != nullptr) {
    *pre = at::empty_like(y);
    pb.c_pre = pre->mutable_data_ptr();
  }
  backend.gemm(dtype, pb, y);
  return y;
}

Grads backward(const Backend& backend, const char* op, const at::Tensor& grad_y,
               const at::Tensor& x, const at::Tensor& weight, const at::Tensor& saved,
               Activation act, double slope, std::array<bool, 3> output_mask) {
  const bool needs_saved = saved_for(act, slope) != Saved::none;
  TORCH_CHECK(!needs_saved || saved.defined(), op, ": activation '", activation_name(act),
              "' needs the saved ",
              saved_for(act, slope) == Saved::output ? "output y" : "pre-activation z",
              " of the forward pass, got None");
  const at::Tensor s = needs_saved ? saved : at::Tensor();
  check_backward_args(op, grad_y, x, weight, s);
  const DType dtype = backend.dtype_of(op, x);
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const at::Tensor x2 = as_rows(x, in_features);
  at::Tensor g2 = as_rows(grad_y, out_features);
  at::Tensor s2 = s.defined() ? as_rows(s, out_features) : at::Tensor();
  bool derive = needs_saved;
  if (derive && backend.derive_once && transcendental(act) && g2.numel() > 0 &&
      (output_mask[0] || output_mask[1])) {
    // grad_y * act'(saved) once, then the GEMMs read it as it is.
    g2 = activation_grad(backend, op, g2, s2, act, slope, 1);
    derive = false;
  }
  const Operand g = rows_of(g2);
  const Operand g_saved = derive ? rows_of(s2) : Operand{};
  const int64_t rows = x2.size(0);

  at::Tensor grad_x, grad_w, grad_b;
  if (output_mask[0]) grad_x = at::empty(x.sizes(), x.options());
  if (output_mask[1]) grad_w = at::empty({out_features, in_features}, weight.options());
  if (output_mask[2]) grad_b = at::empty({out_features}, weight.options());

  // g = grad_y · act'(saved), applied by the GEMMs as they load grad_y.
  GemmProblem px;  // grad_x = g · W: A = g (rows x out), B = Wᵀ (in x out)
  px.a_act = derive ? act : Activation::identity;
  px.slope = slope;
  px.m = rows;
  px.n = in_features;
  px.k = out_features;
  px.a = g;
  px.a_saved = g_saved;
  px.b = rows_of(weight).transposed();
  px.c = grad_x.defined() ? grad_x.mutable_data_ptr() : nullptr;
  px.ldc = in_features;
  // grad_w = gᵀ · x: A = gᵀ (out x rows), B = xᵀ (in x rows); grad_b = A's row sums, taken
  // in the same pass (with n = 0 when grad_w is not wanted).
  GemmProblem pw;
  pw.a_act = px.a_act;
  pw.slope = slope;
  pw.m = out_features;
  pw.n = grad_w.defined() ? in_features : 0;
  pw.k = rows;
  pw.a = g.transposed();
  pw.a_saved = g_saved.transposed();
  pw.b = rows_of(x2).transposed();
  pw.c = grad_w.defined() ? grad_w.mutable_data_ptr() : nullptr;
  pw.ldc = in_features;
  pw.a_row_sums = grad_b.defined() ? grad_b.mutable_data_ptr() : nullptr;
  if (grad_x.defined() && grad_w.defined() && backend.gemm_pair &&
      backend.gemm_pair(dtype, px, pw))
    return {grad_x, grad_w, grad_b};
  if (grad_x.defined()) backend.gemm(dtype, px, grad_x);
  if (grad_w.defined() || grad_b.defined())
    backend.gemm(dtype, pw, grad_w.defined() ? grad_w : grad_b);
  return {grad_x, grad_w, grad_b};
}

at::Tensor activation_grad(const Backend& backend, const char* op, const at::Tensor& grad,
                           const at::Tensor& saved, Activation act, double slope,
                           int64_t order) {
  TORCH_CHECK(order == 1 || order == 2, op, ": expected order 1 or 2, got ", order);
  TORCH_CHECK(grad.sizes() == saved.sizes(), op, ": expected saved of grad's shape ",
              grad.sizes(), ", got ", saved.sizes());
  TORCH_CHECK(grad.scalar_type() == saved.scalar_type() && grad.device() == saved.device(), op,
              ": expected grad and saved of one dtype and device, got ", grad.scalar_type(),
              " on ", grad.device(), " and ", saved.scalar_type(), " on ", saved.device());
  const DType dtype = backend.dtype_of(op, grad);
  const at::Tensor g = grad.contiguous(), s = saved.contiguous();
  at::Tensor out = at::empty_like(g);
  if (out.numel() > 0)
    backend.activation_grad(dtype, act, slope, static_cast<int>(order), out.numel(),
                            g.const_data_ptr(), s.const_data_ptr(), out.mutable_data_ptr(), out);
  return out;
}

}  // namespace fusedmlp
