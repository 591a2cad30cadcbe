// The register micro-kernels, written once over a small vector interface `V`:
//   V::T, V::Reg, V::width, zero(), load(p), load_partial(p, n), store(p, r),
//   store_partial(p, r, n), broadcast(p), fma(a, b, c) = a*b + c,
//   sum4(r, out): out[j] = the sum of the lanes of r[j], j < 4,
// and, for the activations, what vec_activation.h lists.
// Each isa_*.cpp defines its V types under its own `#pragma GCC target` and includes
// this file. Everything here has internal linkage (unnamed namespace) on purpose: every
// ISA unit gets its own copy, so no instruction set leaks into another unit's code.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu/vec_activation.h"

namespace fusedmlp::cpu {
namespace {  // NOLINT: see above

// Stores an MR x NV-vector register tile; edges masked, never written past
// n_valid / m_valid. Always inlined: as a call it would spill the accumulators to memory
// at every tile (measured: ReLU backward +5-10% at 64 rows).
template <class V, int MR, int NV>
__attribute__((always_inline)) inline void store_tile(typename V::T* c, int64_t ldc, int m_valid, int n_valid,
                const typename V::Reg (&acc)[MR][NV]) {
  constexpr int W = V::width;
  if (n_valid == NV * W) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
      if (i < m_valid)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) V::store(c + i * ldc + j * W, acc[i][j]);
  } else {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
      if (i < m_valid)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j)
          V::store_partial(c + i * ldc + j * W, acc[i][j], n_valid - j * W);
  }
}

// The activation on every register of a tile (the switch over activations runs once).
// Kept out of line: its eight bodies would bloat the micro-kernel (called only when there
// is an activation, on the last K block).
template <class V, int MR, int NV>
__attribute__((noinline)) void activate_tile(typename V::Reg (&acc)[MR][NV], Activation act, typename V::T slope) {
  visit_activation(act, [&](auto a) {
    using A = decltype(a);
    if constexpr (!std::is_same_v<A, Act<Activation::identity>>) {
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[i][j] = forward_vec<V, A>(acc[i][j], slope);
    }
  });
}

// C tile = epilogue(init + A_panel · B_panel); MR rows x NV vectors of V::width columns.
template <class V, int MR, int NV>
void microkernel(int64_t kc, const typename V::T* a, int64_t a_row_stride, int64_t a_k_stride,
                 const typename V::T* b, int64_t ldb, typename V::T* c, int64_t ldc, int m_valid,
                 int n_valid, const typename V::T* bias, bool accumulate,
                 const TileEpilogue<typename V::T>* epilogue) {
  if constexpr (MR > 1) {
    // Fewer rows than the tile (a small batch, or A's last rows): run the kernel of exactly
    // m_valid rows, so no FMAs go to rows that are never stored. Each element still sees
    // the same sequence of FMAs, so the bits do not depend on which tile computed it.
    if (m_valid < MR)
      return microkernel<V, MR - 1, NV>(kc, a, a_row_stride, a_k_stride, b, ldb, c, ldc,
                                        m_valid, n_valid, bias, accumulate, epilogue);
  }
  constexpr int W = V::width;
  typename V::Reg acc[MR][NV];
  // Rows past m_valid (an edge tile of unpacked A) re-read the last valid row: never out
  // of bounds, and their results are never stored.
  const typename V::T* a_rows[MR];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) a_rows[i] = a + (i < m_valid ? i : m_valid - 1) * a_row_stride;

  // The accumulators start from the bias (first K block) or from the partial C.
  if (accumulate) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j)
        acc[i][j] = i < m_valid ? V::load_partial(c + i * ldc + j * W, n_valid - j * W)
                                : V::zero();
  } else {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      const typename V::Reg init = bias ? V::load(bias + j * W) : V::zero();
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) acc[i][j] = init;
    }
  }

  for (int64_t p = 0; p < kc; ++p) {
    typename V::Reg bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = V::load(b + p * ldb + j * W);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const typename V::Reg av = V::broadcast(a_rows[i] + p * a_k_stride);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
    }
  }

  // The single store of the tile (and of its pre-activation, when backward needs it).
  if (epilogue) {
    if (epilogue->pre) store_tile<V, MR, NV>(epilogue->pre, ldc, m_valid, n_valid, acc);
    if (epilogue->act != Activation::identity) {
      // Through a copy: passing acc itself to the out-of-line call would keep it in
      // memory on every path (GCC spilled all accumulators after the K loop).
      typename V::Reg tile[MR][NV];
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) tile[i][j] = acc[i][j];
      activate_tile<V, MR, NV>(tile, epilogue->act, epilogue->slope);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[i][j] = tile[i][j];
    }
  }
  store_tile<V, MR, NV>(c, ldc, m_valid, n_valid, acc);
}

// A vector at p, or (Partial) only its first `last` lanes: the masked edge of a row
// that the row kernels below share.
template <class V, bool Partial>
__attribute__((always_inline)) inline typename V::Reg load_edge(const typename V::T* p,
                                                                int last) {
  if constexpr (Partial) return V::load_partial(p, last);
  else return V::load(p);
}
template <class V, bool Partial>
__attribute__((always_inline)) inline void store_edge(typename V::T* p, typename V::Reg v,
                                                      int last) {
  if constexpr (Partial) V::store_partial(p, v, last);
  else V::store(p, v);
}

// One R x NV-vector tile of the row-panel kernel below: the same init, FMA sequence
// (K ascending) and single store per element as microkernel, with B read in place and,
// when Partial (NV == 1 then), only the first `last` lanes of the vector loaded and stored.
template <class V, int R, int NV, bool Partial>
__attribute__((always_inline)) inline void row_tile(
    int64_t kc, const typename V::T* const (&a_rows)[R], int64_t a_k_stride,
    const typename V::T* b, int64_t ldb, typename V::T* c, int64_t ldc, int last,
    const typename V::T* bias, bool accumulate) {
  static_assert(!Partial || NV == 1, "only a one-vector tile is partial");
  constexpr int W = V::width;
  using Reg = typename V::Reg;
  const auto load = [&](const typename V::T* p) { return load_edge<V, Partial>(p, last); };
  Reg acc[R][NV];
  if (accumulate) {
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = load(c + i * ldc + j * W);
  } else {
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      const Reg init = bias ? load(bias + j * W) : V::zero();
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][j] = init;
    }
  }
  for (int64_t p = 0; p < kc; ++p) {
    Reg bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = load(b + p * ldb + j * W);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const Reg av = V::broadcast(a_rows[i] + p * a_k_stride);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) store_edge<V, Partial>(c + i * ldc + j * W, acc[i][j], last);
}

// The register-tile form of MicroKernel::rows (rows_kernel below): a whole row panel,
// C[0:m_valid, 0:n] = init + A_panel · B, with B (kc x n, row stride ldb, any) read in
// place: the full NV-vector tiles, then one-vector tiles, then the masked last vector (no
// edge panel to pack, nothing read past column n).
// The small-K and few-row GEMMs (gemm.cpp) call it once per panel instead of once per
// tile: at K = 1 (grad_w of one row) a tile is a single rank-1 step, and the per-call
// prologue cost more than its FMAs. Exactly m_valid rows are computed, as in microkernel,
// in tiles as wide as the registers of the TOP_MR x TOP_NV tile allow for that many rows
// ((rows + 1) x nv <= (TOP_MR + 1) x TOP_NV: accumulators plus B vectors; at most 8
// vectors): one row of grad_x at 1024 -> 1024 (W from L3) took 58 us with 8 FMA chains
// and 8 lines of each W row per pass, 116 us with 2 (NOTES.md).
template <class V, int MR, int NV, int TOP_MR = MR, int TOP_NV = NV>
void row_panel(int64_t kc, const typename V::T* a, int64_t a_row_stride, int64_t a_k_stride,
               const typename V::T* b, int64_t ldb, typename V::T* c, int64_t ldc, int m_valid,
               int64_t n, const typename V::T* bias, bool accumulate) {
  // Down to 3 rows only: rows_kernel gives 1 and 2 rows to row_stream.
  static_assert(MR >= 3, "row_panel takes 3 rows or more");
  if constexpr (MR > 3) {
    if (m_valid < MR) {
      constexpr int wide = (TOP_MR + 1) * TOP_NV / MR;  // for MR - 1 rows
      constexpr int nv = wide > 8 ? 8 : wide < TOP_NV ? TOP_NV : wide;
      return row_panel<V, MR - 1, nv, TOP_MR, TOP_NV>(kc, a, a_row_stride, a_k_stride, b, ldb,
                                                      c, ldc, m_valid, n, bias, accumulate);
    }
  }
  constexpr int W = V::width;
  const typename V::T* a_rows[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) a_rows[i] = a + i * a_row_stride;
  const auto at = [&](int64_t j) { return bias ? bias + j : nullptr; };
  int64_t j = 0;
  for (; j + NV * W <= n; j += NV * W)
    row_tile<V, MR, NV, false>(kc, a_rows, a_k_stride, b + j, ldb, c + j, ldc, W, at(j),
                               accumulate);
  if constexpr (NV > 1) {
    for (; j + W <= n; j += W)
      row_tile<V, MR, 1, false>(kc, a_rows, a_k_stride, b + j, ldb, c + j, ldc, W, at(j),
                                accumulate);
  }
  if (j < n)
    row_tile<V, MR, 1, true>(kc, a_rows, a_k_stride, b + j, ldb, c + j, ldc,
                             static_cast<int>(n - j), at(j), accumulate);
}

// Two more forms of MicroKernel::rows for the shapes where row_panel's register tiles
// lose (rows_kernel below picks). Both keep row_tile's sequence for every element of C
// (init, then one FMA per K step in ascending order), so every path gives the same bits.

// C[0:R, 0:n] = init + A · B for R <= 2 rows of A (grad_x of a batch of 1 or 2), K
// outer: each pass adds 4 rows of B to the R rows of C, which stay in L1 (kStreamCols
// columns at a time). B is read front to back, one sequential stream for the prefetcher,
// where the tiles walk all K rows for every 128 columns. grad_x at 1 x 784 -> 128:
// 3.7 -> 3.3 us; at 1 x 1024 -> 1024: 51 -> 47 us (benchmarks/NOTES.md).
constexpr int64_t kStreamCols = 1024;  // 4 KiB of fp32 per row of C (8 KiB fp64)

template <class V, int R, int S, bool Partial>
__attribute__((always_inline)) inline void stream_steps(const typename V::Reg (&av)[R][S],
                                                        const typename V::T* b, int64_t ldb,
                                                        typename V::T* c, int64_t ldc,
                                                        int last) {
  using Reg = typename V::Reg;
  Reg bv[S];
#pragma GCC unroll 4
  for (int s = 0; s < S; ++s) bv[s] = load_edge<V, Partial>(b + s * ldb, last);
#pragma GCC unroll 2
  for (int r = 0; r < R; ++r) {
    Reg acc = load_edge<V, Partial>(c + r * ldc, last);
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) acc = V::fma(av[r][s], bv[s], acc);
    store_edge<V, Partial>(c + r * ldc, acc, last);
  }
}

template <class V, int R>
void row_stream(int64_t kc, const typename V::T* const (&a_rows)[R], int64_t a_k_stride,
                const typename V::T* b, int64_t ldb, typename V::T* c, int64_t ldc, int64_t n,
                const typename V::T* bias, bool accumulate) {
  constexpr int W = V::width;
  for (int64_t j0 = 0; j0 < n; j0 += kStreamCols) {
    const int64_t cols = n - j0 < kStreamCols ? n - j0 : kStreamCols;
    const int64_t full = cols / W * W;
    const int last = static_cast<int>(cols - full);
    typename V::T* cj = c + j0;
    if (!accumulate) {  // C starts from the bias (or zero), as row_tile's accumulators do
      for (int64_t j = 0; j < cols; j += W) {
        const int valid = j < full ? W : last;
        const typename V::Reg init =
            bias ? V::load_partial(bias + j0 + j, valid) : V::zero();
#pragma GCC unroll 2
        for (int r = 0; r < R; ++r) V::store_partial(cj + r * ldc + j, init, valid);
      }
    }
    const auto pass = [&](auto steps, int64_t p) {
      constexpr int S = decltype(steps)::value;
      typename V::Reg av[R][S];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int s = 0; s < S; ++s)
          av[r][s] = V::broadcast(a_rows[r] + (p + s) * a_k_stride);
      const typename V::T* bp = b + p * ldb + j0;
      for (int64_t j = 0; j < full; j += W)
        stream_steps<V, R, S, false>(av, bp + j, ldb, cj + j, ldc, W);
      if (last) stream_steps<V, R, S, true>(av, bp + full, ldb, cj + full, ldc, last);
    };
    int64_t p = 0;
    for (; p + 4 <= kc; p += 4) pass(std::integral_constant<int, 4>{}, p);
    for (; p < kc; ++p) pass(std::integral_constant<int, 1>{}, p);
  }
}

// C[0:m_valid, 0:n] = init + A · B for K = 1 or 2 (grad_w of a batch of 1 or 2: K rows
// of x, in L1), one row of C after the other, each written front to back, where the
// MR-row tiles write 8 rows 128 bytes at a time and spill their row pointers. grad_w at
// 1 x 784 -> 128: 4.0 -> 3.7 us; at K = 3 and 4 the tiles' reuse of B wins (+2%, +12%).
template <class V, int K>
void row_sweep(const typename V::T* a, int64_t a_row_stride, int64_t a_k_stride,
               const typename V::T* b, int64_t ldb, typename V::T* c, int64_t ldc,
               int m_valid, int64_t n, const typename V::T* bias, bool accumulate) {
  constexpr int W = V::width, NV = 4;
  using Reg = typename V::Reg;
  const int64_t full = n / W * W;
  const int last = static_cast<int>(n - full);
  const auto init = [&](const typename V::T* cr, int64_t j, int valid) {
    return accumulate ? V::load_partial(cr + j, valid)
           : bias     ? V::load_partial(bias + j, valid)
                      : V::zero();
  };
  for (int r = 0; r < m_valid; ++r) {
    Reg av[K];
#pragma GCC unroll 4
    for (int p = 0; p < K; ++p) av[p] = V::broadcast(a + r * a_row_stride + p * a_k_stride);
    typename V::T* cr = c + r * ldc;
    int64_t j = 0;
    for (; j + NV * W <= full; j += NV * W) {
      Reg acc[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[v] = init(cr, j + v * W, W);
#pragma GCC unroll 4
      for (int p = 0; p < K; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          acc[v] = V::fma(av[p], V::load(b + p * ldb + j + v * W), acc[v]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) V::store(cr + j + v * W, acc[v]);
    }
    for (; j < n; j += W) {
      const int valid = j < full ? W : last;
      Reg acc = init(cr, j, valid);
#pragma GCC unroll 4
      for (int p = 0; p < K; ++p)
        acc = V::fma(av[p], V::load_partial(b + p * ldb + j, valid), acc);
      V::store_partial(cr + j, acc, valid);
    }
  }
}

// MicroKernel::sweep: grad_x and grad_w of R <= 2 rows of the backward in one pass over
// W, for each row n of W (n_out of them, `cols` columns each):
//   gx[r, :] += d[r, n] · W[n, :]        (grad_x = g' · W, kept in L1 like row_stream's C)
//   gw[n, :]  = sum_r d[r, n] · x[r, :]   (grad_w = g'ᵀ · x, written once, like row_sweep)
// with d = g' already derived. The two GEMMs apart read W (grad_x) and then write grad_w
// in two passes; here the write streams out while W streams in. Each element of gx gets
// row_stream's sequence (zero, then one FMA per row of W in ascending order) and each of
// gw row_sweep's (zero, then one FMA per row of x), so the bits are those of the two GEMMs.
// 1 x 784 -> 128 fp32 (AVX-512): one pass 4.7 us against 5.1 for a bare read of W plus a
// bare write of grad_w, and 7 for the two GEMMs (NOTES.md).
template <class V, int R, bool Partial>
__attribute__((always_inline)) inline void sweep_step(const typename V::Reg (&dv)[R],
                                                      const typename V::T* w,
                                                      const typename V::T* const (&x)[R],
                                                      typename V::T* const (&gx)[R],
                                                      typename V::T* gw, int64_t j, int last) {
  using Reg = typename V::Reg;
  const Reg wv = load_edge<V, Partial>(w + j, last);
  Reg acc = V::zero();
#pragma GCC unroll 2
  for (int r = 0; r < R; ++r) {
    store_edge<V, Partial>(gx[r] + j, V::fma(dv[r], wv, load_edge<V, Partial>(gx[r] + j, last)),
                           last);
    acc = V::fma(dv[r], load_edge<V, Partial>(x[r] + j, last), acc);
  }
  store_edge<V, Partial>(gw + j, acc, last);
}

template <class V, int R>
void backward_sweep_rows(int64_t n_out, int64_t cols, const typename V::T* d, int64_t ldd,
                         const typename V::T* w, int64_t ldw, const typename V::T* x,
                         int64_t ldx, typename V::T* gx, int64_t ldgx, typename V::T* gw,
                         int64_t ldgw) {
  using T = typename V::T;
  constexpr int W = V::width;
  for (int64_t j0 = 0; j0 < cols; j0 += kStreamCols) {
    const int64_t width = cols - j0 < kStreamCols ? cols - j0 : kStreamCols;
    const int64_t full = width / W * W;
    const int last = static_cast<int>(width - full);
    const T* x_rows[R];
    T* gx_rows[R];
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      x_rows[r] = x + r * ldx + j0;
      gx_rows[r] = gx + r * ldgx + j0;
      for (int64_t j = 0; j < width; j += W)
        V::store_partial(gx_rows[r] + j, V::zero(), j < full ? W : last);
    }
    for (int64_t n = 0; n < n_out; ++n) {
      typename V::Reg dv[R];
#pragma GCC unroll 2
      for (int r = 0; r < R; ++r) dv[r] = V::broadcast(d + r * ldd + n);
      const T* wn = w + n * ldw + j0;
      T* gwn = gw + n * ldgw + j0;
      for (int64_t j = 0; j < full; j += W)
        sweep_step<V, R, false>(dv, wn, x_rows, gx_rows, gwn, j, W);
      if (last) sweep_step<V, R, true>(dv, wn, x_rows, gx_rows, gwn, full, last);
    }
  }
}

template <class V>
void backward_sweep(int rows, int64_t n_out, int64_t cols, const typename V::T* d,
                    int64_t ldd, const typename V::T* w, int64_t ldw, const typename V::T* x,
                    int64_t ldx, typename V::T* gx, int64_t ldgx, typename V::T* gw,
                    int64_t ldgw) {
  if (rows == 1)
    backward_sweep_rows<V, 1>(n_out, cols, d, ldd, w, ldw, x, ldx, gx, ldgx, gw, ldgw);
  else
    backward_sweep_rows<V, 2>(n_out, cols, d, ldd, w, ldw, x, ldx, gx, ldgx, gw, ldgw);
}

// MicroKernel::rows: row_stream for one or two rows, row_sweep for K <= 2, otherwise
// row_panel's register tiles.
template <class V, int MR, int NV>
void rows_kernel(int64_t kc, const typename V::T* a, int64_t a_row_stride, int64_t a_k_stride,
                 const typename V::T* b, int64_t ldb, typename V::T* c, int64_t ldc,
                 int m_valid, int64_t n, const typename V::T* bias, bool accumulate) {
  if (m_valid == 1) {
    const typename V::T* rows[1] = {a};
    return row_stream<V, 1>(kc, rows, a_k_stride, b, ldb, c, ldc, n, bias, accumulate);
  }
  if (m_valid == 2) {
    const typename V::T* rows[2] = {a, a + a_row_stride};
    return row_stream<V, 2>(kc, rows, a_k_stride, b, ldb, c, ldc, n, bias, accumulate);
  }
  if (kc == 1)
    return row_sweep<V, 1>(a, a_row_stride, a_k_stride, b, ldb, c, ldc, m_valid, n, bias,
                           accumulate);
  if (kc == 2)
    return row_sweep<V, 2>(a, a_row_stride, a_k_stride, b, ldb, c, ldc, m_valid, n, bias,
                           accumulate);
  row_panel<V, MR, NV>(kc, a, a_row_stride, a_k_stride, b, ldb, c, ldc, m_valid, n, bias,
                       accumulate);
}

// The dot-product micro-kernel: C tile = init + A · B^T for MR rows of A and
// kDotNR rows of B, both read in place along K (the forward x · W^T with row-major x
// and W: nothing is packed or transposed). Each accumulator holds V::width partial sums
// of one element of C, reduced once after the K loop. Rows past m_valid / n_valid
// re-read the last valid row (never out of bounds) and are not stored; the K tail is
// loaded with zero-filled partial loads.
template <class V, int MR>
void dot_microkernel(int64_t kc, const typename V::T* a, int64_t lda, const typename V::T* b,
                     int64_t ldb, typename V::T* c, int64_t ldc, int m_valid, int n_valid,
                     const typename V::T* bias, bool accumulate) {
  if constexpr (MR > 1) {
    // As in microkernel: exactly m_valid rows (a batch of 1 no longer pays for MR rows).
    if (m_valid < MR)
      return dot_microkernel<V, MR - 1>(kc, a, lda, b, ldb, c, ldc, m_valid, n_valid, bias,
                                        accumulate);
  }
  using T = typename V::T;
  constexpr int W = V::width;
  constexpr int NR = kDotNR;
  const T* a_rows[MR];
  const T* b_rows[NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) a_rows[i] = a + (i < m_valid ? i : m_valid - 1) * lda;
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) b_rows[j] = b + (j < n_valid ? j : n_valid - 1) * ldb;

  typename V::Reg acc[MR][NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = V::zero();

  // One step: the MR A vectors stay in registers while each B vector is loaded once.
  auto step = [&](int64_t p, int valid) {
    typename V::Reg av[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
      av[i] = valid == W ? V::load(a_rows[i] + p) : V::load_partial(a_rows[i] + p, valid);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
      const typename V::Reg bv =
          valid == W ? V::load(b_rows[j] + p) : V::load_partial(b_rows[j] + p, valid);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) acc[i][j] = V::fma(av[i], bv, acc[i][j]);
    }
  };
  const int64_t k_full = kc / W * W;
  for (int64_t p = 0; p < k_full; p += W) step(p, W);
  if (k_full < kc) step(k_full, static_cast<int>(kc - k_full));

  // Epilogue on NR values per row: init (bias, or C of the previous K block) + sums.
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m_valid) break;
    T sums[NR];
    V::sum4(acc[i], sums);
    T* c_row = c + i * ldc;
    for (int j = 0; j < n_valid; ++j) {
      const T init = accumulate ? c_row[j] : bias ? bias[j] : T(0);
      c_row[j] = init + sums[j];
    }
  }
}

// MicroKernel::activate: the epilogue on a finished rows x cols block of C, a vector of
// each row at a time.
template <class V>
void activate_block(typename V::T* c, int64_t ldc, int rows, int cols,
                    TileEpilogue<typename V::T> epilogue) {
  constexpr int W = V::width;
  visit_activation(epilogue.act, [&](auto a) {
    using A = decltype(a);
    for (int i = 0; i < rows; ++i) {
      typename V::T* row = c + i * ldc;
      for (int j = 0; j < cols; j += W) {
        const int n = cols - j;
        typename V::Reg v = n >= W ? V::load(row + j) : V::load_partial(row + j, n);
        if (epilogue.pre) {
          if (n >= W) V::store(epilogue.pre + i * ldc + j, v);
          else V::store_partial(epilogue.pre + i * ldc + j, v, n);
        }
        v = forward_vec<V, A>(v, epilogue.slope);
        if (n >= W) V::store(row + j, v);
        else V::store_partial(row + j, v, n);
      }
    }
  });
}

// MicroKernel::elementwise_grad, a vector at a time.
template <class V>
void elementwise_grad(const typename V::T* g, const typename V::T* s, typename V::T* out,
                      int64_t count, Activation act, typename V::T slope, int order) {
  constexpr int W = V::width;
  visit_activation(act, [&](auto a) {
    using A = decltype(a);
    for (int64_t i = 0; i < count; i += W) {
      const int n = count - i < W ? static_cast<int>(count - i) : W;
      const typename V::Reg gv = n == W ? V::load(g + i) : V::load_partial(g + i, n);
      const typename V::Reg sv = n == W ? V::load(s + i) : V::load_partial(s + i, n);
      const typename V::Reg r = order == 1 ? grad_vec<V, A>(gv, sv, slope)
                                           : grad2_vec<V, A>(gv, sv, slope);
      if (n == W) V::store(out + i, r);
      else V::store_partial(out + i, r, n);
    }
  });
}

// The FMA throughput of one core on this ISA's vectors: `rounds` x 12 independent
// multiply-add chains (as many as the micro-kernels keep), nothing loaded or stored.
// Returns the flops done; the benchmark's ceilings divide by the resulting GF/s.
template <class V>
double fma_probe(int64_t rounds) {
  using T = typename V::T;
  // Read through volatile: with a known 1 the compiler could fold fma(x, 1, c) into an
  // add, which more pipes execute.
  const volatile T one_unknown = T(1);
  const T one = one_unknown, tiny = T(1e-7);
  typename V::Reg acc[12];
  const typename V::Reg mul = V::broadcast(&one), add = V::broadcast(&tiny);
#pragma GCC unroll 12
  // Distinct starts: GCC merged 12 identical chains into one (a "138 GF/s" core).
  for (int i = 0; i < 12; ++i) {
    const T start = one * T(i);
    acc[i] = V::broadcast(&start);
  }
  for (int64_t r = 0; r < rounds; ++r)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = V::fma(acc[i], mul, add);
  T sums[4], total = T(0);
  for (int i = 0; i < 12; i += 4) {
    V::sum4(&acc[i], sums);
    total += sums[0] + sums[1] + sums[2] + sums[3];
  }
  volatile T sink = total;  // keeps the chains from being optimised away
  (void)sink;
  return 2.0 * 12 * V::width * static_cast<double>(rounds);
}

// MR x NV vectors for the broadcast kernel, DOT_MR x kDotNR for the dot-product kernel.
template <class V, int MR, int NV, int DOT_MR>
MicroKernel<typename V::T> make_microkernel() {
  static_assert(kDotNR == 4, "sum4 reduces four accumulators");
  return {MR, NV * V::width, &microkernel<V, MR, NV>, &rows_kernel<V, MR, NV>,
          &backward_sweep<V>, 0, nullptr,
          nullptr, nullptr, DOT_MR, &dot_microkernel<V, DOT_MR>, &activate_block<V>,
          &elementwise_grad<V>, &fma_probe<V>};
}

// The run-time switch to an ISA's SIMD packers, which take the activation of the
// derivative as a template parameter A: fn(Act<a>{}) for saved.act, identity when there
// is no saved tensor.
template <typename T, class Fn>
void with_activation(const SavedOperand<T>& saved, Fn&& fn) {
  visit_activation(saved.data ? saved.act : Activation::identity, fn);
}

}  // namespace
}  // namespace fusedmlp::cpu
