// The activations of activation.h on the CPU micro-kernels' vector types V (the epilogue
// of the forward GEMM, the derivative applied while grad_y is packed), and on scalars.
//
// Beyond the GEMM interface (see microkernel.h), a SIMD V (width > 1) provides:
//   set1(t), add, sub, mul, div, min, max; Mask, le, lt, gt, unord (NaN test), select(m, a, b)
//   float32 V: Wide (the float64 V of its ISA), widen(r, lo, hi), narrow(lo, hi)
//   float64 V: round(r) (to nearest integer), scale2(r, n) = r * 2^n for integral
//              n in [-1022, 1022]
// Evaluation: identity, relu, leaky_relu and relu_squared run in V itself (exact as in
// torch: one rounding each). The transcendental ones run in float64: float32 lanes are
// widened and evaluated with the polynomial exp/erf/tanh below (relative error ~1e-7 at
// worst, from erfc, then one rounding to float32); float64 lanes and scalars call libm.
// Internal linkage throughout (see microkernel.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "activation.h"

namespace fusedmlp::cpu {
namespace {  // NOLINT: see microkernel.h

// A V register with arithmetic operators, so activation.h's formulas read as written.
template <class V>
struct Vec {
  using T = typename V::T;
  typename V::Reg r;
  Vec(typename V::Reg v) : r(v) {}  // NOLINT: implicit on purpose
  Vec(double c) : r(V::set1(static_cast<T>(c))) {}  // NOLINT
  friend Vec operator+(Vec a, Vec b) { return V::add(a.r, b.r); }
  friend Vec operator-(Vec a, Vec b) { return V::sub(a.r, b.r); }
  friend Vec operator*(Vec a, Vec b) { return V::mul(a.r, b.r); }
  friend Vec operator/(Vec a, Vec b) { return V::div(a.r, b.r); }
  Vec operator-() const { return V::sub(V::set1(T(0)), r); }
};
template <class V>
struct VecMask {
  typename V::Mask m;
};
template <class V>
VecMask<V> le(Vec<V> a, Vec<V> b) { return {V::le(a.r, b.r)}; }
template <class V>
VecMask<V> gt(Vec<V> a, Vec<V> b) { return {V::gt(a.r, b.r)}; }
template <class V>
Vec<V> where(VecMask<V> c, Vec<V> a, Vec<V> b) { return V::select(c.m, a.r, b.r); }

// exp, erf and tanh on float64 vectors, accurate well beyond float32's needs (used for
// float32 results only). NaN propagates; exp(+-inf) = inf, 0.
template <class W>
struct PolyMath {
  using D = Vec<W>;
  static D nan_to(D x, D r) { return W::select(W::unord(x.r, x.r), x.r, r.r); }

  // e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln 2 / 2; Taylor to r^11 (error < 1e-14).
  static D exp(D x) {
    const D xc = W::min(W::max(x.r, W::set1(-708.0)), W::set1(708.0));
    const D n = W::round((xc * D(1.4426950408889634)).r);
    const D r = xc - n * D(0.693147180559945286) - n * D(2.319046813846299558e-17);
    D p = D(1.0 / 39916800);
    const double inv_fact[] = {1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
                               1.0 / 720,     1.0 / 120,    1.0 / 24,    1.0 / 6,
                               0.5,           1.0,          1.0};
    for (double c : inv_fact) p = p * r + D(c);
    D e = W::scale2(p.r, n.r);
    e = W::select(W::gt(x.r, W::set1(708.0)), W::set1(HUGE_VAL), e.r);
    e = W::select(W::lt(x.r, W::set1(-708.0)), W::set1(0.0), e.r);
    return nan_to(x, e);
  }

  static D abs(D x) { return W::select(W::lt(x.r, W::set1(0.0)), (-x).r, x.r); }
  static D copysign_of(D x, D r) { return W::select(W::lt(x.r, W::set1(0.0)), (-r).r, r.r); }

  // |x| < 0.5: Maclaurin series to x^19 (error < 1e-12); else 1 - erfc with Numerical
  // Recipes' erfc (Chebyshev fit, relative error < 1.2e-7).
  static D erf(D x) {
    const D a = abs(x), a2 = a * a;
    // erf(a) = 2/sqrt(pi) sum (-1)^n a^(2n+1) / (n! (2n+1))
    const double coeffs[] = {-1.0 / (362880.0 * 19), 1.0 / (40320.0 * 17),
                             -1.0 / (5040.0 * 15),   1.0 / (720.0 * 13),
                             -1.0 / (120.0 * 11),    1.0 / (24.0 * 9),
                             -1.0 / (6.0 * 7),       1.0 / (2.0 * 5),
                             -1.0 / 3,               1.0};
    D s = D(coeffs[0]);
    for (int i = 1; i < 10; ++i) s = s * a2 + D(coeffs[i]);
    const D small = s * a * D(1.1283791670955126);
    const D t = D(2.0) / (D(2.0) + a);
    const double nr[] = {0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807,
                         -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223};
    D q = D(nr[0]);
    for (int i = 1; i < 10; ++i) q = q * t + D(nr[i]);
    const D big = D(1.0) - t * exp(q - a2);
    const D r = W::select(W::lt(a.r, W::set1(0.5)), small.r, big.r);
    return nan_to(x, copysign_of(x, r));
  }

  // tanh |x| = (1 - e) / (1 + e), e = exp(-2|x|); below 1e-4, x - x^3/3.
  static D tanh(D x) {
    const D a = abs(x);
    const D e = exp(D(-2.0) * a);
    const D big = (D(1.0) - e) / (D(1.0) + e);
    const D small = a - a * a * a * D(1.0 / 3);
    const D r = W::select(W::lt(a.r, W::set1(1e-4)), small.r, big.r);
    return nan_to(x, copysign_of(x, r));
  }
};

// One scalar of type T: in T where that is exact as torch computes it, else in double.
template <class A, typename T>
T forward_scalar(T z, T slope) {
  if constexpr (A::transcendental) {
    return static_cast<T>(A::template forward<ScalarMath>(double(z), double(slope)));
  } else {
    return A::template forward<ScalarMath>(z, slope);
  }
}
template <class A, typename T>
T grad_scalar(T g, T s, T slope) {
  if constexpr (A::transcendental) {
    return static_cast<T>(A::template grad<ScalarMath>(double(g), double(s), double(slope)));
  } else {
    return A::template grad<ScalarMath>(g, s, slope);
  }
}

template <class A, typename T>
T grad2_scalar(T g, T s, T slope) {
  return static_cast<T>(A::template grad2<ScalarMath>(double(g), double(s), double(slope)));
}

// The same on a register of V. `f(math-tag, args...)` is the formula; the dispatch on
// V's width and type is written once here.
template <class V, class A, class Formula>
typename V::Reg apply(Formula f, typename V::Reg a, typename V::Reg b, typename V::T slope) {
  using T = typename V::T;
  if constexpr (V::width == 1) {
    if constexpr (A::transcendental) {
      return static_cast<T>(f(ScalarMath{}, double(a), double(b), double(slope)));
    } else {
      return f(ScalarMath{}, a, b, slope);
    }
  } else if constexpr (!A::transcendental) {
    return f(ScalarMath{}, Vec<V>(a), Vec<V>(b), Vec<V>(V::set1(slope))).r;
  } else if constexpr (sizeof(T) == 4) {  // float32: in float64 lanes, polynomial math
    using W = typename V::Wide;
    typename W::Reg a_lo, a_hi, b_lo, b_hi;
    V::widen(a, a_lo, a_hi);
    V::widen(b, b_lo, b_hi);
    const Vec<W> s(W::set1(double(slope)));
    return V::narrow(f(PolyMath<W>{}, Vec<W>(a_lo), Vec<W>(b_lo), s).r,
                     f(PolyMath<W>{}, Vec<W>(a_hi), Vec<W>(b_hi), s).r);
  } else {  // float64: lane by lane through libm
    T av[V::width], bv[V::width];
    V::store(av, a);
    V::store(bv, b);
    for (int l = 0; l < V::width; ++l) av[l] = f(ScalarMath{}, av[l], bv[l], slope);
    return V::load(av);
  }
}

template <class V, class A>
typename V::Reg forward_vec(typename V::Reg z, typename V::T slope) {
  return apply<V, A>(
      [](auto math, auto z_, auto, auto s_) {
        return A::template forward<decltype(math)>(z_, s_);
      },
      z, z, slope);
}

template <class V, class A>
typename V::Reg grad_vec(typename V::Reg g, typename V::Reg saved, typename V::T slope) {
  return apply<V, A>(
      [](auto math, auto g_, auto s_, auto slope_) {
        return A::template grad<decltype(math)>(g_, s_, slope_);
      },
      g, saved, slope);
}

template <class V, class A>
typename V::Reg grad2_vec(typename V::Reg g, typename V::Reg saved, typename V::T slope) {
  return apply<V, A>(
      [](auto math, auto g_, auto s_, auto slope_) {
        return A::template grad2<decltype(math)>(g_, s_, slope_);
      },
      g, saved, slope);
}

}  // namespace
}  // namespace fusedmlp::cpu
