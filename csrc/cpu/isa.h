// Register micro-kernels per instruction set, and which one runs.
//
// This header is included by the ISA translation units (isa_*.cpp), which are compiled
// with `#pragma GCC target(...)`. It must stay free of inline code: an inline function
// emitted by an AVX-512 unit could be picked by the linker for every caller and crash a
// CPU without AVX-512.
#pragma once

#include <cstdint>

namespace fusedmlp::cpu {

// Columns of C per dot-product tile (rows of B), for every ISA.
constexpr int kDotNR = 4;

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2 };

// Computes one MR x NR tile of C:
//   C[0:m_valid, 0:n_valid] = epilogue(init + A_panel · B_panel)
// A(i, p) = a[i * a_row_stride + p * a_k_stride]: a packed panel (strides 1, MR) or, when
// A is already K-contiguous, A itself (strides lda, 1; rows >= m_valid are never read).
// b: kc x NR, b[p * ldb + j]: a packed panel (ldb = NR, zero padded) or, for a full
// panel of a row-major B, B itself (ldb = its row stride).
// init is the tile of C itself when `accumulate` (a later K block), else `bias` (NR
// values, zero padded; may be null for zero). `relu` applies max(0, v) keeping NaN.
template <typename T>
struct MicroKernel {
  int mr;
  int nr;
  void (*run)(int64_t kc, const T* a, int64_t a_row_stride, int64_t a_k_stride, const T* b,
              int64_t ldb, T* c, int64_t ldc, int m_valid, int n_valid, const T* bias,
              bool accumulate, bool relu);
  // Packing helper for B = W^T: transposes a tile x tile block,
  // dst[p * dst_ld + j] = src[j * src_ld + p]. Null (tile 0) where plain C++ does as well.
  int transpose_tile;
  void (*transpose)(const T* src, int64_t src_ld, T* dst, int64_t dst_ld);
  // The dot-product kernel for C = A · B^T when A (m x k) and B (n x k) are both
  // K-contiguous, as x and W are in the forward pass: one dot_mr x kDotNR tile of C from
  // A rows a[i * lda + p] and B rows b[j * ldb + p], nothing packed. Same init/epilogue
  // contract as `run` (bias: n_valid values).
  // Packs `rows` (<= mr) rows of a row-major A into one MR-row panel, k-major, rows past
  // `rows` zero: dst[p * mr + i] = A(i, p), or 0 where mask(i, p) <= 0 when mask is given
  // (the ReLU mask of grad_y in grad_x = g · W). Null where the portable loop is used.
  void (*pack_rows)(const T* a, int64_t lda, const T* mask, int64_t ldm, int rows, int64_t kc,
                    T* dst);
  // The same for a column-major A (A(i, p) = a[p * lda + i], as g^T in grad_w = g^T · x),
  // also adding each row's (masked) values to sums[i] in ascending p, as the portable
  // loop does: the same grad_b bits either way.
  void (*pack_cols)(const T* a, int64_t lda, const T* mask, int64_t ldm, int rows, int64_t kc,
                    T* dst, T* sums);
  int dot_mr;
  void (*dot)(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
              int64_t ldc, int m_valid, int n_valid, const T* bias, bool accumulate,
              bool relu);
  // Runs `rounds` of 12 independent vector FMA chains; returns the flops done.
  double (*fma_probe)(int64_t rounds);
  // Batches up to which x · W^T runs faster on `dot` than on packed panels (measured per
  // ISA; see prefers_dot in blocking.h).
  int dot_max_rows = 512;
};

struct MicroKernels {
  MicroKernel<float> f32;
  MicroKernel<double> f64;
};

MicroKernels generic_microkernels();
MicroKernels avx2_microkernels();
MicroKernels avx512_microkernels();

// The best ISA this CPU (and OS) supports.
Isa best_isa();
// The ISA the kernels use now: best_isa(), lowered by FUSEDMLP_CPU_ISA at start-up or by
// set_active_isa() (tests run every path on one machine that way).
Isa active_isa();
// Throws std::invalid_argument when the CPU cannot run `isa`.
void set_active_isa(Isa isa);
const char* isa_name(Isa isa);
// Parses "generic" / "avx2" / "avx512"; throws std::invalid_argument otherwise.
Isa parse_isa(const char* name);

}  // namespace fusedmlp::cpu
