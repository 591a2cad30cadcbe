// The CPU backend of the fusedmlp ops: its dtype check and its GEMM (the shared
// GemmProblem in the typed form gemm.h computes); linear_ops.cpp does the rest.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "cpu/gemm.h"
#include "linear_ops.h"

namespace fusedmlp::cpu {
namespace {

DType cpu_dtype(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": the CPU kernels support float32 and float64, got x of dtype ",
              x.scalar_type());
  return x.scalar_type() == at::kFloat ? DType::f32 : DType::f64;
}

template <typename T>
void typed_gemm(const fusedmlp::GemmProblem& p) {
  TORCH_INTERNAL_ASSERT(p.c == nullptr || p.n == 0 || p.ldc == p.n,
                        "fusedmlp: the CPU GEMM writes a contiguous C");
  gemm(typed_problem<T>(p));
}

void cpu_gemm(DType dtype, const fusedmlp::GemmProblem& problem, const at::Tensor& /*like*/) {
  if (dtype == DType::f32) {
    typed_gemm<float>(problem);
  } else {
    typed_gemm<double>(problem);
  }
}

void cpu_activation_grad(DType dtype, Activation act, double slope, int order, int64_t count,
                         const void* g, const void* s, void* out, const at::Tensor& /*like*/) {
  if (dtype == DType::f32) {
    elementwise_grad(static_cast<const float*>(g), static_cast<const float*>(s),
                     static_cast<float*>(out), count, act, static_cast<float>(slope), order);
  } else {
    elementwise_grad(static_cast<const double*>(g), static_cast<const double*>(s),
                     static_cast<double*>(out), count, act, slope, order);
  }
}

// derive_once: the exp/erf/tanh derivatives cost more than the GEMMs' packing would
// repeat them (each GEMM packs grad_y once per column block): computed once instead.
constexpr Backend kCpu{&cpu_dtype, &cpu_gemm, &cpu_activation_grad, /*derive_once=*/true};

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, CPU, m) { register_kernels<kCpu>(m); }

}  // namespace fusedmlp::cpu
