// grad_b: the column sums of grad_y times the activation derivative, deterministic.
// No atomics: rows are cut into a fixed number of chunks that depends only on the shape;
// pass 1 sums each (chunk, 32-column) block in a fixed order (8 row lanes, then the lanes
// in order) into a partial per chunk in the accumulator type (float; double for float64),
// pass 2 sums the partials with the same kernel. One chunk: pass 1 writes the result.
// Coalesced when grad_y rows are contiguous.
#include <algorithm>

#include "cuda/tile.cuh"

namespace fusedmlp::cuda {
namespace {

constexpr int kColumns = 32;   // threadIdx.x: consecutive columns (coalesced reads)
constexpr int kRowLanes = 8;   // threadIdx.y: rows lane, lane + 8, ...
constexpr int64_t kRowsPerChunk = 256;
constexpr int64_t kMaxChunks = 1024;

int64_t chunk_count(int64_t rows) {
  return std::max<int64_t>(1, std::min(kMaxChunks, (rows + kRowsPerChunk - 1) / kRowsPerChunk));
}

// out[chunk * cols + j] = sum of src(i, j) over the rows i of chunk (blockIdx.y), times
// act'(saved(i, j)) when saved has data.
template <typename In, typename Out>
__global__ void __launch_bounds__(kColumns * kRowLanes)
    column_sums_kernel(int64_t rows, int64_t cols, TileOperand<In> src, TileOperand<In> saved,
                       Activation act, typename Scalar<In>::Acc slope, int64_t rows_per_chunk,
                       Out* out) {
  using Acc = typename Scalar<In>::Acc;
  __shared__ Acc lane_sums[kRowLanes][kColumns];
  const int64_t col = int64_t{blockIdx.x} * kColumns + threadIdx.x;
  const int64_t begin = int64_t{blockIdx.y} * rows_per_chunk;
  const int64_t end = min(rows, begin + rows_per_chunk);
  Acc sum = Acc(0);
  if (col < cols) {
    for (int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) {
      In v = src.data[r * src.outer_stride + col * src.k_stride];
      if (saved.data != nullptr)
        v = derived(act, v, saved.data[r * saved.outer_stride + col * saved.k_stride], slope);
      sum += Scalar<In>::to_acc(v);
    }
  }
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    Acc total = lane_sums[0][threadIdx.x];
#pragma unroll
    for (int lane = 1; lane < kRowLanes; ++lane) total += lane_sums[lane][threadIdx.x];
    out[int64_t{blockIdx.y} * cols + col] = Scalar<Out>::from_acc(total);
  }
}

template <typename In, typename Out>
void launch_pass(int64_t rows, int64_t cols, const TileOperand<In>& src,
                 const TileOperand<In>& saved, Activation act, double slope, int64_t chunks,
                 Out* out, cudaStream_t stream) {
  const int64_t column_blocks = (cols + kColumns - 1) / kColumns;
  if (column_blocks >= (int64_t{1} << 31)) {
    throw std::runtime_error("fusedmlp: too many output features for one CUDA launch");
  }
  const dim3 grid(static_cast<unsigned>(column_blocks), static_cast<unsigned>(chunks));
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  column_sums_kernel<In, Out><<<grid, dim3(kColumns, kRowLanes), 0, stream>>>(
      rows, cols, src, saved, act, static_cast<typename Scalar<In>::Acc>(slope), rows_per_chunk,
      out);
}

template <typename T>
void column_sums(int64_t rows, int64_t cols, const Operand& src, const Operand& saved,
                 Activation act, double slope, void* workspace, void* out,
                 cudaStream_t stream) {
  using Acc = typename Scalar<T>::Acc;
  // The kernel indexes columns with k_stride: src is rows x cols = "outer x k".
  const TileOperand<T> g = tile_operand<T>(src);
  const TileOperand<T> s = tile_operand<T>(act == Activation::identity ? Operand{} : saved);
  const int64_t chunks = chunk_count(rows);
  if (chunks == 1) {
    launch_pass<T, T>(rows, cols, g, s, act, slope, 1, static_cast<T*>(out), stream);
    return;
  }
  Acc* partials = static_cast<Acc*>(workspace);
  launch_pass<T, Acc>(rows, cols, g, s, act, slope, chunks, partials, stream);
  const Operand partial_matrix{partials, cols, 1};
  launch_pass<Acc, T>(chunks, cols, tile_operand<Acc>(partial_matrix), TileOperand<Acc>{},
                      Activation::identity, 0.0, 1, static_cast<T*>(out), stream);
}

size_t accumulator_size(DType dtype) {
  return dtype == DType::f64 ? sizeof(double) : sizeof(float);
}

}  // namespace

size_t column_sums_workspace_bytes(DType dtype, int64_t rows, int64_t cols) {
  const int64_t chunks = chunk_count(rows);
  return chunks == 1 ? 0 : static_cast<size_t>(chunks * cols) * accumulator_size(dtype);
}

void derived_column_sums(DType dtype, int64_t rows, int64_t cols, Operand src, Operand saved,
                         Activation act, double slope, void* workspace, void* out,
                         cudaStream_t stream) {
  switch (dtype) {
    case DType::f32:
      return column_sums<float>(rows, cols, src, saved, act, slope, workspace, out, stream);
    case DType::f64:
      return column_sums<double>(rows, cols, src, saved, act, slope, workspace, out, stream);
    case DType::f16:
      return column_sums<__half>(rows, cols, src, saved, act, slope, workspace, out, stream);
    case DType::bf16:
      return column_sums<__nv_bfloat16>(rows, cols, src, saved, act, slope, workspace, out,
                                        stream);
  }
  throw std::runtime_error("fusedmlp: unknown dtype");
}

}  // namespace fusedmlp::cuda
