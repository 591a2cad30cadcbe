// AVX-512 micro-kernels. Only this unit is compiled for AVX-512 (see isa.h for why it
// includes nothing but intrinsics and our plain headers); it runs only when best_isa()
// says the CPU has AVX-512F.
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>

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
  using Mask = __mmask16;
  static constexpr int width = 16;
  static Mask lanes(int n) { return lanes16(n); }
  static Reg load_masked(Mask m, const T* p) { return _mm512_maskz_loadu_ps(m, p); }
  // keep(y) = !(y <= 0) per lane (NLE_UQ is true for NaN too, as threshold_backward is).
  static Mask keep(Reg y) { return _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_NLE_UQ); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
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
  using Mask = __mmask8;
  static constexpr int width = 8;
  static Mask lanes(int n) { return lanes8(n); }
  static Reg load_masked(Mask m, const T* p) { return _mm512_maskz_loadu_pd(m, p); }
  static Mask keep(Reg y) { return _mm512_cmp_pd_mask(y, _mm512_setzero_pd(), _CMP_NLE_UQ); }
  static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
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

// MicroKernel::pack_cols for the 8-row panels (A column-major: g^T in grad_w = g^T x):
// panel column p is one contiguous run of `rows` values, loaded only where the ReLU mask
// keeps them (the other lanes read as 0), added to the row sums lane by lane in ascending
// p as the portable loop does, and stored as one 8-value panel row. V: F32x16 or F64x8.
template <class V>
void pack_cols_8(const typename V::T* a, int64_t lda, const typename V::T* mask, int64_t ldm,
                 int rows, int64_t kc, typename V::T* dst, typename V::T* sums) {
  const typename V::Mask valid = V::lanes(rows);
  typename V::Reg sum = V::load_masked(valid, sums);
  for (int64_t p = 0; p < kc; ++p) {
    const typename V::Mask kept =
        mask ? valid & V::keep(V::load_masked(valid, mask + p * ldm)) : valid;
    const typename V::Reg v = V::load_masked(kept, a + p * lda);
    sum = V::add(sum, v);
    V::store_partial(dst + p * 8, v, 8);
  }
  V::store_partial(sums, sum, rows);
}

// MicroKernel::pack_rows for the 8-row fp32 panels (A row-major: the masked grad_y in
// grad_x = g W): 16 columns of the 8 rows at a time are transposed in registers (unpack
// and shuffle within 128-bit lanes give each lane 4 rows of one column) and stored as 16
// panel rows of 4 + 4 floats; the last < 16 columns go the same way under a lane mask.
void pack_rows_8(const float* a, int64_t lda, const float* mask, int64_t ldm, int rows,
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
      const __mmask16 kept =
          mask ? valid & F32x16::keep(_mm512_maskz_loadu_ps(valid, mask + i * ldm + p)) : valid;
      r[i] = _mm512_maskz_loadu_ps(kept, a + i * lda + p);
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

}  // namespace

// 8 x 32 fp32: 16 accumulators + 2 B vectors of the 32 zmm registers; A is broadcast
// straight from memory (embedded broadcast), 16 FMAs per 10 loads.
// Dot-product 4 x 4: 16 accumulators + 4 A vectors + 1 B vector.
// Packing uses the AVX2 transposes (every AVX-512 CPU has AVX2) for B, and masked AVX-512
// loads (the ReLU mask as a k-mask) for the A panels; fp64's row-major A panels are
// packed by the portable loop.
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
