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
  static void sum4(const Reg r[4], T out[4]) {
    // Two rounds of pairwise adds leave the four half-sums per 128-bit lane; add the lanes.
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(r[0], r[1]), _mm256_hadd_ps(r[2], r[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
  }
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
  static void sum4(const Reg r[4], T out[4]) {
    const __m256d s01 = _mm256_hadd_pd(r[0], r[1]);  // r0 01, r1 01, r0 23, r1 23
    const __m256d s23 = _mm256_hadd_pd(r[2], r[3]);
    _mm256_storeu_pd(out, _mm256_add_pd(_mm256_permute2f128_pd(s01, s23, 0x20),
                                        _mm256_permute2f128_pd(s01, s23, 0x31)));
  }
};

// dst[p * dst_ld + j] = src[j * src_ld + p] for an 8 x 8 float tile, in registers.
void transpose_8x8(const float* src, int64_t src_ld, float* dst, int64_t dst_ld) {
  __m256 r[8], t[8];
  for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * src_ld);
  for (int j = 0; j < 8; j += 2) {  // interleave row pairs
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int h = 0; h < 8; h += 4) {  // 4 x 4 blocks within each 128-bit lane
    r[h] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int p = 0; p < 4; ++p) {  // swap the 128-bit lanes between the two halves
    _mm256_storeu_ps(dst + p * dst_ld, _mm256_permute2f128_ps(r[p], r[p + 4], 0x20));
    _mm256_storeu_ps(dst + (p + 4) * dst_ld, _mm256_permute2f128_ps(r[p], r[p + 4], 0x31));
  }
}

// The same for a 4 x 4 double tile.
void transpose_4x4(const double* src, int64_t src_ld, double* dst, int64_t dst_ld) {
  __m256d r[4], t[4];
  for (int j = 0; j < 4; ++j) r[j] = _mm256_loadu_pd(src + j * src_ld);
  for (int j = 0; j < 4; j += 2) {
    t[j] = _mm256_unpacklo_pd(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_pd(r[j], r[j + 1]);
  }
  for (int p = 0; p < 2; ++p) {
    _mm256_storeu_pd(dst + p * dst_ld, _mm256_permute2f128_pd(t[p], t[p + 2], 0x20));
    _mm256_storeu_pd(dst + (p + 2) * dst_ld, _mm256_permute2f128_pd(t[p], t[p + 2], 0x31));
  }
}

}  // namespace

// 6 x 16 fp32: 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers.
// Dot-product 3 x 4: 12 accumulators + 3 A vectors + 1 B vector = 16.
MicroKernels avx2_microkernels() {
  MicroKernels k{make_microkernel<F32x8, 6, 2, 3>(), make_microkernel<F64x4, 6, 2, 3>()};
  k.f32.transpose_tile = 8;
  k.f32.transpose = &transpose_8x8;
  k.f64.transpose_tile = 4;
  k.f64.transpose = &transpose_4x4;
  return k;
}

}  // namespace fusedmlp::cpu
