// float32 / float64 GEMM on CUDA cores: C = epilogue(A · Bᵀ) (see gemm.h).
// A BM x BN output tile per block, BK-deep tiles of A and B in shared memory (double
// buffered by pipelined_k_loop: the next tile's global loads are in flight while this
// one is multiplied), and a TM x TN register tile per thread, read from shared memory as
// 16-byte vectors (the tiles and the register tile's layout: index_math.h).
#include "cuda/tile.cuh"

namespace fusedmlp::cuda {
namespace {

template <typename T>
struct Vec16;  // the 16-byte vector of T
template <>
struct Vec16<float> { using type = float4; };
template <>
struct Vec16<double> { using type = double2; };

template <typename T, class Tile>
__global__ void __launch_bounds__(Tile::kThreads) simt_gemm_kernel(const GemmParams<T> p) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  constexpr int kThreads = Tile::kThreads;
  // A thread's register tile is TM/V x TN/V blocks of V x V, V = one 16-byte vector; the
  // blocks are spread kThreadsM*V (kThreadsN*V) apart so that a warp's shared reads of one
  // vector index hit consecutive addresses (no bank conflicts).
  constexpr int V = kVecElems<T>;
  static_assert(TM % V == 0 && TN % V == 0, "register tile must hold whole vectors");
  using Vec = typename Vec16<T>::type;

  // k-major tiles: a thread reads its TM rows of A (TN columns of B) at one k as vectors.
  // The V-element pad keeps rows 16-byte aligned and spreads the transposing stores.
  __shared__ alignas(16) T a_tile[2][BK][BM + V];
  __shared__ alignas(16) T b_tile[2][BK][BN + V];

  int64_t tile_m, tile_n;
  tile_of_block(p, tile_m, tile_n);
  const int64_t m0 = tile_m * BM, n0 = tile_n * BN;
  TileLoader<T, BM, BK, kThreads> a_loader(p.a, p.a_mask, m0, p.m, p.k, p.a_act, p.slope);
  TileLoader<T, BN, BK, kThreads> b_loader(p.b, TileOperand<T>{}, n0, p.n, p.k);
  const int tx = Tile::thread_n(threadIdx.x), ty = Tile::thread_m(threadIdx.x);
  // Where register i of this thread's tile lies along m (along n) in the block tile.
  auto row_of = [&](int i) { return register_tile_offset<V, Tile::kThreadsM>(ty, i); };
  auto col_of = [&](int j) { return register_tile_offset<V, Tile::kThreadsN>(tx, j); };

  // Shared rows are k, columns the outer dimension.
  auto store_tiles = [&](int stage) {
    a_loader.store([&](int o, int kk, bool along_outer, const T(&chunk)[V]) {
      write_chunk(&a_tile[stage][0][0], BM + V, kk, o, along_outer, chunk);
    });
    b_loader.store([&](int o, int kk, bool along_outer, const T(&chunk)[V]) {
      write_chunk(&b_tile[stage][0][0], BN + V, kk, o, along_outer, chunk);
    });
  };

  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i) {
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  }

  int64_t k_begin, k_tiles;
  k_range_of_block<T, BK>(p, k_begin, k_tiles);
  pipelined_k_loop<BK>(k_begin, k_tiles, a_loader, b_loader, store_tiles, [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      alignas(16) T a[TM];
      alignas(16) T b[TN];
#pragma unroll
      for (int v = 0; v < TM / V; ++v) {
        *reinterpret_cast<Vec*>(&a[v * V]) = *reinterpret_cast<const Vec*>(
            &a_tile[stage][kk][row_of(v * V)]);
      }
#pragma unroll
      for (int v = 0; v < TN / V; ++v) {
        *reinterpret_cast<Vec*>(&b[v * V]) = *reinterpret_cast<const Vec*>(
            &b_tile[stage][kk][col_of(v * V)]);
      }
#pragma unroll
      for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
      }
    }
  });

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t row = m0 + row_of(i);
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int64_t col = n0 + col_of(j);
      finish(p, row, col, acc[i][j]);
    }
  }
}

template <typename T>
void launch(const GemmArgs& args, const GemmPlan& plan, void* workspace, cudaStream_t stream) {
  using Big = typename SimtTiles<T>::Big;
  using Small = typename SimtTiles<T>::Small;
  if (plan.big_tiles) {
    launch_gemm_kernel<T, Big>(simt_gemm_kernel<T, Big>, args, plan, workspace, stream);
  } else {
    launch_gemm_kernel<T, Small>(simt_gemm_kernel<T, Small>, args, plan, workspace, stream);
  }
}

}  // namespace

GemmPlan plan_simt_gemm(DType dtype, const GemmArgs& args, int sm_count) {
  switch (dtype) {
    case DType::f32:
      return plan_tiles<SimtTiles<float>::Big, SimtTiles<float>::Small, float>(args, sm_count);
    case DType::f64:
      return plan_tiles<SimtTiles<double>::Big, SimtTiles<double>::Small, double>(args, sm_count);
    default: throw std::runtime_error("fusedmlp: the CUDA-core GEMM runs float32 and float64");
  }
}

void launch_simt_gemm(DType dtype, const GemmArgs& args, const GemmPlan& plan, void* workspace,
                      cudaStream_t stream) {
  switch (dtype) {
    case DType::f32: return launch<float>(args, plan, workspace, stream);
    case DType::f64: return launch<double>(args, plan, workspace, stream);
    default: throw std::runtime_error("fusedmlp: the CUDA-core GEMM runs float32 and float64");
  }
}

}  // namespace fusedmlp::cuda
