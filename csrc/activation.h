// The activations of the fused epilogue and their derivatives, written once for every
// backend: host C++ (the CPU kernels, scalar and through the vector wrapper of
// cpu/vec_activation.h) and CUDA device code (nvcc reads this header too).
//
// Each activation is one enum entry and one struct: its `name` (what the ops and the
// Python API take), what backward reads (`saved`),
// whether it needs exp/erf/tanh (`transcendental`: the CPU then evaluates it in double
// for float32, for results within an ulp or two of torch's), whether its second
// derivative is 0 (`piecewise_linear`: double backward skips that term), and the functions
//   forward(z)        y = act(z), z = x · Wᵀ + b
//   grad(g, s)        g · act'(.), from the saved tensor s (the output y or the
//                     pre-activation z, see `saved`), applied while grad_y is loaded into
//                     the backward GEMMs
//   grad2(g, s)       g · d(act'(s))/ds, the derivative of grad's factor with respect to
//                     s (double backward)
// The formulas are templates over the value type R (float, double, or a SIMD wrapper)
// and a math policy M (exp, erf, tanh for R); comparisons go through le/gt/where, which
// have scalar overloads here and vector overloads next to each vector type. They follow
// torch's own formulas (aten/src/ATen/native/cpu/Activation.cpp), so NaN and Inf behave
// the same way.
//
// Everything has internal linkage (unnamed namespace): the CPU ISA units compile this
// header with their own target flags, and no instruction set may leak between them.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FUSEDMLP_HD __host__ __device__ __forceinline__
#else
#define FUSEDMLP_HD inline
#endif

namespace fusedmlp {

enum class Activation : int32_t {
  identity = 0,
  relu,
  leaky_relu,
  gelu,
  gelu_tanh,
  silu,
  sigmoid,
  tanh,
  relu_squared,
};
constexpr int kActivationCount = 9;

// What backward differentiates from: nothing (identity), the output y, or the
// pre-activation z (which the forward then also stores).
enum class Saved : int32_t { none, output, pre_activation };

namespace {  // NOLINT: internal linkage on purpose, see above

// Scalar comparisons and select (vector types bring their own overloads).
template <typename R>
FUSEDMLP_HD bool le(R a, R b) { return a <= b; }
template <typename R>
FUSEDMLP_HD bool gt(R a, R b) { return a > b; }
template <typename R>
FUSEDMLP_HD R where(bool c, R a, R b) { return c ? a : b; }

// Scalar math: libm on the host, CUDA's math library on the device.
struct ScalarMath {
  static FUSEDMLP_HD float exp(float v) { return ::expf(v); }
  static FUSEDMLP_HD double exp(double v) { return ::exp(v); }
  static FUSEDMLP_HD float erf(float v) { return ::erff(v); }
  static FUSEDMLP_HD double erf(double v) { return ::erf(v); }
  static FUSEDMLP_HD float tanh(float v) { return ::tanhf(v); }
  static FUSEDMLP_HD double tanh(double v) { return ::tanh(v); }
};

constexpr double kSqrt1_2 = 0.70710678118654752440;
// gelu's pdf factor 1/sqrt(2 pi) and gelu_tanh's sqrt(2/pi), as torch writes them.
constexpr double kGeluBeta = 1.12837916709551257390 * 0.70710678118654752440 * 0.5;
constexpr double kGeluTanhBeta = 1.41421356237309504880 * 1.12837916709551257390 * 0.5;
constexpr double kGeluTanhKappa = 0.044715;

template <Activation A>
struct Act;

template <>
struct Act<Activation::identity> {
  static constexpr const char* name = "identity";
  static constexpr Saved saved = Saved::none;
  static constexpr bool transcendental = false;
  static constexpr bool piecewise_linear = true;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) { return z; }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R, R) { return g; }
  template <class M, class R> static FUSEDMLP_HD R grad2(R, R, R) { return R(0); }
};

// max(0, z) keeping NaN; the gradient passes where !(y <= 0) (threshold_backward).
template <>
struct Act<Activation::relu> {
  static constexpr const char* name = "relu";
  static constexpr Saved saved = Saved::output;
  static constexpr bool transcendental = false;
  static constexpr bool piecewise_linear = true;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) {
    return where(le(z, R(0)), R(0), z);
  }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R y, R) {
    return where(le(y, R(0)), R(0), g);
  }
  template <class M, class R> static FUSEDMLP_HD R grad2(R, R, R) { return R(0); }
};

// z > 0 ? z : z * slope; backward from y, whose sign is z's for slope >= 0 (for a
// negative slope the pre-activation is saved instead: see saved_for()).
template <>
struct Act<Activation::leaky_relu> {
  static constexpr const char* name = "leaky_relu";
  static constexpr Saved saved = Saved::output;
  static constexpr bool transcendental = false;
  static constexpr bool piecewise_linear = true;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R slope) {
    return where(gt(z, R(0)), z, z * slope);
  }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R s, R slope) {
    return where(gt(s, R(0)), g, g * slope);
  }
  template <class M, class R> static FUSEDMLP_HD R grad2(R, R, R) { return R(0); }
};

// z * Phi(z), Phi the normal CDF through erf.
template <>
struct Act<Activation::gelu> {
  static constexpr const char* name = "gelu";
  static constexpr Saved saved = Saved::pre_activation;
  static constexpr bool transcendental = true;
  static constexpr bool piecewise_linear = false;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) {
    return z * R(0.5) * (R(1) + M::erf(z * R(kSqrt1_2)));
  }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R z, R) {
    const R cdf = R(0.5) * (R(1) + M::erf(z * R(kSqrt1_2)));
    const R pdf = M::exp(R(-0.5) * z * z) * R(kGeluBeta);
    return g * (cdf + z * pdf);
  }
  // d/dz (Phi + z phi) = 2 phi - z^2 phi = phi (2 - z^2)
  template <class M, class R> static FUSEDMLP_HD R grad2(R g, R z, R) {
    const R pdf = M::exp(R(-0.5) * z * z) * R(kGeluBeta);
    return g * pdf * (R(2) - z * z);
  }
};

// 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))), as F.gelu(approximate="tanh").
template <>
struct Act<Activation::gelu_tanh> {
  static constexpr const char* name = "gelu_tanh";
  static constexpr Saved saved = Saved::pre_activation;
  static constexpr bool transcendental = true;
  static constexpr bool piecewise_linear = false;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) {
    const R inner = R(kGeluTanhBeta) * (z + R(kGeluTanhKappa) * z * z * z);
    return R(0.5) * z * (R(1) + M::tanh(inner));
  }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R z, R) {
    const R z_sq = z * z;
    const R inner = R(kGeluTanhBeta) * (z + R(kGeluTanhKappa) * z_sq * z);
    const R t = M::tanh(inner);
    const R left = R(0.5) * z;
    const R right = R(1) + t;
    const R inner_derivative = R(kGeluTanhBeta) * (R(1) + R(3 * kGeluTanhKappa) * z_sq);
    return g * (R(0.5) * right + left * (R(1) - t * t) * inner_derivative);
  }
  // With t = tanh(u(z)), s = 1 - t^2: d/dz [0.5 (1 + t) + 0.5 z s u'] =
  //   s u' + 0.5 z (u'' s - 2 t s u'^2)
  template <class M, class R> static FUSEDMLP_HD R grad2(R g, R z, R) {
    const R z_sq = z * z;
    const R inner = R(kGeluTanhBeta) * (z + R(kGeluTanhKappa) * z_sq * z);
    const R t = M::tanh(inner);
    const R s = R(1) - t * t;
    const R du = R(kGeluTanhBeta) * (R(1) + R(3 * kGeluTanhKappa) * z_sq);
    const R ddu = R(kGeluTanhBeta) * R(6 * kGeluTanhKappa) * z;
    return g * (s * du + R(0.5) * z * s * (ddu - R(2) * t * du * du));
  }
};

// z * sigmoid(z).
template <>
struct Act<Activation::silu> {
  static constexpr const char* name = "silu";
  static constexpr Saved saved = Saved::pre_activation;
  static constexpr bool transcendental = true;
  static constexpr bool piecewise_linear = false;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) {
    return z / (R(1) + M::exp(-z));
  }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R z, R) {
    const R sig = R(1) / (R(1) + M::exp(-z));
    return g * sig * (R(1) + z * (R(1) - sig));
  }
  // d/dz [sig (1 + z (1 - sig))] = sig (1 - sig) (2 + z (1 - 2 sig))
  template <class M, class R> static FUSEDMLP_HD R grad2(R g, R z, R) {
    const R sig = R(1) / (R(1) + M::exp(-z));
    return g * sig * (R(1) - sig) * (R(2) + z * (R(1) - R(2) * sig));
  }
};

// 1 / (1 + exp(-z)); backward from y: y (1 - y).
template <>
struct Act<Activation::sigmoid> {
  static constexpr const char* name = "sigmoid";
  static constexpr Saved saved = Saved::output;
  static constexpr bool transcendental = true;
  static constexpr bool piecewise_linear = false;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) {
    return R(1) / (R(1) + M::exp(-z));
  }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R y, R) {
    return g * (R(1) - y) * y;
  }
  template <class M, class R> static FUSEDMLP_HD R grad2(R g, R y, R) {
    return g * (R(1) - R(2) * y);
  }
};

// tanh(z); backward from y: 1 - y^2.
template <>
struct Act<Activation::tanh> {
  static constexpr const char* name = "tanh";
  static constexpr Saved saved = Saved::output;
  static constexpr bool transcendental = true;
  static constexpr bool piecewise_linear = false;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) { return M::tanh(z); }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R y, R) {
    return g * (R(1) - y * y);
  }
  template <class M, class R> static FUSEDMLP_HD R grad2(R g, R y, R) {
    return g * (R(-2) * y);
  }
};

// relu(z)^2 (Primer's "squared ReLU"); backward from z: 2 relu(z), NaN kept.
template <>
struct Act<Activation::relu_squared> {
  static constexpr const char* name = "relu_squared";
  static constexpr Saved saved = Saved::pre_activation;
  static constexpr bool transcendental = false;
  static constexpr bool piecewise_linear = false;
  template <class M, class R> static FUSEDMLP_HD R forward(R z, R) {
    const R r = where(le(z, R(0)), R(0), z);
    return r * r;
  }
  template <class M, class R> static FUSEDMLP_HD R grad(R g, R z, R) {
    return where(le(z, R(0)), R(0), g * (R(2) * z));
  }
  template <class M, class R> static FUSEDMLP_HD R grad2(R g, R z, R) {
    return where(le(z, R(0)), R(0), g * R(2));
  }
};

// Calls fn(Act<A>{}) for the runtime value `a`: the one switch over activations; each
// case is compiled with the activation known.
template <class Fn>
FUSEDMLP_HD auto visit_activation(Activation a, Fn&& fn) {
  switch (a) {
    case Activation::relu: return fn(Act<Activation::relu>{});
    case Activation::leaky_relu: return fn(Act<Activation::leaky_relu>{});
    case Activation::gelu: return fn(Act<Activation::gelu>{});
    case Activation::gelu_tanh: return fn(Act<Activation::gelu_tanh>{});
    case Activation::silu: return fn(Act<Activation::silu>{});
    case Activation::sigmoid: return fn(Act<Activation::sigmoid>{});
    case Activation::tanh: return fn(Act<Activation::tanh>{});
    case Activation::relu_squared: return fn(Act<Activation::relu_squared>{});
    case Activation::identity: break;
  }
  return fn(Act<Activation::identity>{});
}

// What backward of `a` reads: leaky_relu with a negative slope cannot tell z's sign from
// y's, so it saves z.
FUSEDMLP_HD Saved saved_for(Activation a, double slope) {
  if (a == Activation::leaky_relu && !(slope >= 0)) return Saved::pre_activation;
  return visit_activation(a, [](auto act) { return decltype(act)::saved; });
}

inline const char* activation_name(Activation a) {
  return visit_activation(a, [](auto act) { return decltype(act)::name; });
}

FUSEDMLP_HD bool transcendental(Activation a) {
  return visit_activation(a, [](auto act) { return decltype(act)::transcendental; });
}

FUSEDMLP_HD bool piecewise_linear(Activation a) {
  return visit_activation(a, [](auto act) { return decltype(act)::piecewise_linear; });
}

// Scalar forms on a value of type C (the compute type: float, double).
template <typename C>
FUSEDMLP_HD C activate(Activation a, C z, C slope) {
  return visit_activation(a, [&](auto act) {
    return decltype(act)::template forward<ScalarMath>(z, slope);
  });
}
template <typename C>
FUSEDMLP_HD C activation_grad(Activation a, C g, C s, C slope) {
  return visit_activation(a, [&](auto act) {
    return decltype(act)::template grad<ScalarMath>(g, s, slope);
  });
}
template <typename C>
FUSEDMLP_HD C activation_grad2(Activation a, C g, C s, C slope) {
  return visit_activation(a, [&](auto act) {
    return decltype(act)::template grad2<ScalarMath>(g, s, slope);
  });
}

}  // namespace
}  // namespace fusedmlp
