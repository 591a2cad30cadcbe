// The GEMM's cache blocking, derived from the cache sizes of the machine it runs on
// (cache_info.h) and the micro-kernel's register tile, instead of constants tuned on one
// CPU. The formulas reproduce the constants that were tuned by hand on a 32 KiB L1d /
// 1 MiB L2 Zen 4 with the AVX2 kernels, and scale with L1d and L2 elsewhere.
#pragma once

#include <cstdint>

#include "cpu/cache_info.h"

namespace fusedmlp::cpu {

// Largest blocks of one GEMM path, in elements: kc (K per block), nc (columns of C per
// block), mc (rows of C per block).
struct BlockLimits {
  int64_t kc, nc, mc;
};

// Packed path (loop order in gemm.cpp): the MR x KC A micro-panel stays in L1 while the
// KC x NR B micro-panels stream past it from the KC x NC B block in L2.
BlockLimits packed_block_limits(const CacheSizes& caches, int mr, int nr, int64_t elem_size);

// Dot-product path: dot_mr rows of A and kDotNR rows of B, KC elements each, in L1 for a
// tile; the MC x KC A block in L2 is re-read for every kDotNR rows of B.
BlockLimits dot_block_limits(const CacheSizes& caches, int dot_mr, int64_t elem_size);

// Whether x · W^T (both K-contiguous, nothing masked) takes the dot-product path rather
// than packed panels: for batches up to the ISA's measured crossover (MicroKernel::
// dot_max_rows), and for narrow layers (fewer outputs than the packed tile's NR columns,
// which would be mostly padding) with K long enough to amortise the dot tiles' horizontal
// reductions (NOTES.md).
bool prefers_dot(int64_t m, int64_t n, int64_t k, int64_t dot_max_rows, int nr);
// K up to which a GEMM with a row-major B takes the row-panel path (gemm.cpp,
// MicroKernel::rows): grad_w = gᵀ · x of a batch of up to 16 rows, whose B (K rows of x)
// every row panel reads whole (NOTES.md: equal to the packed tiles from ~16 rows on).
constexpr int64_t kRowPanelMaxK = 16;
// Multiply-adds per thread below which a GEMM does not use another thread (~5 us of work:
// waking a worker costs more than it saves, and a descheduled one stalls the call).
constexpr int64_t kMinWorkPerThread = 256 * 1024;

}  // namespace fusedmlp::cpu
