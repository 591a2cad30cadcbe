// Register micro-kernels per instruction set, and which one runs.
//
// This header is included by the ISA translation units (isa_*.cpp), which are compiled
// with `#pragma GCC target(...)`. It must stay free of inline code: an inline function
// emitted by an AVX-512 unit could be picked by the linker for every caller and crash a
// CPU without AVX-512.
#pragma once

#include <cstdint>

#include "activation.h"

namespace fusedmlp::cpu {

// Columns of C per dot-product tile (rows of B), for every ISA.
constexpr int kDotNR = 4;

// Not a ladder: x86 has avx2 and avx512, 64-bit Arm has neon, and every CPU has generic.
// Which ones a machine can run is isa_supported(), never a comparison of these values.
enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, neon = 3 };

// The forward epilogue of a tile, applied once, on its last K block: C = act(v), and
// v itself stored at `pre` (same row stride as C) when pre is set. Plain aggregates
// (no member initialisers, so no inline constructor; value-initialise with {}).
template <typename T>
struct TileEpilogue {
  Activation act;
  T slope;
  T* pre;
};

// The backward's A load step: A'(i, p) = A(i, p) * act'(saved(i, p)) (activation.h's
// grad); saved == nullptr leaves A as it is.
template <typename T>
struct SavedOperand {
  const T* data;
  int64_t ld;
  Activation act;
  T slope;
};

// Computes one MR x NR tile of C:
//   C[0:m_valid, 0:n_valid] = epilogue(init + A_panel · B_panel)
// A(i, p) = a[i * a_row_stride + p * a_k_stride]: a packed panel (strides 1, MR) or, when
// A is already K-contiguous, A itself (strides lda, 1; rows >= m_valid are never read).
// b: kc x NR, b[p * ldb + j]: a packed panel (ldb = NR, zero padded) or, for a full
// panel of a row-major B, B itself (ldb = its row stride).
// init is the tile of C itself when `accumulate` (a later K block), else `bias` (NR
// values, zero padded; may be null for zero). `epilogue` (the last K block only; null:
// none) applies the activation and stores the pre-activation; pre points at the tile
// like c. A pointer, not a value: a 24-byte argument would be built on the stack at every
// tile.
template <typename T>
struct MicroKernel {
  int mr;
  int nr;
  void (*run)(int64_t kc, const T* a, int64_t a_row_stride, int64_t a_k_stride, const T* b,
              int64_t ldb, T* c, int64_t ldc, int m_valid, int n_valid, const T* bias,
              bool accumulate, const TileEpilogue<T>* epilogue);
  // The same for a whole row panel: C[0:m_valid, 0:n] = init + A_panel · B, A as for
  // `run`, B (kc x n) read in place at any row stride ldb (B(p, j) = b[p * ldb + j]), n
  // any (the last vector masked: nothing past column n is read or written); bias: n
  // values or null. No epilogue (the caller applies `activate` to the finished panel).
  // Each element gets the same FMA sequence as from `run`, so the same bits.
  void (*rows)(int64_t kc, const T* a, int64_t a_row_stride, int64_t a_k_stride, const T* b,
               int64_t ldb, T* c, int64_t ldc, int m_valid, int64_t n, const T* bias,
               bool accumulate);
  // grad_x and grad_w of rows = 1 or 2 rows of the backward in one pass over W (gemm.cpp's
  // backward_sweep): for each of W's n_out rows, gx[r, :] += d[r, n] W[n, :] and
  // gw[n, :] = sum_r d[r, n] x[r, :], over `cols` columns (any; the last vector masked);
  // d (rows x n_out, row stride ldd) is g', already derived. Each element gets `rows`'
  // FMA sequence for grad_x and grad_w, so the same bits as the two GEMMs.
  void (*sweep)(int rows, int64_t n_out, int64_t cols, const T* d, int64_t ldd, const T* w,
                int64_t ldw, const T* x, int64_t ldx, T* gx, int64_t ldgx, T* gw,
                int64_t ldgw);
  // Packing helper for B = W^T: transposes a tile x tile block,
  // dst[p * dst_ld + j] = src[j * src_ld + p]. Null (tile 0) where plain C++ does as well.
  int transpose_tile;
  void (*transpose)(const T* src, int64_t src_ld, T* dst, int64_t dst_ld);
  // The dot-product kernel for C = A · B^T when A (m x k) and B (n x k) are both
  // K-contiguous, as x and W are in the forward pass: one dot_mr x kDotNR tile of C from
  // A rows a[i * lda + p] and B rows b[j * ldb + p], nothing packed. Same init/epilogue
  // contract as `run` (bias: n_valid values) but no activation: `activate` applies it to
  // the finished block.
  // Packs `rows` (<= mr) rows of a row-major A into one MR-row panel, k-major, rows past
  // `rows` zero: dst[p * mr + i] = A'(i, p), A' = A times the activation derivative from
  // saved(i, p) = saved.data[i * saved.ld + p] when saved.data is set (grad_y in
  // grad_x = g · W). Null where the portable loop is used.
  void (*pack_rows)(const T* a, int64_t lda, SavedOperand<T> saved, int rows, int64_t kc,
                    T* dst);
  // The same for a column-major A (A(i, p) = a[p * lda + i], saved.data[p * saved.ld + i],
  // as g^T in grad_w = g^T · x), also adding each row's values to sums[i] in ascending p.
  void (*pack_cols)(const T* a, int64_t lda, SavedOperand<T> saved, int rows, int64_t kc,
                    T* dst, T* sums);
  int dot_mr;
  void (*dot)(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
              int64_t ldc, int m_valid, int n_valid, const T* bias, bool accumulate);
  // The forward epilogue on a finished rows x cols block of C (row stride ldc) in place:
  // the dot-product path's, which applies it once per block rather than per 4-column tile.
  void (*activate)(T* c, int64_t ldc, int rows, int cols, TileEpilogue<T> epilogue);
  // out[i] = g[i] * act'(s[i]) (order 1) or g[i] * d act'(s[i]) / ds (order 2), i < count:
  // the backward's derivative computed once where it is too dear to recompute at every
  // load of grad_y, and the double backward's elementwise factors.
  void (*elementwise_grad)(const T* g, const T* s, T* out, int64_t count, Activation act,
                           T slope, int order);
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

// One per ISA source file; setup.py compiles isa_avx*.cpp for x86 only and isa_neon.cpp
// for 64-bit Arm only, so call them through microkernels(isa), which knows the build.
MicroKernels generic_microkernels();
MicroKernels avx2_microkernels();
MicroKernels avx512_microkernels();
MicroKernels neon_microkernels();

// The micro-kernels of `isa`, built once; `isa` must be isa_supported().
const MicroKernels& microkernels(Isa isa);

// Whether this build has kernels for `isa` and this CPU (and OS) can run them.
bool isa_supported(Isa isa);
// The best of the supported ISAs.
Isa best_isa();
// The ISA the kernels use now: best_isa(), lowered by FUSEDMLP_CPU_ISA at start-up or by
// set_active_isa() (tests run every path on one machine that way).
Isa active_isa();
// Throws std::invalid_argument when the CPU cannot run `isa`.
void set_active_isa(Isa isa);
const char* isa_name(Isa isa);
// Parses "generic" / "avx2" / "avx512" / "neon"; throws std::invalid_argument otherwise.
Isa parse_isa(const char* name);

}  // namespace fusedmlp::cpu
