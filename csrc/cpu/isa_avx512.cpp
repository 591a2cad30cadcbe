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
// GCC notes that passing AVX-512 registers by value changes the psABI. Every function here
// that does has internal linkage (anonymous namespace), so no caller in another unit, built
// for another ISA, can disagree on it.
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12's avx512fintrin.h initializes its "undefined" registers from themselves, which
// -Wall reports as (maybe) uninitialized some 540 times in this unit. The warnings are
// located in that header, so ignoring them around its #include covers only its lines.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
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
  static Mask lanes(int n) { return lanes16(n); }
  static Reg load_masked(Mask m, const T* p) { return _mm512_maskz_loadu_ps(m, p); }
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
  static Mask lanes(int n) { return lanes8(n); }
  static Reg load_masked(Mask m, const T* p) { return _mm512_maskz_loadu_pd(m, p); }
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

// MicroKernel::pack_cols for the 8-row panels (A column-major: g^T in grad_w = g^T x):
// panel column p is one contiguous run of `rows` values, loaded under the lane mask (the
// other lanes read as 0), derived from the saved tensor (grad_vec, activation.h's grad)
// when there is one, added to the row sums lane by lane in ascending p as the portable
// loop does, and stored as one 8-value panel row. V: F32x16 or F64x8.
template <class V, class A>
void pack_cols_8_as(const SavedOperand<typename V::T>& saved, const typename V::T* a,
                    int64_t lda, int rows, int64_t kc, typename V::T* dst,
                    typename V::T* sums) {
  const typename V::Mask valid = V::lanes(rows);
  typename V::Reg sum = V::load_masked(valid, sums);
  for (int64_t p = 0; p < kc; ++p) {
    typename V::Reg v = V::load_masked(valid, a + p * lda);
    if (saved.data) {
      v = grad_vec<V, A>(v, V::load_masked(valid, saved.data + p * saved.ld), saved.slope);
      v = V::select(valid, v, V::zero());  // the panel's rows past `rows` stay 0
    }
    sum = V::add(sum, v);
    V::store_partial(dst + p * 8, v, 8);
  }
  V::store_partial(sums, sum, rows);
}

template <class V>
void pack_cols_8(const typename V::T* a, int64_t lda, SavedOperand<typename V::T> saved,
                 int rows, int64_t kc, typename V::T* dst, typename V::T* sums) {
  with_activation(saved, [&](auto act) {
    pack_cols_8_as<V, decltype(act)>(saved, a, lda, rows, kc, dst, sums);
  });
}

// MicroKernel::pack_rows for the 8-row fp32 panels (A row-major: the derived grad_y of
// grad_x = g W): 16 columns of the 8 rows at a time are loaded under the lane mask,
// derived (grad_vec) when there is a saved tensor, and transposed in registers (unpack and
// shuffle within 128-bit lanes give each lane 4 rows of one column), then stored as 16
// panel rows of 4 + 4 floats; the last < 16 columns go the same way under a lane mask.
template <class A>
void pack_rows_8_as(const SavedOperand<float>& saved, const float* a, int64_t lda, int rows,
                    int64_t kc, float* dst) {
  for (int64_t p = 0; p < kc; p += 16) {
    // No std::min: this unit must not instantiate library templates (see isa.h).
    const int cols = kc - p < 16 ? static_cast<int>(kc - p) : 16;
    const __mmask16 valid = lanes16(cols);
    __m512 r[8];
    for (int i = 0; i < 8; ++i) {
      if (i >= rows) {
        r[i] = _mm512_setzero_ps();
        continue;
      }
      r[i] = _mm512_maskz_loadu_ps(valid, a + i * lda + p);
      if (saved.data)
        r[i] = grad_vec<F32x16, A>(
            r[i], _mm512_maskz_loadu_ps(valid, saved.data + i * saved.ld + p), saved.slope);
    }
    __m512 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {  // per lane: rows i, i+1 of columns 4L, 4L+1 / 4L+2, 4L+3
      t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int h = 0; h < 8; h += 4) {  // per lane: rows h..h+3 of column 4L + j in u[h + j]
      u[h] = _mm512_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[h + 1] = _mm512_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
      u[h + 2] = _mm512_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
      u[h + 3] = _mm512_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    float* out = dst + p * 8;
    // Only the first `cols` columns are stored (the masked-off ones never are).
    auto store_column = [&](int c, __m128 rows_0_3, __m128 rows_4_7) {
      if (c >= cols) return;
      _mm_storeu_ps(out + c * 8, rows_0_3);
      _mm_storeu_ps(out + c * 8 + 4, rows_4_7);
    };
    for (int j = 0; j < 4; ++j) {
      store_column(j, _mm512_extractf32x4_ps(u[j], 0), _mm512_extractf32x4_ps(u[4 + j], 0));
      store_column(4 + j, _mm512_extractf32x4_ps(u[j], 1), _mm512_extractf32x4_ps(u[4 + j], 1));
      store_column(8 + j, _mm512_extractf32x4_ps(u[j], 2), _mm512_extractf32x4_ps(u[4 + j], 2));
      store_column(12 + j, _mm512_extractf32x4_ps(u[j], 3),
                   _mm512_extractf32x4_ps(u[4 + j], 3));
    }
  }
}

void pack_rows_8(const float* a, int64_t lda, SavedOperand<float> saved, int rows, int64_t kc,
                 float* dst) {
  with_activation(saved, [&](auto act) {
    pack_rows_8_as<decltype(act)>(saved, a, lda, rows, kc, dst);
  });
}

}  // namespace

// 8 x 32 fp32: 16 accumulators + 2 B vectors of the 32 zmm registers; A is broadcast
// straight from memory (embedded broadcast), 16 FMAs per 10 loads.
// Dot-product 4 x 4: 16 accumulators + 4 A vectors + 1 B vector.
// Packing uses the AVX2 transposes (every AVX-512 CPU has AVX2) for B, and masked AVX-512
// loads (derived from the saved tensor for any activation) for the A panels; fp64's
// row-major A panels are packed by the portable loop.
MicroKernels avx512_microkernels() {
  MicroKernels k{make_microkernel<F32x16, 8, 2, 4>(), make_microkernel<F64x8, 8, 2, 4>()};
  const MicroKernels avx2 = avx2_microkernels();
  k.f32.transpose_tile = avx2.f32.transpose_tile;
  k.f32.transpose = avx2.f32.transpose;
  k.f64.transpose_tile = avx2.f64.transpose_tile;
  k.f64.transpose = avx2.f64.transpose;
  k.f32.pack_rows = &pack_rows_8;
  // The 8 x 32 panels overtake the 4 x 4 dot tiles from ~64 rows on (Zen 5, fp32 and fp64:
  // 128 x 784 -> 128 121 vs 132 us, 256 x 256 -> 256 148 vs 209 us; 32 x 1024 -> 1024
  // still 373 vs 555 us on the dot tiles).
  k.f32.dot_max_rows = k.f64.dot_max_rows = 64;
  k.f32.pack_cols = &pack_cols_8<F32x16>;
  k.f64.pack_cols = &pack_cols_8<F64x8>;
  return k;
}

}  // namespace fusedmlp::cpu

#if defined(__clang__)
#pragma clang attribute pop
#endif
