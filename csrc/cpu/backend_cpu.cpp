// The CPU backend of the fusedmlp ops: its dtype check and its GEMM (the shared
// GemmProblem in the typed form gemm.h computes); linear_ops.cpp does the rest.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>

#include "cpu/gemm.h"
#include "linear_ops.h"

namespace fusedmlp::cpu {
namespace {

DType cpu_dtype(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": the CPU kernels support float32 and float64, got x of dtype ",
              x.scalar_type());
  return x.scalar_type() == at::kFloat ? DType::f32 : DType::f64;
}

template <typename T>
void typed_gemm(const fusedmlp::GemmProblem& p) {
  TORCH_INTERNAL_ASSERT(p.c == nullptr || p.n == 0 || p.ldc == p.n,
                        "fusedmlp: the CPU GEMM writes a contiguous C");
  gemm(typed_problem<T>(p));
}

void cpu_gemm(DType dtype, const fusedmlp::GemmProblem& problem, const at::Tensor& /*like*/) {
  if (dtype == DType::f32) {
    typed_gemm<float>(problem);
  } else {
    typed_gemm<double>(problem);
  }
}

bool cpu_gemm_pair(DType dtype, const fusedmlp::GemmProblem& grad_x,
                   const fusedmlp::GemmProblem& grad_w) {
  if (dtype == DType::f32)
    return backward_sweep(typed_problem<float>(grad_x), typed_problem<float>(grad_w));
  return backward_sweep(typed_problem<double>(grad_x), typed_problem<double>(grad_w));
}

void cpu_activation_grad(DType dtype, Activation act, double slope, int order, int64_t count,
                         const void* g, const void* s, void* out, const at::Tensor& /*like*/) {
  if (dtype == DType::f32) {
    elementwise_grad(static_cast<const float*>(g), static_cast<const float*>(s),
                     static_cast<float*>(out), count, act, static_cast<float>(slope), order);
  } else {
    elementwise_grad(static_cast<const double*>(g), static_cast<const double*>(s),
                     static_cast<double*>(out), count, act, slope, order);
  }
}

// The whole-MLP forward's row blocks. What one block writes in every layer (its rows of
// each hidden output, saved pre-activation and y) takes at most kMlpBlockBytes, so each
// layer's output is still in L2 when the next layer reads it: a quarter of the smallest
// per-core L2 seen on the project's machines (Zen 3, 512 KiB), leaving room for the
// weights and x streaming past. Every block reads all the weights again, so:
// - at least kMlpMinBlockRows rows, over which a re-read of W from L2 or L3 costs a few
//   percent of the block's multiply-adds (fp32, 16 per cycle: W / 16 cycles from L2
//   against rows * W / 16 of arithmetic), and which put a block's GEMMs on the kernel the
//   whole batch would take: with 64-row blocks AVX-512 ran every block on the
//   dot-product kernel (its crossover there is 64 rows) while the per-layer ops ran the
//   packed one, and 256 x 128-512-128 took 450 us as one op against 327 us layer by layer
//   (1 thread, Zen 5); 256-row blocks: 1.00x, and no change on AVX2 (NOTES.md);
// - weights over kMlpMaxStreamedWeightBytes (beyond L2 on every machine here) would come
//   from L3 or memory once per block: then one block of all rows, the layers one by one
//   over the whole batch (the packed GEMM from 513 rows on), as the per-layer ops run.
// - a layer with fewer than kMlpMinStreamedK inputs: one block too. Blocks of <= 512
//   rows take the dot-product kernel, which pays a horizontal reduction per 3 x 4 tile:
//   at small K that costs more than cached activations save (65536 x 64-64-64-64-10,
//   1 thread: blocks 22.4 ms, layers over the batch on the packed kernel 18.2 ms).
// At most kMlpMaxBlockRows rows: the dot-product forward's limit (gemm.cpp), so every
// block's GEMMs read x and W in place where the ISA's dot-product kernel takes that many
// rows (AVX2). The seed's 784-128-10 (fp32) gets 256-row blocks: a batch of up to 256
// rows runs exactly as the per-layer ops do. With threads, the block count is made a
// multiple of the thread count where a block size in [kMlpMinBlockRows,
// kMlpMaxBlockRows] allows it (at::parallel_for gives each thread ceil(blocks / threads)
// blocks: 768 rows as 3 blocks ran 2 + 1, 1.49x over 1 thread; as 2 of 384, NOTES.md).
// Every block size in that range takes the same kernels for every row (AVX-512: the
// packed panels, above its 64-row dot limit; the other ISAs: the dot tiles, up to 512
// rows), whose bits do not depend on the row count, so results are the same for any
// thread count.
constexpr int64_t kMlpBlockBytes = 128 * 1024;
constexpr int64_t kMlpMinBlockRows = 256;
constexpr int64_t kMlpMaxBlockRows = 512;
constexpr int64_t kMlpMaxStreamedWeightBytes = 1024 * 1024;
constexpr int64_t kMlpMinStreamedK = 128;
// Multiply-adds per thread below which blocks are not spread over threads (as gemm.cpp's
// kMinWorkPerThread: ~5 us of work).
constexpr int64_t kMlpMinWorkPerThread = 256 * 1024;

void cpu_row_blocks(int64_t rows, int64_t bytes_per_row, int64_t macs_per_row,
                    int64_t weight_bytes, int64_t min_in_features,
                    c10::function_ref<void(int64_t, int64_t)> run) {
  if (weight_bytes > kMlpMaxStreamedWeightBytes || min_in_features < kMlpMinStreamedK) {
    run(0, rows);
    return;
  }
  int64_t block = std::clamp<int64_t>(kMlpBlockBytes / std::max<int64_t>(bytes_per_row, 1),
                                      kMlpMinBlockRows, kMlpMaxBlockRows);
  block = block / 16 * 16;  // whole micro-kernel row panels
  int64_t blocks = (rows + block - 1) / block;
  // Blocks go to threads when there are enough of them; with fewer blocks than threads
  // each GEMM spreads its own columns over the threads instead (gemm.cpp).
  const int64_t threads = at::get_num_threads();
  const bool parallel =
      blocks >= threads && threads > 1 && rows * macs_per_row >= 2 * kMlpMinWorkPerThread;
  if (parallel && blocks % threads != 0) {
    // Whole rounds: more, smaller blocks if they stay at least kMlpMinBlockRows, else
    // fewer, larger ones up to kMlpMaxBlockRows.
    for (const int64_t count : {(blocks / threads + 1) * threads, blocks / threads * threads}) {
      const int64_t size = ((rows + count - 1) / count + 15) / 16 * 16;
      if (size >= kMlpMinBlockRows && size <= kMlpMaxBlockRows &&
          (rows + size - 1) / size == count) {
        block = size;
        blocks = count;
        break;
      }
    }
  }
  const auto run_blocks = [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) run(b * block, std::min(rows, (b + 1) * block));
  };
  if (parallel) {
    at::parallel_for(0, blocks, 1, run_blocks);
  } else {
    run_blocks(0, blocks);
  }
}

// derive_once: the exp/erf/tanh derivatives cost more than the GEMMs' packing would
// repeat them (each GEMM packs grad_y once per column block): computed once instead.
constexpr Backend kCpu{&cpu_dtype,      &cpu_gemm,      &cpu_activation_grad,
                       /*derive_once=*/true, &cpu_row_blocks, &cpu_gemm_pair};

}  // namespace

TORCH_LIBRARY_IMPL(fusedmlp, CPU, m) { register_kernels<kCpu>(m); }

}  // namespace fusedmlp::cpu
