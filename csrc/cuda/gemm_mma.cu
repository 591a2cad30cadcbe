// float16 / bfloat16 GEMM on tensor cores: C = epilogue(A · Bᵀ) (see gemm.h), with
// mma.sync.m16n8k16 (sm_80+) accumulating in float32; bias and ReLU are applied to the
// float32 accumulators, which are rounded once, at the store.
// A BM x BN output tile per block, BK = 32 deep tiles of A and B in shared memory (double
// buffered by pipelined_k_loop); each warp owns a WM x WN sub-tile = MT x NT mma tiles
// (the tiles, layouts and fragment addressing: index_math.h).
#include "cuda/tile.cuh"

namespace fusedmlp::cuda {
namespace {

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

// One stage of an operand (OUTER x BK) in shared memory, laid out as MmaOperandLayout
// says: the way its chunks arrive, so that each chunk is one 16-byte store.
template <typename T, int OUTER, int BK>
struct OperandTile {
  using Layout = MmaOperandLayout<OUTER, BK>;
  alignas(16) T data[Layout::kSize];

  __device__ __forceinline__ void store(int o, int kk, bool along_outer,
                                        const T (&chunk)[kVecElems<T>]) {
    *reinterpret_cast<uint4*>(&data[Layout::offset(o, kk, along_outer)]) =
        *reinterpret_cast<const uint4*>(chunk);
  }

  // The four 8 x 8 (outer x k) matrices at (o0 + Matrices::outer(q), k0 + Matrices::k(q)),
  // q = 0..3, as mma fragment registers.
  template <class Matrices>
  __device__ __forceinline__ void fragments(uint32_t (&r)[4], bool along_outer, int o0,
                                            int k0) const {
    const int lane = threadIdx.x % 32;
    load_matrices_x4(r, &data[Layout::template ldmatrix_row<Matrices>(lane, along_outer, o0, k0)],
                     Layout::ldmatrix_trans(along_outer));
  }
};

// Blocks per SM such that ptxas keeps to 128 registers per thread (64K registers per SM):
// 2 for the 256-thread tile (168 registers without the bound), 4 for the 128-thread one
// (128 without it, 148 when the bound names 1 block); spill-free either way
// (benchmarks/NOTES.md has the ptxas figures).
template <typename T, class Tile>
__global__ void __launch_bounds__(Tile::kThreads, 512 / Tile::kThreads)
    mma_gemm_kernel(const GemmParams<T> p) {
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
  const int warp_m0 = Tile::warp_m0(warp), warp_n0 = Tile::warp_n0(warp);

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
      // A fragment of mma tile i; B fragments of mma tiles j, j + 1.
      uint32_t a[MT][4];
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        a_tile[stage].template fragments<AFragmentMatrices>(a[i], p.a.along_outer,
                                                            warp_m0 + i * 16, ks);
      }
      uint32_t b[NT][2];
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t r[4];
        b_tile[stage].template fragments<BFragmentPairMatrices>(r, p.b.along_outer,
                                                                warp_n0 + j * 8, ks);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          b[j + BFragmentPairMatrices::tile(q)][BFragmentPairMatrices::reg(q)] = r[q];
        }
      }
#pragma unroll
      for (int i = 0; i < MT; ++i) {
#pragma unroll
        for (int j = 0; j < NT; ++j) mma_16x8x16<T>(acc[i][j], a[i], b[j]);
      }
    }
  });

#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        finish(p, m0 + warp_m0 + i * 16 + mma_accumulator_row(lane, e),
               n0 + warp_n0 + j * 8 + mma_accumulator_col(lane, e), acc[i][j][e]);
      }
    }
  }
}

template <typename T>
void launch(const GemmArgs& args, const GemmPlan& plan, void* workspace, cudaStream_t stream) {
  using Big = MmaTiles::Big;
  using Small = MmaTiles::Small;
  if (plan.big_tiles) {
    launch_gemm_kernel<T, Big>(mma_gemm_kernel<T, Big>, args, plan, workspace, stream);
  } else {
    launch_gemm_kernel<T, Small>(mma_gemm_kernel<T, Small>, args, plan, workspace, stream);
  }
}

}  // namespace

GemmPlan plan_mma_gemm(DType dtype, const GemmArgs& args, int sm_count) {
  if (dtype != DType::f16 && dtype != DType::bf16) {
    throw std::runtime_error("fusedmlp: the tensor-core GEMM runs float16 and bfloat16");
  }
  return plan_tiles<MmaTiles::Big, MmaTiles::Small, float>(args, sm_count);
}

KernelImage mma_kernel_image(DType dtype) {
  // All kernels of this file come from one image per arch: one kernel tells about all.
  cudaFuncAttributes attributes{};
  const cudaError_t status =
      dtype == DType::bf16
          ? cudaFuncGetAttributes(&attributes, mma_gemm_kernel<__nv_bfloat16, MmaTiles::Big>)
          : cudaFuncGetAttributes(&attributes, mma_gemm_kernel<__half, MmaTiles::Big>);
  if (status != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it, the caller reports it by throwing
    throw std::runtime_error(
        std::string("fusedmlp: this build has no CUDA code this GPU can load (") +
        cudaGetErrorString(status) +
        "); rebuild with TORCH_CUDA_ARCH_LIST naming this GPU's compute capability");
  }
  return {attributes.binaryVersion, attributes.ptxVersion};
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
