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

struct F32x16 {
  using T = float;
  using Reg = __m512;
  static constexpr int width = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const T* p) { return _mm512_loadu_ps(p); }
  static Reg load_partial(const T* p, int n) { return _mm512_maskz_loadu_ps(lanes16(n), p); }
  static void store(T* p, Reg v) { _mm512_storeu_ps(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm512_mask_storeu_ps(p, lanes16(n), v); }
  static Reg broadcast(const T* p) { return _mm512_set1_ps(*p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  // vmaxps returns its second operand when either is NaN: NaN passes through, as in torch.relu.
  static Reg relu(Reg v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
  static void sum4(const Reg r[4], T out[4]) {
    for (int j = 0; j < 4; ++j) out[j] = _mm512_reduce_add_ps(r[j]);
  }
};

struct F64x8 {
  using T = double;
  using Reg = __m512d;
  static constexpr int width = 8;
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg load(const T* p) { return _mm512_loadu_pd(p); }
  static Reg load_partial(const T* p, int n) { return _mm512_maskz_loadu_pd(lanes8(n), p); }
  static void store(T* p, Reg v) { _mm512_storeu_pd(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm512_mask_storeu_pd(p, lanes8(n), v); }
  static Reg broadcast(const T* p) { return _mm512_set1_pd(*p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static Reg relu(Reg v) { return _mm512_max_pd(_mm512_setzero_pd(), v); }
  static void sum4(const Reg r[4], T out[4]) {
    for (int j = 0; j < 4; ++j) out[j] = _mm512_reduce_add_pd(r[j]);
  }
};

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
