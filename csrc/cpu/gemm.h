// The blocked GEMM behind every CPU kernel: C = epilogue(bias + A · B), written once.
// Goto/BLIS structure: A and B are packed into panels sized for the caches, and a
// register micro-kernel (picked per ISA at run time, see isa.h) computes MR x NR tiles.
#pragma once

#include <cstdint>

#include "cpu/blocking.h"

namespace fusedmlp::cpu {

// A read-only strided matrix: element (r, c) is data[r * row_stride + c * col_stride].
// Strides may be anything (transposed, sliced, 0 for broadcast), so callers never copy.
template <typename T>
struct StridedMatrix {
  const T* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 0;

  T operator()(int64_t r, int64_t c) const { return data[r * row_stride + c * col_stride]; }
  StridedMatrix transposed() const { return {data, col_stride, row_stride}; }
};

template <typename T>
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  StridedMatrix<T> a;      // m x k
  StridedMatrix<T> b;      // k x n
  T* c = nullptr;          // m x n, row-major, contiguous; only written
  const T* bias = nullptr; // n values (stride bias_stride) the accumulators start from; null: 0
  int64_t bias_stride = 1;
  bool relu = false;       // apply max(0, v), keeping NaN, before the single store of C
  // If a_mask.data is set, A(r, c) counts only where a_mask(r, c) > 0 (the ReLU mask of
  // the backward pass, applied while A is packed: the masked A is never written out).
  StridedMatrix<T> a_mask;
  // If set, receives the m row sums of the (masked) A, accumulated while A is packed.
  T* a_row_sums = nullptr;
};

template <typename T>
void gemm(const GemmProblem<T>& problem);

// The float32 FMA peak of this machine in GF/s, on the active ISA's vectors and all
// at::get_num_threads() threads: the best of a few ~20 ms register-only runs. The
// benchmark's ceilings and "% of FMA peak" columns are taken against it.
double fma_peak_gflops();

// The register tiles of the active ISA's micro-kernels for T and the block limits a GEMM
// would use with the current cache sizes (what fusedmlp.info() shows).
struct BlockingInfo {
  int mr, nr, dot_mr, dot_max_rows;
  BlockLimits packed, dot;
};
template <typename T>
BlockingInfo blocking_info();

// out[r] = sum over c of A(r, c) (masked as in GemmProblem), for when no GEMM runs.
template <typename T>
void masked_row_sums(int64_t m, int64_t k, StridedMatrix<T> a, StridedMatrix<T> a_mask, T* out);

}  // namespace fusedmlp::cpu
