// AVX2 + FMA micro-kernels (Haswell and later, AMD Zen). Compiled for AVX2 only here.
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "cpu/isa.h"
#include "cpu/microkernel.h"

namespace fusedmlp::cpu {
namespace {

// Lane mask for the first n lanes (n may be <= 0 or >= width).
inline __m256i lanes32(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i lanes64(int n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}

struct F32x8 {
  using T = float;
  using Reg = __m256;
  static constexpr int width = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg load(const T* p) { return _mm256_loadu_ps(p); }
  static Reg load_partial(const T* p, int n) { return _mm256_maskload_ps(p, lanes32(n)); }
  static void store(T* p, Reg v) { _mm256_storeu_ps(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm256_maskstore_ps(p, lanes32(n), v); }
  static Reg broadcast(const T* p) { return _mm256_broadcast_ss(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  // vmaxps returns its second operand when either is NaN: NaN passes through, as in torch.relu.
  static Reg relu(Reg v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }
};

struct F64x4 {
  using T = double;
  using Reg = __m256d;
  static constexpr int width = 4;
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg load(const T* p) { return _mm256_loadu_pd(p); }
  static Reg load_partial(const T* p, int n) { return _mm256_maskload_pd(p, lanes64(n)); }
  static void store(T* p, Reg v) { _mm256_storeu_pd(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm256_maskstore_pd(p, lanes64(n), v); }
  static Reg broadcast(const T* p) { return _mm256_broadcast_sd(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static Reg relu(Reg v) { return _mm256_max_pd(_mm256_setzero_pd(), v); }
};

}  // namespace

// 6 x 16 fp32: 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers.
MicroKernels avx2_microkernels() {
  return {make_microkernel<F32x8, 6, 2>(), make_microkernel<F64x4, 6, 2>()};
}

}  // namespace fusedmlp::cpu
