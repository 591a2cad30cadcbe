// AVX-512 micro-kernels. Only this unit is compiled for AVX-512 (see isa.h for why it
// includes nothing but intrinsics and our plain headers); it runs only when best_isa()
// says the CPU has AVX-512F.
// GCC: the target pragma covers everything below. clang has no `#pragma GCC target`; it
// pushes the same target attribute onto every function below (popped at the end).
#if defined(__clang__)
#include <immintrin.h>
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>
#endif

#include "cpu/isa.h"
#include "cpu/microkernel.h"

namespace fusedmlp::cpu {
namespace {

inline __mmask16 lanes16(int n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}
inline __mmask8 lanes8(int n) {
  return n >= 8 ? __mmask8(0xFF) : n <= 0 ? __mmask8(0) : __mmask8((1u << n) - 1);
}

struct F64x8;

struct F32x16 {
  using T = float;
  using Mask = __mmask16;
  using Wide = F64x8;
  using Reg = __m512;
  static constexpr int width = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const T* p) { return _mm512_loadu_ps(p); }
  static Reg load_partial(const T* p, int n) { return _mm512_maskz_loadu_ps(lanes16(n), p); }
  static void store(T* p, Reg v) { _mm512_storeu_ps(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm512_mask_storeu_ps(p, lanes16(n), v); }
  static Reg broadcast(const T* p) { return _mm512_set1_ps(*p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg set1(T v) { return _mm512_set1_ps(v); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static Reg div(Reg a, Reg b) { return _mm512_div_ps(a, b); }
  static Reg min(Reg a, Reg b) { return _mm512_min_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  static Mask le(Reg a, Reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
  static Mask lt(Reg a, Reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static Mask gt(Reg a, Reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static Mask unord(Reg a, Reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q); }
  static Reg select(Mask m, Reg a, Reg b) { return _mm512_mask_blend_ps(m, b, a); }
  static inline void widen(Reg v, __m512d& lo, __m512d& hi);
  static inline Reg narrow(__m512d lo, __m512d hi);
  static void sum4(const Reg r[4], T out[4]) {
    for (int j = 0; j < 4; ++j) out[j] = _mm512_reduce_add_ps(r[j]);
  }
};

struct F64x8 {
  using T = double;
  using Reg = __m512d;
  using Mask = __mmask8;
  static constexpr int width = 8;
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg load(const T* p) { return _mm512_loadu_pd(p); }
  static Reg load_partial(const T* p, int n) { return _mm512_maskz_loadu_pd(lanes8(n), p); }
  static void store(T* p, Reg v) { _mm512_storeu_pd(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm512_mask_storeu_pd(p, lanes8(n), v); }
  static Reg broadcast(const T* p) { return _mm512_set1_pd(*p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static Reg set1(T v) { return _mm512_set1_pd(v); }
  static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm512_sub_pd(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm512_mul_pd(a, b); }
  static Reg div(Reg a, Reg b) { return _mm512_div_pd(a, b); }
  static Reg min(Reg a, Reg b) { return _mm512_min_pd(a, b); }
  static Reg max(Reg a, Reg b) { return _mm512_max_pd(a, b); }
  static Mask le(Reg a, Reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_LE_OQ); }
  static Mask lt(Reg a, Reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
  static Mask gt(Reg a, Reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
  static Mask unord(Reg a, Reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q); }
  static Reg select(Mask m, Reg a, Reg b) { return _mm512_mask_blend_pd(m, b, a); }
  static Reg round(Reg v) { return _mm512_roundscale_pd(v, _MM_FROUND_TO_NEAREST_INT); }
  static Reg scale2(Reg r, Reg n) { return _mm512_scalef_pd(r, n); }
  static void sum4(const Reg r[4], T out[4]) {
    for (int j = 0; j < 4; ++j) out[j] = _mm512_reduce_add_pd(r[j]);
  }
};

void F32x16::widen(Reg v, __m512d& lo, __m512d& hi) {
  lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
F32x16::Reg F32x16::narrow(__m512d lo, __m512d hi) {
  const __m512d lo_wide = _mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)));
  return _mm512_castpd_ps(
      _mm512_insertf64x4(lo_wide, _mm256_castps_pd(_mm512_cvtpd_ps(hi)), 1));
}

}  // namespace

// 8 x 32 fp32: 16 accumulators + 2 B vectors of the 32 zmm registers; A is broadcast
// straight from memory (embedded broadcast), 16 FMAs per 10 loads.
// Dot-product 4 x 4: 16 accumulators + 4 A vectors + 1 B vector.
// Packing uses the AVX2 transposes (every AVX-512 CPU has AVX2).
MicroKernels avx512_microkernels() {
  MicroKernels k{make_microkernel<F32x16, 8, 2, 4>(), make_microkernel<F64x8, 8, 2, 4>()};
  const MicroKernels avx2 = avx2_microkernels();
  k.f32.transpose_tile = avx2.f32.transpose_tile;
  k.f32.transpose = avx2.f32.transpose;
  k.f64.transpose_tile = avx2.f64.transpose_tile;
  k.f64.transpose = avx2.f64.transpose;
  return k;
}

}  // namespace fusedmlp::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
