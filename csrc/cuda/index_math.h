// The index math of the GEMM kernels (gemm_simt.cu, gemm_mma.cu, tile.cuh), in functions
// that nvcc and the host C++ compiler both read, so that tests/cuda_host checks on the CPU
// the very functions the kernels call: the tile shapes, the tiling plan, the block -> tile
// schedule, split-k slicing, the loaders' chunk mapping, the shared-memory layouts, the
// per-lane row addresses handed to ldmatrix and where each accumulator is stored.
// Plain C++: no CUDA header, no torch.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define FUSEDMLP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FUSEDMLP_HOST_DEVICE inline
#endif

namespace fusedmlp::cuda {

FUSEDMLP_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// How a GEMM is cut into blocks: the tile size, and for problems with too few output
// tiles to fill the GPU but a long k (grad_w of a tall batch: 128 x 128 outputs summed
// over 65536 rows), `splits` slices of k, each block summing one slice into a partial in
// the accumulator type (float; double for f64); a second kernel adds the slices in a
// fixed order and applies the epilogue (deterministic, no atomics). The caller allocates
// workspace_bytes on the device.
struct GemmPlan {
  bool big_tiles = true;
  int splits = 1;
  int64_t k_per_split = 0;  // a multiple of the tile's k depth; k when splits == 1
  size_t workspace_bytes = 0;
};

// ---- Tile shapes -------------------------------------------------------------------

// CUDA cores (gemm_simt.cu): a BM x BN output tile per block, BK deep tiles of A and B
// in shared memory, a TM x TN register tile per thread.
template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct SimtTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreadsM = BM / TM, kThreadsN = BN / TN;
  static constexpr int kThreads = kThreadsM * kThreadsN;
  // The thread's place along m and along n (unsigned, as threadIdx.x: / and % by a power
  // of two are then a shift and a mask).
  static FUSEDMLP_HOST_DEVICE int thread_m(unsigned thread) { return thread / kThreadsN; }
  static FUSEDMLP_HOST_DEVICE int thread_n(unsigned thread) { return thread % kThreadsN; }
};

// Big tiles for throughput; small ones when big tiles would leave SMs idle.
template <typename T>
struct SimtTiles;
template <>
struct SimtTiles<float> {
  using Big = SimtTile<128, 128, 8, 8, 8>;
  using Small = SimtTile<64, 64, 16, 4, 4>;
};
template <>
struct SimtTiles<double> {
  using Big = SimtTile<64, 64, 16, 4, 4>;
  using Small = SimtTile<32, 32, 16, 2, 2>;
};

// Where register i of a thread's register tile lies along one side of the block tile
// (the thread being `thread` of THREADS along that side): blocks of V registers (one
// 16-byte vector) spread THREADS * V apart, so that a warp's shared reads of one vector
// index hit consecutive addresses (no bank conflicts).
template <int V, int THREADS>
FUSEDMLP_HOST_DEVICE int register_tile_offset(int thread, int i) {
  return i / V * THREADS * V + thread * V + i % V;
}

// Tensor cores (gemm_mma.cu): a BM x BN output tile per block, BK = 32 deep tiles of A
// and B in shared memory, a WM x WN sub-tile per warp = MT x NT mma tiles (16 x 8).
template <int BM_, int BN_, int WARPS_M, int WARPS_N>
struct MmaTile {
  static constexpr int BM = BM_, BN = BN_, BK = 32;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
  static constexpr int MT = WM / 16, NT = WN / 8;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile: whole mma tiles, in pairs along n");
  // The origin of warp w's sub-tile in the block tile.
  static FUSEDMLP_HOST_DEVICE int warp_m0(int warp) { return warp / WARPS_N * WM; }
  static FUSEDMLP_HOST_DEVICE int warp_n0(int warp) { return warp % WARPS_N * WN; }
};

struct MmaTiles {
  using Big = MmaTile<128, 128, 2, 4>;  // 8 warps, 64 x 32 each
  using Small = MmaTile<64, 64, 2, 2>;  // 4 warps, 32 x 32 each
};

// ---- Tiling plan and schedule ------------------------------------------------------

// Host side: big tiles when they fill the GPU; else small tiles, and if even those leave
// SMs idle while k is long, slices of k (at least 4 k tiles each, at most 64 slices).
template <class Big, class Small, typename Acc>
GemmPlan plan_tiles(int64_t m, int64_t n, int64_t k, int sm_count) {
  auto tiles = [&](int bm, int bn) { return ceil_div(m, bm) * ceil_div(n, bn); };
  GemmPlan plan;
  plan.k_per_split = k;
  if (tiles(Big::BM, Big::BN) >= sm_count) return plan;
  plan.big_tiles = false;
  const int64_t small_tiles = tiles(Small::BM, Small::BN);
  const int64_t k_tiles = ceil_div(k, Small::BK);
  constexpr int64_t kMinTilesPerSplit = 4, kMaxSplits = 64;
  int64_t splits = std::min({ceil_div(2 * int64_t{sm_count}, small_tiles),
                             k_tiles / kMinTilesPerSplit, kMaxSplits});
  if (splits <= 1) return plan;
  plan.k_per_split = ceil_div(k_tiles, splits) * Small::BK;
  splits = ceil_div(k, plan.k_per_split);  // no empty slice
  plan.splits = static_cast<int>(splits);
  plan.workspace_bytes = static_cast<size_t>(splits * m * n) * sizeof(Acc);
  return plan;
}

// Block -> output tile, in groups of kGroup tile rows walked column by column, so the
// blocks running together share A and B tiles in L2.
FUSEDMLP_HOST_DEVICE void tile_of_block(int64_t block, int64_t tiles_m, int64_t tiles_n,
                                        int64_t& tile_m, int64_t& tile_n) {
  constexpr int64_t kGroup = 8;
  const int64_t group_size = kGroup * tiles_n;
  const int64_t first_m = block / group_size * kGroup;
  const int64_t rows = tiles_m - first_m < kGroup ? tiles_m - first_m : kGroup;
  tile_m = first_m + block % group_size % rows;
  tile_n = block % group_size / rows;
}

// The k range [k_begin, k_begin + k_tiles * bk) of k slice `slice` (clipped to k by the
// loaders; slices are whole bk tiles, so a block never reads into the next slice).
FUSEDMLP_HOST_DEVICE void k_range_of_slice(int64_t slice, int64_t k, int64_t k_per_split,
                                           int bk, int64_t& k_begin, int64_t& k_tiles) {
  k_begin = slice * k_per_split;
  const int64_t k_end = k < k_begin + k_per_split ? k : k_begin + k_per_split;
  k_tiles = k_end > k_begin ? (k_end - k_begin + bk - 1) / bk : 0;
}

// ---- Loading tiles -----------------------------------------------------------------

// Whether the loaders' chunks of an operand with these strides run along the outer
// dimension (it is the contiguous one) rather than along k.
FUSEDMLP_HOST_DEVICE bool chunks_along_outer(int64_t outer_stride, int64_t k_stride) {
  return k_stride != 1 && outer_stride == 1;
}

// Tile coordinates (o, kk) of chunk `chunk` (VEC elements, from (o, kk) on along the
// outer dimension or along k) of an OUTER x K tile: consecutive chunks (threads) run
// along the contiguous direction, so that a warp's loads are coalesced.
template <int OUTER, int K, int VEC>
FUSEDMLP_HOST_DEVICE void chunk_origin(int chunk, bool along_outer, int& o, int& kk) {
  if (along_outer) {
    kk = chunk / (OUTER / VEC);
    o = chunk % (OUTER / VEC) * VEC;
  } else {
    o = chunk / (K / VEC);
    kk = chunk % (K / VEC) * VEC;
  }
}

// ---- Tensor-core fragments ---------------------------------------------------------

// One stage of an OUTER x BK operand tile in shared memory (gemm_mma.cu), laid out the way
// its chunks arrive so that each chunk is one 16-byte store: k-contiguous rows
// [OUTER][BK + 8] for an operand read along k, outer-contiguous rows [BK][OUTER + 8] for
// one read along the outer dimension. The 8-element pads keep rows 16-byte aligned and
// put the 8 rows of one ldmatrix matrix in different banks.
template <int OUTER, int BK>
struct MmaOperandLayout {
  static constexpr int kKPitch = BK + 8, kOuterPitch = OUTER + 8;
  static constexpr int kSize = OUTER * kKPitch > BK * kOuterPitch ? OUTER * kKPitch
                                                                  : BK * kOuterPitch;

  // Element (o, kk); a chunk from (o, kk) occupies the next kVec elements.
  static FUSEDMLP_HOST_DEVICE int offset(int o, int kk, bool along_outer) {
    return along_outer ? kk * kOuterPitch + o : o * kKPitch + kk;
  }

  // Stored k-major, a matrix's rows in shared memory are k: ldmatrix.trans hands out the
  // (outer, k) pairs the mma fragments want.
  static FUSEDMLP_HOST_DEVICE bool ldmatrix_trans(bool along_outer) { return along_outer; }

  // The row this lane addresses for an ldmatrix.x4 of the four 8 x 8 (outer x k)
  // matrices at (o0 + Matrices::outer(q), k0 + Matrices::k(q)), q = 0..3: row l % 8 of
  // matrix l / 8 (a row of 8 outer elements at one k when stored k-major).
  template <class Matrices>
  static FUSEDMLP_HOST_DEVICE int ldmatrix_row(int lane, bool along_outer, int o0, int k0) {
    const int q = lane / 8, row = lane % 8;
    const int o = o0 + Matrices::outer(q), kk = k0 + Matrices::k(q);
    return along_outer ? offset(o, kk + row, true) : offset(o + row, kk, false);
  }
};

// The A fragment of an m16n8k16 (registers a0a1, a2a3, a4a5, a6a7) as four 8 x 8
// matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
struct AFragmentMatrices {
  static FUSEDMLP_HOST_DEVICE int outer(int q) { return q % 2 * 8; }
  static FUSEDMLP_HOST_DEVICE int k(int q) { return q / 2 * 8; }
};

// The B fragments (b0b1, b2b3) of two mma tiles side by side along n, j and j + 1, as four
// 8 x 8 matrices: (n 0-7 of j, k 0-7), (n 0-7 of j, k 8-15), then the same of j + 1.
// Matrix q is register reg(q) of tile j + tile(q).
struct BFragmentPairMatrices {
  static FUSEDMLP_HOST_DEVICE int outer(int q) { return q / 2 * 8; }
  static FUSEDMLP_HOST_DEVICE int k(int q) { return q % 2 * 8; }
  static FUSEDMLP_HOST_DEVICE int tile(int q) { return q / 2; }
  static FUSEDMLP_HOST_DEVICE int reg(int q) { return q % 2; }
};

// Accumulator e (c0..c3) of `lane` in its 16 x 8 mma tile: c0, c1 at (groupID,
// 2 * threadID_in_group + {0, 1}), c2, c3 eight rows below (the PTX ISA's names).
FUSEDMLP_HOST_DEVICE int mma_accumulator_row(int lane, int e) { return lane / 4 + e / 2 * 8; }
FUSEDMLP_HOST_DEVICE int mma_accumulator_col(int lane, int e) { return lane % 4 * 2 + e % 2; }

}  // namespace fusedmlp::cuda
