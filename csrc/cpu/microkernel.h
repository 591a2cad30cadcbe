// The register micro-kernel, written once over a small vector interface `V`:
//   V::T, V::Reg, V::width, zero(), load(p), load_partial(p, n), store(p, r),
//   store_partial(p, r, n), broadcast(p), fma(a, b, c) = a*b + c, relu(r).
// Each isa_*.cpp defines its V types under its own `#pragma GCC target` and includes
// this file. Everything here has internal linkage (unnamed namespace) on purpose: every
// ISA unit gets its own copy, so no instruction set leaks into another unit's code.
#pragma once

#include <cstdint>

namespace fusedmlp::cpu {
namespace {  // NOLINT: see above

// C tile = epilogue(init + A_panel · B_panel); MR rows x NV vectors of V::width columns.
template <class V, int MR, int NV>
void microkernel(int64_t kc, const typename V::T* a, int64_t a_row_stride, int64_t a_k_stride,
                 const typename V::T* b, typename V::T* c, int64_t ldc, int m_valid,
                 int n_valid, const typename V::T* bias, bool accumulate, bool relu) {
  constexpr int W = V::width;
  constexpr int NR = NV * W;
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
    for (int j = 0; j < NV; ++j) bv[j] = V::load(b + p * NR + j * W);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const typename V::Reg av = V::broadcast(a_rows[i] + p * a_k_stride);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
    }
  }

  if (relu) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = V::relu(acc[i][j]);
  }

  // The single store of the tile; edges are masked, never written past n_valid/m_valid.
  if (n_valid == NR) {
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

template <class V, int MR, int NV>
MicroKernel<typename V::T> make_microkernel() {
  return {MR, NV * V::width, &microkernel<V, MR, NV>, 0, nullptr};
}

}  // namespace
}  // namespace fusedmlp::cpu
