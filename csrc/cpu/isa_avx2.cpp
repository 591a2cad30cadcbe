// AVX2 + FMA micro-kernels (Haswell and later, AMD Zen). Compiled for AVX2 only here.
// GCC: the target pragma covers everything below. clang has no `#pragma GCC target`; it
// pushes the same target attribute onto every function below (popped at the end).
#if defined(__clang__)
#include <immintrin.h>
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
// GCC notes that passing AVX registers by value changes the psABI. Every function here
// that does has internal linkage (anonymous namespace), so no caller in another unit, built
// for another ISA, can disagree on it.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <immintrin.h>
#endif

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

struct F64x4;

struct F32x8 {
  using T = float;
  using Mask = __m256;
  using Wide = F64x4;
  using Reg = __m256;
  static constexpr int width = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg load(const T* p) { return _mm256_loadu_ps(p); }
  static Reg load_partial(const T* p, int n) { return _mm256_maskload_ps(p, lanes32(n)); }
  static void store(T* p, Reg v) { _mm256_storeu_ps(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm256_maskstore_ps(p, lanes32(n), v); }
  static Reg broadcast(const T* p) { return _mm256_broadcast_ss(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg set1(T v) { return _mm256_set1_ps(v); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static Reg div(Reg a, Reg b) { return _mm256_div_ps(a, b); }
  static Reg min(Reg a, Reg b) { return _mm256_min_ps(a, b); }
  static Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static Mask le(Reg a, Reg b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
  static Mask lt(Reg a, Reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static Mask gt(Reg a, Reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static Mask unord(Reg a, Reg b) { return _mm256_cmp_ps(a, b, _CMP_UNORD_Q); }
  static Reg select(Mask m, Reg a, Reg b) { return _mm256_blendv_ps(b, a, m); }
  static inline void widen(Reg v, __m256d& lo, __m256d& hi);
  static inline Reg narrow(__m256d lo, __m256d hi);
  static void sum4(const Reg r[4], T out[4]) {
    // Two rounds of pairwise adds leave the four half-sums per 128-bit lane; add the lanes.
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(r[0], r[1]), _mm256_hadd_ps(r[2], r[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
  }
};

struct F64x4 {
  using T = double;
  using Reg = __m256d;
  using Mask = __m256d;
  static constexpr int width = 4;
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg load(const T* p) { return _mm256_loadu_pd(p); }
  static Reg load_partial(const T* p, int n) { return _mm256_maskload_pd(p, lanes64(n)); }
  static void store(T* p, Reg v) { _mm256_storeu_pd(p, v); }
  static void store_partial(T* p, Reg v, int n) { _mm256_maskstore_pd(p, lanes64(n), v); }
  static Reg broadcast(const T* p) { return _mm256_broadcast_sd(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static Reg set1(T v) { return _mm256_set1_pd(v); }
  static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
  static Reg sub(Reg a, Reg b) { return _mm256_sub_pd(a, b); }
  static Reg mul(Reg a, Reg b) { return _mm256_mul_pd(a, b); }
  static Reg div(Reg a, Reg b) { return _mm256_div_pd(a, b); }
  static Reg min(Reg a, Reg b) { return _mm256_min_pd(a, b); }
  static Reg max(Reg a, Reg b) { return _mm256_max_pd(a, b); }
  static Mask le(Reg a, Reg b) { return _mm256_cmp_pd(a, b, _CMP_LE_OQ); }
  static Mask lt(Reg a, Reg b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
  static Mask gt(Reg a, Reg b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
  static Mask unord(Reg a, Reg b) { return _mm256_cmp_pd(a, b, _CMP_UNORD_Q); }
  static Reg select(Mask m, Reg a, Reg b) { return _mm256_blendv_pd(b, a, m); }
  static Reg round(Reg v) {
    return _mm256_round_pd(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // r * 2^n: n's exponent bits built directly (n integral, |n| <= 1022).
  static Reg scale2(Reg r, Reg n) {
    const __m256i e = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)),
                                       _mm256_set1_epi64x(1023));
    return _mm256_mul_pd(r, _mm256_castsi256_pd(_mm256_slli_epi64(e, 52)));
  }
  static void sum4(const Reg r[4], T out[4]) {
    const __m256d s01 = _mm256_hadd_pd(r[0], r[1]);  // r0 01, r1 01, r0 23, r1 23
    const __m256d s23 = _mm256_hadd_pd(r[2], r[3]);
    _mm256_storeu_pd(out, _mm256_add_pd(_mm256_permute2f128_pd(s01, s23, 0x20),
                                        _mm256_permute2f128_pd(s01, s23, 0x31)));
  }
};

void F32x8::widen(Reg v, __m256d& lo, __m256d& hi) {
  lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
  hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}
F32x8::Reg F32x8::narrow(__m256d lo, __m256d hi) {
  return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

// Transposes the 8 x 8 float tile r[0..7] (rows) in registers: r[p][j] becomes r[j][p].
inline void transpose_regs(__m256 r[8]) {
  __m256 t[8];
  for (int j = 0; j < 8; j += 2) {  // interleave row pairs
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  __m256 q[8];
  for (int h = 0; h < 8; h += 4) {  // 4 x 4 blocks within each 128-bit lane
    q[h] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    q[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    q[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    q[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int p = 0; p < 4; ++p) {  // swap the 128-bit lanes between the two halves
    r[p] = _mm256_permute2f128_ps(q[p], q[p + 4], 0x20);
    r[p + 4] = _mm256_permute2f128_ps(q[p], q[p + 4], 0x31);
  }
}

// Transposes the 4 x 4 double tile r[0..3] in registers: r[p][j] becomes r[j][p].
inline void transpose_regs(__m256d r[4]) {
  __m256d t[4];
  for (int j = 0; j < 4; j += 2) {
    t[j] = _mm256_unpacklo_pd(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_pd(r[j], r[j + 1]);
  }
  for (int p = 0; p < 2; ++p) {
    r[p] = _mm256_permute2f128_pd(t[p], t[p + 2], 0x20);
    r[p + 2] = _mm256_permute2f128_pd(t[p], t[p + 2], 0x31);
  }
}

// dst[p * dst_ld + j] = src[j * src_ld + p] for a V::width x V::width tile (MicroKernel::
// transpose, used to pack B = W^T).
template <class V>
void transpose_tile(const typename V::T* src, int64_t src_ld, typename V::T* dst,
                    int64_t dst_ld) {
  typename V::Reg r[V::width];
  for (int j = 0; j < V::width; ++j) r[j] = V::load(src + j * src_ld);
  transpose_regs(r);
  for (int p = 0; p < V::width; ++p) V::store(dst + p * dst_ld, r[p]);
}

// The panels of the fp32 and fp64 kernels have 6 rows (their MR).
constexpr int kPanelRows = 6;

// The SIMD packers below take the activation as a template parameter A (the derivative
// applied to grad_y as it is packed, activation.h's grad); with_activation
// (microkernel.h) is the run-time switch to them.

// pack_rows for columns [p, kc) one value at a time (what the 8- or 4-wide steps leave).
template <class A, typename T>
void pack_rows_rest(const T* a, int64_t lda, const SavedOperand<T>& saved, int rows, int64_t p,
                    int64_t kc, T* dst) {
  for (; p < kc; ++p) {
    T* out = dst + p * kPanelRows;
    for (int i = 0; i < kPanelRows; ++i) {
      const T v = i < rows ? a[i * lda + p] : T(0);
      out[i] = i < rows && saved.data
                   ? grad_scalar<A>(v, saved.data[i * saved.ld + p], saved.slope)
                   : v;
    }
  }
}

// MicroKernel::pack_rows for the 6 x 16 kernel: 8 columns of the (derived) rows at a time
// are transposed in registers and stored as 8 panel rows of 6 (4 + 2 floats), instead of
// 48 scalar stores 24 bytes apart.
template <class A>
void pack_rows_6_as(const SavedOperand<float>& saved, const float* a, int64_t lda, int rows,
                    int64_t kc, float* dst) {
  const __m256 zero = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= kc; p += 8) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) {
      if (i >= rows) {
        r[i] = zero;
        continue;
      }
      r[i] = _mm256_loadu_ps(a + i * lda + p);
      if (saved.data)
        r[i] = grad_vec<F32x8, A>(r[i], _mm256_loadu_ps(saved.data + i * saved.ld + p),
                                  saved.slope);
    }
    transpose_regs(r);
    for (int q = 0; q < 8; ++q) {
      float* out = dst + (p + q) * kPanelRows;
      _mm_storeu_ps(out, _mm256_castps256_ps128(r[q]));
      _mm_storel_pi(reinterpret_cast<__m64*>(out + 4), _mm256_extractf128_ps(r[q], 1));
    }
  }
  pack_rows_rest<A>(a, lda, saved, rows, p, kc, dst);
}

void pack_rows_6(const float* a, int64_t lda, SavedOperand<float> saved, int rows, int64_t kc,
                 float* dst) {
  with_activation(saved, [&](auto act) {
    pack_rows_6_as<decltype(act)>(saved, a, lda, rows, kc, dst);
  });
}

// MicroKernel::pack_cols for the 6 x 16 kernel: each column of the panel is one
// contiguous run of A^T, loaded (masked to `rows` lanes), selected and stored at once.
template <class A>
void pack_cols_6_as(const SavedOperand<float>& saved, const float* a, int64_t lda, int rows,
                    int64_t kc, float* dst, float* sums) {
  const __m256i valid = lanes32(rows);
  __m256 sum = _mm256_maskload_ps(sums, valid);
  for (int64_t p = 0; p < kc; ++p) {
    __m256 v = _mm256_maskload_ps(a + p * lda, valid);
    if (saved.data)
      v = grad_vec<F32x8, A>(v, _mm256_maskload_ps(saved.data + p * saved.ld, valid),
                             saved.slope);
    sum = _mm256_add_ps(sum, v);
    float* out = dst + p * kPanelRows;
    _mm_storeu_ps(out, _mm256_castps256_ps128(v));
    _mm_storel_pi(reinterpret_cast<__m64*>(out + 4), _mm256_extractf128_ps(v, 1));
  }
  _mm256_maskstore_ps(sums, valid, sum);
}

void pack_cols_6(const float* a, int64_t lda, SavedOperand<float> saved, int rows, int64_t kc,
                 float* dst, float* sums) {
  with_activation(saved, [&](auto act) {
    pack_cols_6_as<decltype(act)>(saved, a, lda, rows, kc, dst, sums);
  });
}


// pack_rows for fp64: 4 columns at a time, rows 0-3 and 4-5 (with two zero rows)
// transposed as two 4 x 4 tiles and stored as 4 panel rows of 4 + 2 doubles.
template <class A>
void pack_rows_6_f64_as(const SavedOperand<double>& saved, const double* a, int64_t lda,
                        int rows, int64_t kc, double* dst) {
  int64_t p = 0;
  for (; p + 4 <= kc; p += 4) {
    __m256d r[8];
    for (int i = 0; i < 8; ++i) {
      r[i] = _mm256_setzero_pd();
      if (i >= rows) continue;
      r[i] = _mm256_loadu_pd(a + i * lda + p);
      if (saved.data)
        r[i] = grad_vec<F64x4, A>(r[i], _mm256_loadu_pd(saved.data + i * saved.ld + p),
                                  saved.slope);
    }
    transpose_regs(r);
    transpose_regs(r + 4);
    for (int q = 0; q < 4; ++q) {
      double* out = dst + (p + q) * kPanelRows;
      _mm256_storeu_pd(out, r[q]);
      _mm_storeu_pd(out + 4, _mm256_castpd256_pd128(r[4 + q]));
    }
  }
  pack_rows_rest<A>(a, lda, saved, rows, p, kc, dst);
}

void pack_rows_6_f64(const double* a, int64_t lda, SavedOperand<double> saved, int rows,
                     int64_t kc, double* dst) {
  with_activation(saved, [&](auto act) {
    pack_rows_6_f64_as<decltype(act)>(saved, a, lda, rows, kc, dst);
  });
}

// pack_cols for fp64: each panel column is 6 contiguous doubles of A^T, loaded as 4 + 2
// masked lanes (masked-off lanes are never read), with the row sums kept per lane.
template <class A>
void pack_cols_6_f64_as(const SavedOperand<double>& saved, const double* a, int64_t lda,
                        int rows, int64_t kc, double* dst, double* sums) {
  const __m256i valid_lo = lanes64(rows), valid_hi = lanes64(rows - 4);
  __m256d sum_lo = _mm256_maskload_pd(sums, valid_lo);
  __m256d sum_hi = _mm256_maskload_pd(sums + 4, valid_hi);
  for (int64_t p = 0; p < kc; ++p) {
    __m256d lo = _mm256_maskload_pd(a + p * lda, valid_lo);
    __m256d hi = _mm256_maskload_pd(a + p * lda + 4, valid_hi);
    if (saved.data) {
      const double* s = saved.data + p * saved.ld;
      lo = grad_vec<F64x4, A>(lo, _mm256_maskload_pd(s, valid_lo), saved.slope);
      hi = grad_vec<F64x4, A>(hi, _mm256_maskload_pd(s + 4, valid_hi), saved.slope);
    }
    sum_lo = _mm256_add_pd(sum_lo, lo);
    sum_hi = _mm256_add_pd(sum_hi, hi);
    double* out = dst + p * kPanelRows;
    _mm256_storeu_pd(out, lo);
    _mm_storeu_pd(out + 4, _mm256_castpd256_pd128(hi));
  }
  _mm256_maskstore_pd(sums, valid_lo, sum_lo);
  _mm256_maskstore_pd(sums + 4, valid_hi, sum_hi);
}

void pack_cols_6_f64(const double* a, int64_t lda, SavedOperand<double> saved, int rows,
                     int64_t kc, double* dst, double* sums) {
  with_activation(saved, [&](auto act) {
    pack_cols_6_f64_as<decltype(act)>(saved, a, lda, rows, kc, dst, sums);
  });
}

}  // namespace

// 6 x 16 fp32: 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers.
// Dot-product 3 x 4: 12 accumulators + 3 A vectors + 1 B vector = 16.
MicroKernels avx2_microkernels() {
  MicroKernels k{make_microkernel<F32x8, kPanelRows, 2, 3>(),
                 make_microkernel<F64x4, kPanelRows, 2, 3>()};
  k.f32.transpose_tile = 8;
  k.f32.transpose = &transpose_tile<F32x8>;
  k.f32.pack_rows = &pack_rows_6;
  k.f32.pack_cols = &pack_cols_6;
  k.f64.transpose_tile = 4;
  k.f64.transpose = &transpose_tile<F64x4>;
  k.f64.pack_rows = &pack_rows_6_f64;
  k.f64.pack_cols = &pack_cols_6_f64;
  return k;
}

}  // namespace fusedmlp::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
