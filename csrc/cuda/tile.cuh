// Building blocks shared by the GEMM kernels (gemm_simt.cu, gemm_mma.cu) and the column
// sums (column_sums.cu): scalar conversions, the activation derivative at A load,
// the strided tile loader, the pipelined k loop, the tiling plan and tile schedule, the
// fused epilogue and the split-k reduction. Their index math is in index_math.h, which
// the host tests (tests/cuda_host) check on the CPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda/gemm.h"
#include "cuda/index_math.h"

namespace fusedmlp::cuda {

// Accumulator type and conversions per storage type. torch builds with
// __CUDA_NO_HALF_CONVERSIONS__, so every conversion is spelled out.
template <typename T>
struct Scalar {  // float, double: accumulate in the type itself
  using Acc = T;
  static __device__ __forceinline__ Acc to_acc(T v) { return v; }
  static __device__ __forceinline__ T from_acc(Acc v) { return v; }
};
template <>
struct Scalar<__half> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
};
template <>
struct Scalar<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float v) {
    return __float2bfloat16_rn(v);
  }
};

template <typename T>
__device__ __forceinline__ T zero() {
  return Scalar<T>::from_acc(typename Scalar<T>::Acc(0));
}

// g * act'(s) (activation.h) in the accumulator type, rounded once to T: the backward's
// A operand (grad_y) as it is loaded.
template <typename T>
__device__ __forceinline__ T derived(Activation act, T g, T s, typename Scalar<T>::Acc slope) {
  return Scalar<T>::from_acc(
      activation_grad(act, Scalar<T>::to_acc(g), Scalar<T>::to_acc(s), slope));
}

// An Operand as the kernels load it: typed, with how a thread's chunk of kVec elements
// runs (along the contiguous dimension, so that a warp's loads are coalesced) and
// whether that chunk can be one 16-byte load.
template <typename T>
struct TileOperand {
  const T* data = nullptr;
  int64_t outer_stride = 0, k_stride = 0;
  bool along_outer = false;  // chunks run along the outer dimension (else along k)
  bool vector = false;       // 16-byte loads allowed for in-bounds chunks
};

template <typename T>
constexpr int kVecElems = 16 / static_cast<int>(sizeof(T));

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Host side: the TileOperand of `op`. `along_outer` < 0 picks the contiguous direction;
// the mask passes A's choice (its chunks must cover A's chunks element for element).
template <typename T>
TileOperand<T> tile_operand(const Operand& op, int along_outer = -1) {
  TileOperand<T> t;
  t.data = static_cast<const T*>(op.data);
  t.outer_stride = op.outer_stride;
  t.k_stride = op.k_stride;
  t.along_outer = along_outer < 0 ? chunks_along_outer(op.outer_stride, op.k_stride)
                                  : along_outer;
  const int64_t step = t.along_outer ? op.outer_stride : op.k_stride;
  const int64_t other = t.along_outer ? op.k_stride : op.outer_stride;
  t.vector = op.data != nullptr && step == 1 && other % kVecElems<T> == 0 && aligned16(op.data);
  return t;
}

// Writes a thread's chunk of N consecutive tile elements into a shared tile stored
// row-major with `pitch` elements per row: one 16-byte store when the chunk runs along a
// row (rows and chunk starts are 16-byte aligned), else one store per row.
template <typename T, int N>
__device__ __forceinline__ void write_chunk(T* tile, int pitch, int row, int col,
                                            bool along_row, const T (&chunk)[N]) {
  static_assert(N * sizeof(T) == 16, "a chunk is one 16-byte vector");
  if (along_row) {
    *reinterpret_cast<uint4*>(tile + row * pitch + col) = *reinterpret_cast<const uint4*>(chunk);
  } else {
#pragma unroll
    for (int e = 0; e < N; ++e) tile[(row + e) * pitch + col] = chunk[e];
  }
}

// Loads a OUTER x K tile of a TileOperand into registers (zero outside the matrix, the
// activation derivative applied if a saved operand is given), then hands each chunk to a
// caller-supplied store(outer, k, along_outer, chunk) (chunk = kVec elements from
// (outer, k) along the outer dimension or along k), so each kernel picks its own shared
// layout.
// Split in load() / store() so the global loads of the next tile are in flight while
// the current one is multiplied.
template <typename T, int OUTER, int K, int THREADS>
class TileLoader {
 public:
  static constexpr int kVec = kVecElems<T>;
  static constexpr int kChunks = OUTER * K / (THREADS * kVec);
  static_assert(kChunks >= 1 && OUTER * K % (THREADS * kVec) == 0, "tile too small");
  static_assert(OUTER % kVec == 0 && K % kVec == 0, "tile sides must hold whole chunks");

  __device__ TileLoader(const TileOperand<T>& op, const TileOperand<T>& mask, int64_t outer0,
                        int64_t outer_size, int64_t k_size,
                        Activation act = Activation::identity,
                        typename Scalar<T>::Acc slope = 0)
      : op_(op), mask_(mask), outer0_(outer0), outer_size_(outer_size), k_size_(k_size),
        act_(act), slope_(slope) {}

  __device__ __forceinline__ void load(int64_t k0) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      int o, kk;
      chunk_origin(c, o, kk);
      load_chunk(op_, outer0_ + o, k0 + kk, values_[c]);
      if (mask_.data != nullptr) load_chunk(mask_, outer0_ + o, k0 + kk, mask_values_[c]);
    }
  }

  template <class Store>
  __device__ __forceinline__ void store(Store&& store) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      int o, kk;
      chunk_origin(c, o, kk);
      if (mask_.data != nullptr) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          values_[c][e] = derived(act_, values_[c][e], mask_values_[c][e], slope_);
        }
      }
      store(o, kk, op_.along_outer, values_[c]);
    }
  }

 private:
  // Tile coordinates of chunk c of this thread: consecutive threads take consecutive
  // chunks along the contiguous direction.
  __device__ __forceinline__ void chunk_origin(int c, int& o, int& kk) const {
    const int chunk = threadIdx.x + c * THREADS;
    fusedmlp::cuda::chunk_origin<OUTER, K, kVec>(chunk, op_.along_outer, o, kk);
  }

  __device__ __forceinline__ void load_chunk(const TileOperand<T>& src, int64_t o, int64_t kk,
                                             T (&out)[kVec]) const {
    const bool along_outer = op_.along_outer;
    const int64_t pos = along_outer ? o : kk;
    const int64_t limit = along_outer ? outer_size_ : k_size_;
    const bool other_in = along_outer ? kk < k_size_ : o < outer_size_;
    const int64_t step = along_outer ? src.outer_stride : src.k_stride;
    if (other_in && src.vector && pos + kVec <= limit) {
      const T* p = src.data + o * src.outer_stride + kk * src.k_stride;
      *reinterpret_cast<uint4*>(out) = __ldg(reinterpret_cast<const uint4*>(p));
      return;
    }
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      out[e] = zero<T>();
      if (other_in && pos + e < limit) {
        out[e] = src.data[o * src.outer_stride + kk * src.k_stride + e * step];
      }
    }
  }

  // By value: a reference into the kernel's parameters could force a local copy.
  const TileOperand<T> op_;
  const TileOperand<T> mask_;
  const int64_t outer0_, outer_size_, k_size_;
  const Activation act_;
  const typename Scalar<T>::Acc slope_;
  alignas(16) T values_[kChunks][kVec];
  alignas(16) T mask_values_[kChunks][kVec];
};

// The main loop both GEMM kernels share, over this block's k tiles with two shared
// stages: tile t+1's global loads are issued before tile t is multiplied (compute(stage)),
// and stored to the other stage after. One barrier per tile: the other stage was last
// read before the previous barrier.
template <int BK, class ALoader, class BLoader, class StoreTiles, class Compute>
__device__ __forceinline__ void pipelined_k_loop(int64_t k_begin, int64_t k_tiles,
                                                 ALoader& a_loader, BLoader& b_loader,
                                                 StoreTiles&& store_tiles, Compute&& compute) {
  if (k_tiles > 0) {
    a_loader.load(k_begin);
    b_loader.load(k_begin);
    store_tiles(0);
  }
  __syncthreads();
  for (int64_t t = 0; t < k_tiles; ++t) {
    const int stage = static_cast<int>(t & 1);
    const bool has_next = t + 1 < k_tiles;
    if (has_next) {
      a_loader.load(k_begin + (t + 1) * BK);
      b_loader.load(k_begin + (t + 1) * BK);
    }
    compute(stage);
    if (has_next) store_tiles(stage ^ 1);
    __syncthreads();
  }
}

// What the GEMM kernels receive (by value, in constant parameter space).
template <typename T>
struct GemmParams {
  using Acc = typename Scalar<T>::Acc;
  int64_t m, n, k;
  TileOperand<T> a, b, a_mask;  // a_mask: the saved operand of A's derivative a_act
  Activation a_act;
  const T* bias;
  int64_t bias_stride;
  Activation act;
  Acc slope;
  T* c;
  T* c_pre;
  int64_t ldc;
  int64_t tiles_m, tiles_n;
  int64_t k_per_split;  // block (tile, blockIdx.y) sums k in [y, y + 1) * k_per_split
  Acc* partials;        // split k: [splits][m][n] raw sums, reduced by splitk_reduce_kernel
};

// Host side: the plan (index_math.h) of this problem.
template <class Big, class Small, typename Acc>
GemmPlan plan_tiles(const GemmArgs& args, int sm_count) {
  return plan_tiles<Big, Small, Acc>(args.m, args.n, args.k, sm_count);
}

template <typename T>
GemmParams<T> gemm_params(const GemmArgs& args, int block_m, int block_n) {
  GemmParams<T> p;
  p.m = args.m;
  p.n = args.n;
  p.k = args.k;
  p.a = tile_operand<T>(args.a);
  p.b = tile_operand<T>(args.b);
  p.a_mask = tile_operand<T>(args.a_act == Activation::identity ? Operand{} : args.a_saved,
                             p.a.along_outer);
  p.a_act = args.a_act;
  p.bias = static_cast<const T*>(args.bias);
  p.bias_stride = args.bias_stride;
  p.act = args.act;
  p.slope = static_cast<typename GemmParams<T>::Acc>(args.slope);
  p.c = static_cast<T*>(args.c);
  p.c_pre = static_cast<T*>(args.c_pre);
  p.ldc = args.ldc;
  p.tiles_m = ceil_div(args.m, block_m);
  p.tiles_n = ceil_div(args.n, block_n);
  p.k_per_split = args.k;
  p.partials = nullptr;
  return p;
}

// This block's output tile (blockIdx.x; index_math.h's tile_of_block).
template <typename T>
__device__ __forceinline__ void tile_of_block(const GemmParams<T>& p, int64_t& tile_m,
                                              int64_t& tile_n) {
  tile_of_block(int64_t{blockIdx.x}, p.tiles_m, p.tiles_n, tile_m, tile_n);
}

// The k range of this block's slice (blockIdx.y; index_math.h's k_range_of_slice).
template <typename T, int BK>
__device__ __forceinline__ void k_range_of_block(const GemmParams<T>& p, int64_t& k_begin,
                                                 int64_t& k_tiles) {
  k_range_of_slice(int64_t{blockIdx.y}, p.k, p.k_per_split, BK, k_begin, k_tiles);
}

// The fused epilogue, applied to each accumulator once, right before its single store.
template <typename T>
__device__ __forceinline__ void store_output(const GemmParams<T>& p, int64_t row, int64_t col,
                                             typename Scalar<T>::Acc v) {
  if (row >= p.m || col >= p.n) return;
  if (p.bias != nullptr) v += Scalar<T>::to_acc(p.bias[col * p.bias_stride]);
  if (p.c_pre != nullptr) p.c_pre[row * p.ldc + col] = Scalar<T>::from_acc(v);
  if (p.act != Activation::identity) v = activate(p.act, v, p.slope);
  p.c[row * p.ldc + col] = Scalar<T>::from_acc(v);
}

// Where a GEMM kernel's accumulator goes: the output through the epilogue, or (split k)
// this slice's raw partial sum.
template <typename T>
__device__ __forceinline__ void finish(const GemmParams<T>& p, int64_t row, int64_t col,
                                       typename Scalar<T>::Acc v) {
  if (p.partials == nullptr) {
    store_output(p, row, col, v);
  } else if (row < p.m && col < p.n) {
    p.partials[(int64_t{blockIdx.y} * p.m + row) * p.n + col] = v;
  }
}

// Split k, second pass: C = epilogue(sum of the slices' partials, in slice order).
template <typename T>
__global__ void __launch_bounds__(256) splitk_reduce_kernel(const GemmParams<T> p, int splits) {
  const int64_t size = p.m * p.n;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < size;
       i += int64_t{gridDim.x} * blockDim.x) {
    typename Scalar<T>::Acc v = p.partials[i];
    for (int s = 1; s < splits; ++s) v += p.partials[s * size + i];
    store_output(p, i / p.n, i % p.n, v);
  }
}

// Host side: launches `kernel` (a GEMM kernel over Tile) as `plan` says, then the split-k
// reduction if there is one. `workspace` holds plan.workspace_bytes.
template <typename T, class Tile>
void launch_gemm_kernel(void (*kernel)(GemmParams<T>), const GemmArgs& args,
                        const GemmPlan& plan, void* workspace, cudaStream_t stream) {
  GemmParams<T> p = gemm_params<T>(args, Tile::BM, Tile::BN);
  const int64_t tiles = p.tiles_m * p.tiles_n;
  if (tiles >= (int64_t{1} << 31)) {
    throw std::runtime_error("fusedmlp: output too large for one CUDA launch (" +
                             std::to_string(p.m) + " x " + std::to_string(p.n) + ")");
  }
  p.k_per_split = plan.k_per_split;
  if (plan.splits > 1) p.partials = static_cast<typename Scalar<T>::Acc*>(workspace);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(plan.splits));
  kernel<<<grid, Tile::kThreads, 0, stream>>>(p);
  if (plan.splits > 1) {
    const int64_t blocks = std::min<int64_t>((p.m * p.n + 255) / 256, 8192);
    splitk_reduce_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p, plan.splits);
  }
}

}  // namespace fusedmlp::cuda
