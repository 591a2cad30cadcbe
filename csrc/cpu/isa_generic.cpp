// Portable micro-kernels: plain C++ for any CPU (and the reference the SIMD paths are
// tested against). The compiler may still vectorise these with the baseline ISA.
#include "cpu/isa.h"
#include "cpu/microkernel.h"

namespace fusedmlp::cpu {
namespace {

template <typename Scalar>
struct Scalar1 {
  using T = Scalar;
  using Reg = Scalar;
  static constexpr int width = 1;
  static Reg zero() { return Scalar(0); }
  static Reg load(const T* p) { return *p; }
  static Reg load_partial(const T* p, int n) { return n > 0 ? *p : Scalar(0); }
  static void store(T* p, Reg v) { *p = v; }
  static void store_partial(T* p, Reg v, int n) {
    if (n > 0) *p = v;
  }
  static Reg broadcast(const T* p) { return *p; }
  // Separate multiply and add: fma() from <cmath> would be a slow libm call without FMA.
  static Reg fma(Reg a, Reg b, Reg c) { return a * b + c; }
  static void sum4(const Reg r[4], T out[4]) {
    for (int j = 0; j < 4; ++j) out[j] = r[j];
  }
};

}  // namespace

MicroKernels generic_microkernels() {
  return {make_microkernel<Scalar1<float>, 4, 8, 3>(),
          make_microkernel<Scalar1<double>, 4, 8, 3>()};
}

}  // namespace fusedmlp::cpu
