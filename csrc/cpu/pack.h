// Packing of the GEMM's operands into the panels the micro-kernels read (BLIS's packm):
// A into MR-row panels (with the backward's activation derivative and row sums fused in), B into
// NR-column panels. Written once for every ISA; the ISA's SIMD routines (MicroKernel::
// transpose, pack_rows, pack_cols) do the inner work where it has them.
#pragma once

#include <cstdint>

#include "cpu/gemm.h"
#include "cpu/isa.h"

namespace fusedmlp::cpu {

// The largest MR of any micro-kernel (panel row sums are kept in arrays of this size).
constexpr int kMaxMR = 16;

// Packs rows [i0, i0+mc) x cols [p0, p0+kc) of A into MR-row panels, k-major, zero padded,
// applying pb.a_saved's derivative when set and adding each row's sum to row_sums when
// given (the first K block stores it). Each row's sum runs over k in ascending order whichever loop order
// is used (deterministic, same result).
template <typename T>
void pack_a_block(const GemmProblem<T>& pb, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                  const MicroKernel<T>& uk, T* dst, T* row_sums, bool first_k_block);

// Packs rows [p0, p0+kc) x cols [j0, j0+nc) of B into NR-column panels, k-major, zero padded.
template <typename T>
void pack_b_block(const StridedMatrix<T>& b, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                  const MicroKernel<T>& uk, T* dst);

}  // namespace fusedmlp::cpu
