// float16 / bfloat16 GEMM on tensor cores: C = epilogue(A · Bᵀ) (see gemm.h), with
// mma.sync.m16n8k16 (sm_80+) accumulating in float32; bias and ReLU are applied to the
// float32 accumulators, which are rounded once, at the store.
// A BM x BN output tile per block, BK = 32 deep tiles of A and B in shared memory (double
// buffered by pipelined_k_loop); each warp owns a WM x WN sub-tile = MT x NT mma tiles.
#include "cuda/tile.cuh"

namespace fusedmlp::cuda {
namespace {

template <int BM_, int BN_, int WARPS_M, int WARPS_N>
struct MmaTile {
  static constexpr int BM = BM_, BN = BN_, BK = 32;
  static constexpr int kWarpsN = WARPS_N;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
  static constexpr int MT = WM / 16, NT = WN / 8;  // mma tiles (16 x 8) per warp
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile: whole mma tiles, in pairs along n");
};

using BigTile = MmaTile<128, 128, 2, 4>;   // 8 warps, 64 x 32 each
using SmallTile = MmaTile<64, 64, 2, 2>;   // 4 warps, 32 x 32 each

// c += a · b for one m16n8k16 tile; fragments as the PTX ISA lays them out per lane.
template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  __trap();  // never launched: gemm() refuses fp16/bf16 below sm_80
#endif
}

// Four 8 x 8 matrices of 16-bit elements from shared memory, one per register: lane l
// gives the address of row l % 8 of matrix l / 8, and receives, of each matrix, row
// l / 4, elements 2 * (l % 4) and 2 * (l % 4) + 1 (the mma fragment layout); with
// `transpose`, the same of the transposed matrices.
__device__ __forceinline__ void load_matrices_x4(uint32_t (&r)[4], const void* row_address,
                                                 bool transpose) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  if (transpose) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
#else
  __trap();  // never launched: gemm() refuses fp16/bf16 below sm_80
#endif
}

// One stage of an operand (OUTER x BK) in shared memory, laid out the way its chunks
// arrive so that each chunk is one 16-byte store: k-contiguous rows [OUTER][BK + 8] for
// an operand read along k, outer-contiguous rows [BK][OUTER + 8] for one read along the
// outer dimension (its fragments then come from ldmatrix.trans). The 8-element pads keep
// rows 16-byte aligned and put the 8 rows of one ldmatrix matrix in different banks.
template <typename T, int OUTER, int BK>
struct OperandTile {
  static constexpr int kKPitch = BK + 8, kOuterPitch = OUTER + 8;
  static constexpr int kSize = OUTER * kKPitch > BK * kOuterPitch ? OUTER * kKPitch
                                                                  : BK * kOuterPitch;
  alignas(16) T data[kSize];

  __device__ __forceinline__ void store(int o, int kk, bool along_outer,
                                        const T (&chunk)[kVecElems<T>]) {
    T* at = along_outer ? &data[kk * kOuterPitch + o] : &data[o * kKPitch + kk];
    *reinterpret_cast<uint4*>(at) = *reinterpret_cast<const uint4*>(chunk);
  }

  // The four 8 x 8 (outer x k) matrices at (o0 + outer_offset(q), k0 + k_offset(q)),
  // q = 0..3, as mma fragment registers (this lane addresses row l % 8 of matrix l / 8).
  template <class OuterOffset, class KOffset>
  __device__ __forceinline__ void fragments(uint32_t (&r)[4], bool along_outer, int o0, int k0,
                                            OuterOffset outer_offset, KOffset k_offset) const {
    const int lane = threadIdx.x % 32, q = lane / 8, row = lane % 8;
    const int o = o0 + outer_offset(q), kk = k0 + k_offset(q);
    // Stored k-major, a matrix's rows are k: ldmatrix.trans hands out (outer, k) pairs.
    const T* address = along_outer ? &data[(kk + row) * kOuterPitch + o]
                                   : &data[(o + row) * kKPitch + kk];
    load_matrices_x4(r, address, along_outer);
  }
};

template <typename T, class Tile>
__global__ void __launch_bounds__(Tile::kThreads) mma_gemm_kernel(const GemmParams<T> p) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, MT = Tile::MT, NT = Tile::NT;
  constexpr int kThreads = Tile::kThreads;
  __shared__ OperandTile<T, BM, BK> a_tile[2];
  __shared__ OperandTile<T, BN, BK> b_tile[2];

  int64_t tile_m, tile_n;
  tile_of_block(p, tile_m, tile_n);
  const int64_t m0 = tile_m * BM, n0 = tile_n * BN;
  TileLoader<T, BM, BK, kThreads> a_loader(p.a, p.a_mask, m0, p.m, p.k, p.a_act, p.slope);
  TileLoader<T, BN, BK, kThreads> b_loader(p.b, TileOperand<T>{}, n0, p.n, p.k);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / Tile::kWarpsN, warp_n = warp % Tile::kWarpsN;

  constexpr int V = kVecElems<T>;
  auto store_tiles = [&](int stage) {
    a_loader.store([&](int o, int kk, bool along_outer, const T(&chunk)[V]) {
      a_tile[stage].store(o, kk, along_outer, chunk);
    });
    b_loader.store([&](int o, int kk, bool along_outer, const T(&chunk)[V]) {
      b_tile[stage].store(o, kk, along_outer, chunk);
    });
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
    }
  }

  int64_t k_begin, k_tiles;
  k_range_of_block<T, BK>(p, k_begin, k_tiles);
  pipelined_k_loop<BK>(k_begin, k_tiles, a_loader, b_loader, store_tiles, [&](int stage) {
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      // A fragment of mma tile i: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7),
      // (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a0..a3.
      uint32_t a[MT][4];
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        a_tile[stage].fragments(
            a[i], p.a.along_outer, warp_m * Tile::WM + i * 16, ks,
            [](int q) { return q % 2 * 8; }, [](int q) { return q / 2 * 8; });
      }
      // B fragments of mma tiles j, j + 1: matrices (n 0-7 of j, k 0-7), (n 0-7 of j,
      // k 8-15), then the same for j + 1 = b[j][0], b[j][1], b[j+1][0], b[j+1][1].
      uint32_t b[NT][2];
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t r[4];
        b_tile[stage].fragments(
            r, p.b.along_outer, warp_n * Tile::WN + j * 8, ks,
            [](int q) { return q / 2 * 8; }, [](int q) { return q % 2 * 8; });
        b[j][0] = r[0];
        b[j][1] = r[1];
        b[j + 1][0] = r[2];
        b[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int j = 0; j < NT; ++j) mma_16x8x16<T>(acc[i][j], a[i], b[j]);
      }
    }
  });

  // Accumulator fragment: c0, c1 at (group, 2 * pair + {0, 1}), c2, c3 at row group + 8
  // (PTX's groupID and threadID_in_group).
  const int group = lane / 4, pair = lane % 4;
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const int64_t row = m0 + warp_m * Tile::WM + i * 16 + group;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int64_t col = n0 + warp_n * Tile::WN + j * 8 + 2 * pair;
      finish(p, row, col, acc[i][j][0]);
      finish(p, row, col + 1, acc[i][j][1]);
      finish(p, row + 8, col, acc[i][j][2]);
      finish(p, row + 8, col + 1, acc[i][j][3]);
    }
  }
}

template <typename T>
void launch(const GemmArgs& args, const GemmPlan& plan, void* workspace, cudaStream_t stream) {
  if (plan.big_tiles) {
    launch_gemm_kernel<T, BigTile>(mma_gemm_kernel<T, BigTile>, args, plan, workspace, stream);
  } else {
    launch_gemm_kernel<T, SmallTile>(mma_gemm_kernel<T, SmallTile>, args, plan, workspace,
                                     stream);
  }
}

}  // namespace

GemmPlan plan_mma_gemm(DType dtype, const GemmArgs& args, int sm_count) {
  if (dtype != DType::f16 && dtype != DType::bf16) {
    throw std::runtime_error("fusedmlp: the tensor-core GEMM runs float16 and bfloat16");
  }
  return plan_tiles<BigTile, SmallTile, float>(args, sm_count);
}

void launch_mma_gemm(DType dtype, const GemmArgs& args, const GemmPlan& plan, void* workspace,
                     cudaStream_t stream) {
  switch (dtype) {
    case DType::f16: return launch<__half>(args, plan, workspace, stream);
    case DType::bf16: return launch<__nv_bfloat16>(args, plan, workspace, stream);
    default: throw std::runtime_error("fusedmlp: the tensor-core GEMM runs float16 and bfloat16");
  }
}

}  // namespace fusedmlp::cuda
