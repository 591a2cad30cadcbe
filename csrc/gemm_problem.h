// The one GEMM problem every backend solves (plain C++, no torch: nvcc and the CPU ISA
// units read it). Convention "NT", both operands "outer x k":
//     C[i, j] = epilogue(bias[j] + sum_k A'(i, k) * B(j, k))
// with A'(i, k) = A(i, k) * act'(a_saved(i, k)) when a_saved is set (the backward's
// activation derivative, applied while A is loaded), else A(i, k).
// linear_ops.cpp maps every op onto it: forward y = act(x · Wᵀ + b) is A = x, B = W;
// grad_x = g · W is A = g, B = Wᵀ; grad_w = gᵀ · x is A = gᵀ, B = xᵀ.
#pragma once

#include <cstdint>

#include "activation.h"

namespace fusedmlp {

enum class DType { f32, f64, f16, bf16 };

// A read-only strided matrix view: element (outer, k) is data[outer * outer_stride +
// k * k_stride]. Any strides work (transposed, sliced, 0 for expanded), so nothing is
// copied to fit a layout.
struct Operand {
  const void* data = nullptr;
  int64_t outer_stride = 0;
  int64_t k_stride = 0;
  Operand transposed() const { return {data, k_stride, outer_stride}; }
};

struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  Operand a;  // m x k
  Operand b;  // n x k
  // Backward: A's activation derivative from the saved tensor (output or pre-activation,
  // m x k like A); a_act = identity (or no a_saved.data) leaves A as it is.
  Operand a_saved;
  Activation a_act = Activation::identity;
  // If set, receives the m row sums of A' (grad_b), in the same pass where the backend can.
  void* a_row_sums = nullptr;
  // Forward epilogue: c = act(bias + acc), c_pre = bias + acc when set (the pre-activation
  // that backward of gelu, silu, ... differentiates from).
  const void* bias = nullptr;  // n values, stride bias_stride; null: no bias
  int64_t bias_stride = 1;
  Activation act = Activation::identity;
  double slope = 0.01;  // leaky_relu's negative_slope, for act and a_act
  void* c = nullptr;      // m x n, row stride ldc, column stride 1; only written
  void* c_pre = nullptr;  // same layout as c
  int64_t ldc = 0;
};

}  // namespace fusedmlp
