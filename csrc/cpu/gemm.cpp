// The blocked GEMM behind every CPU kernel: blocking, threading and the choice of path,
// written once for every ISA and dtype (packing: pack.cpp; register micro-kernels:
// isa_*.cpp). Packed path, loop order in BLIS names:
//   jc (a thread takes a run of row blocks of one column block) -> pc (K blocks, fixed
//   order) -> pack B block (L2) -> ic (row blocks) -> pack A block -> ir (MR panels of A;
//   one micro-panel stays in L1) -> jr (NR panels of B, or B itself when read in place)
// The forward x · W^T with contiguous operands and a small batch (up to the ISA's
// crossover) or a narrow W takes the dot-product kernel instead, which packs nothing.
// Small K (grad_w of a small batch) or a single MR panel of A (grad_x of a small batch)
// with a row-major B: the ir loop calls the row-panel kernel (MicroKernel::rows), which
// reads B in place and covers all columns of the panel in one call.
// Block sizes come from the detected caches (blocking.h). The K reduction of every output
// element runs in one thread in a fixed order, so the result is bitwise identical for any
// thread count.
#include "cpu/gemm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <vector>

#include "cpu/blocking.h"
#include "cpu/isa.h"
#include "cpu/pack.h"
#include "cpu/vec_activation.h"

namespace fusedmlp::cpu {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

template <typename T>
MicroKernel<T> pick(const MicroKernels& set);
template <>
MicroKernel<float> pick<float>(const MicroKernels& set) { return set.f32; }
template <>
MicroKernel<double> pick<double>(const MicroKernels& set) { return set.f64; }

template <typename T>
MicroKernel<T> active_microkernel() {
  return pick<T>(microkernels(active_isa()));
}

// Per-thread packing buffers, 64-byte aligned, grown on demand and reused across calls
// (no allocation per call once warm).
class ScratchBuffers {
 public:
  ~ScratchBuffers() {
    for (void* p : data_) std::free(p);
  }
  template <typename T>
  T* get(int slot, int64_t count) {
    const size_t bytes = static_cast<size_t>(round_up(std::max<int64_t>(count, 1) * sizeof(T), 64));
    if (bytes > size_[slot]) {
      std::free(data_[slot]);
      data_[slot] = std::aligned_alloc(64, bytes);
      size_[slot] = data_[slot] ? bytes : 0;
      if (!data_[slot]) throw std::bad_alloc();
    }
    return static_cast<T*>(data_[slot]);
  }

 private:
  void* data_[2] = {nullptr, nullptr};
  size_t size_[2] = {0, 0};
};

template <typename T>
T* scratch(int slot, int64_t count) {
  thread_local ScratchBuffers buffers;
  return buffers.get<T>(slot, count);
}

// GEMM calls per path since start-up (gemm_path_counts()).
std::atomic<int64_t> dot_calls{0}, packed_calls{0}, row_panel_calls{0}, sweep_calls{0};

struct Blocking {
  int64_t mc, nc, kc;  // block sizes (mc % MR == 0, nc % NR == 0)
  int64_t m_blocks, n_blocks;
};

// Cache-sized blocks, shrunk so that small problems still give every thread a task.
Blocking choose_blocking(int64_t m, int64_t n, int64_t k, int mr, int nr,
                         const BlockLimits& limits, int64_t threads) {
  const int64_t kc_max = limits.kc, nc_max = limits.nc, mc_max = limits.mc;
  Blocking b{};
  b.kc = std::max<int64_t>(1, ceil_div(k, std::max<int64_t>(1, ceil_div(k, kc_max))));
  int64_t m_blocks = ceil_div(m, mc_max), n_blocks = ceil_div(n, nc_max);
  const int64_t m_panels = ceil_div(m, mr), n_panels = ceil_div(n, nr);
  while (m_blocks * n_blocks < threads) {
    const bool can_m = m_blocks < m_panels, can_n = n_blocks < n_panels;
    if (!can_m && !can_n) break;
    if (can_n && (!can_m || ceil_div(n, n_blocks) >= ceil_div(m, m_blocks))) {
      ++n_blocks;
    } else {
      ++m_blocks;
    }
  }
  const auto finish = [&](int64_t mb, int64_t nb) {
    Blocking r = b;
    r.mc = round_up(ceil_div(m, mb), mr);
    r.nc = round_up(ceil_div(n, nb), nr);
    r.m_blocks = ceil_div(m, r.mc);
    r.n_blocks = ceil_div(n, r.nc);
    return r;
  };
  b = finish(m_blocks, n_blocks);
  // Whole rounds of tasks: at::parallel_for gives each thread ceil(tasks / threads) of
  // them, so 5 row blocks on 2 threads ran as 3 + 2 (1024 x 784 -> 128 forward, 2
  // threads: 82% of an even split). More, slightly smaller row (or column) blocks until
  // the count divides evenly, where the panels allow; the K blocks stay as they are.
  if (threads > 1) {
    for (int64_t mb = m_blocks, nb = n_blocks; (b.m_blocks * b.n_blocks) % threads != 0;) {
      if (mb < m_panels) {
        ++mb;
      } else if (nb < n_panels) {
        ++nb;
      } else {
        break;
      }
      const Blocking even = finish(mb, nb);
      if ((even.m_blocks * even.n_blocks) % threads == 0) b = even;
    }
  }
  return b;
}

// The epilogue of the tile (or block) of C at (i, j).
template <typename T>
TileEpilogue<T> tile_epilogue(const GemmProblem<T>& pb, int64_t i, int64_t j) {
  return {pb.act, pb.slope, pb.c_pre ? pb.c_pre + i * pb.n + j : nullptr};
}

// Whether the micro-kernel reads B's NR-column panels in place instead of packed: B must
// be row-major, and its rows an odd number of 64-byte lines apart, so that the KC rows of a
// panel spread over every L1 set (a row stride of 4 KiB, N = 1024 fp32, would put them
// all in one 8-way set). x and W of the backward GEMMs at 784 features qualify (49 lines).
template <typename T>
bool reads_b_in_place(const StridedMatrix<T>& b) {
  const int64_t row_bytes = b.row_stride * static_cast<int64_t>(sizeof(T));
  return b.col_stride == 1 && row_bytes % 64 == 0 && (row_bytes / 64) % 2 == 1;
}

// Whether B is read in place as a whole by the row-panel kernel (MicroKernel::rows), one
// call per MR-row panel of A, instead of NR-column panels (packed, or in place when
// reads_b_in_place): B row-major, and either K small (grad_w at a small batch: B is K
// rows of x, and a tile's work is a few rank-1 steps) or A a single panel (grad_x at a
// small batch: with one panel nothing reuses B, so packing it, 4 MiB of W at 1024 x 1024,
// only costs, whatever its row stride).
template <typename T>
bool small_k_or_few_rows(const GemmProblem<T>& pb, const MicroKernel<T>& uk) {
  return uk.rows && pb.b.col_stride == 1 && pb.k > 0 &&
         (pb.k <= kRowPanelMaxK || pb.m <= uk.mr);
}

// The row blocks [ib_begin, ib_end) of column block jb, in Goto's order: each K block of
// B is packed once and used by all of them (it stays in L2), then every row block packs
// its A block (or reads A in place) and runs the micro-kernel over it. Each element of C
// still sums its K blocks in ascending order, whatever the run's extent. With
// `whole_b_in_place` (small_k_or_few_rows) B is not packed into panels and each MR panel
// of A takes one MicroKernel::rows call over all nc columns: the same FMAs per element.
template <typename T>
void run_packed(const GemmProblem<T>& pb, const MicroKernel<T>& uk, const Blocking& blk,
                const T* bias_padded, int64_t jb, int64_t ib_begin, int64_t ib_end,
                bool whole_b_in_place) {
  const int64_t j0 = jb * blk.nc, nc = std::min(blk.nc, pb.n - j0);
  // A is read in place when it is K-contiguous and needs no mask or row sums (the forward
  // pass: x is row-major); otherwise it is packed into MR-row panels.
  const bool pack_a = pb.a.col_stride != 1 || pb.a_saved.data || pb.a_row_sums;
  T* a_packed = pack_a ? scratch<T>(0, blk.mc * blk.kc) : nullptr;
  // Row sums of A are taken once per row: by the runs of the first column block.
  T* row_sums = jb == 0 ? pb.a_row_sums : nullptr;
  // Full NR-column panels of a row-major B are read in place; only the edge panel is
  // packed (zero padded).
  const bool b_in_place = reads_b_in_place(pb.b);
  const bool has_epilogue = pb.act != Activation::identity || pb.c_pre;
  const int64_t nc_in_place = whole_b_in_place ? nc : b_in_place ? nc / uk.nr * uk.nr : 0;
  // The row-panel kernel reads B where it is, unless several panels re-read a B whose
  // rows share L1 sets (an even number of lines apart; grad_w at 16 x 1024 -> 1024 took
  // 203 us in place, 190 copied, 187 packed): then each K block is copied once, its rows an
  // odd number of lines apart (K <= 16 rows of x; the same values, so the same bits).
  const bool copy_b = whole_b_in_place && !b_in_place && pb.m > uk.mr;
  const int64_t lines = ceil_div(nc * static_cast<int64_t>(sizeof(T)), 64);
  const int64_t ldb_copy = (lines % 2 == 1 ? lines : lines + 1) * 64 / sizeof(T);
  T* b_packed = nc_in_place < nc ? scratch<T>(1, blk.kc * blk.nc)
                : copy_b        ? scratch<T>(1, blk.kc * ldb_copy)
                                : nullptr;
  int64_t p0 = 0;
  do {  // runs once when k == 0: C is then the epilogue of the bias alone
    const int64_t kc = std::min(blk.kc, pb.k - p0);
    const bool first = p0 == 0, last = p0 + kc >= pb.k;
    if (nc_in_place < nc)
      pack_b_block(pb.b, p0, kc, j0 + nc_in_place, nc - nc_in_place, uk, b_packed);
    if (copy_b)
      for (int64_t p = 0; p < kc; ++p)
        std::copy_n(&pb.b.data[(p0 + p) * pb.b.row_stride + j0], nc, b_packed + p * ldb_copy);
    for (int64_t ib = ib_begin; ib < ib_end; ++ib) {
      const int64_t i0 = ib * blk.mc, mc = std::min(blk.mc, pb.m - i0);
      if (pack_a) pack_a_block(pb, i0, mc, p0, kc, uk, a_packed, row_sums, first);
      for (int64_t ir = 0; ir < mc; ir += uk.mr) {
        const T* a = pack_a ? a_packed + ir * kc : &pb.a.data[(i0 + ir) * pb.a.row_stride + p0];
        const int64_t a_row_stride = pack_a ? 1 : pb.a.row_stride;
        const int64_t a_k_stride = pack_a ? uk.mr : 1;
        const int m_valid = static_cast<int>(std::min<int64_t>(uk.mr, mc - ir));
        if (whole_b_in_place) {
          T* c = pb.c + (i0 + ir) * pb.n + j0;
          uk.rows(kc, a, a_row_stride, a_k_stride,
                  copy_b ? b_packed : &pb.b.data[p0 * pb.b.row_stride + j0],
                  copy_b ? ldb_copy : pb.b.row_stride, c, pb.n, m_valid, nc,
                  bias_padded ? bias_padded + j0 : nullptr, !first);
          // The epilogue on the finished panel, while it is in cache (as run_dot's).
          if (last && has_epilogue)
            uk.activate(c, pb.n, m_valid, static_cast<int>(nc), tile_epilogue(pb, i0 + ir, j0));
          continue;
        }
        for (int64_t jr = 0; jr < nc; jr += uk.nr) {
          const bool in_place = jr < nc_in_place;
          const TileEpilogue<T> epilogue = tile_epilogue(pb, i0 + ir, j0 + jr);
          const T* b = in_place ? &pb.b.data[p0 * pb.b.row_stride + j0 + jr]
                                : b_packed + (jr - nc_in_place) * kc;
          uk.run(kc, a, a_row_stride, a_k_stride, b, in_place ? pb.b.row_stride : uk.nr,
                 pb.c + (i0 + ir) * pb.n + j0 + jr, pb.n, m_valid,
                 static_cast<int>(std::min<int64_t>(uk.nr, nc - jr)),
                 bias_padded ? bias_padded + j0 + jr : nullptr, !first,
                 last && has_epilogue ? &epilogue : nullptr);
        }
      }
    }
    p0 += kc;
  } while (p0 < pb.k);
}

// The same blocks on the dot-product path (A and B^T both K-contiguous, nothing to derive
// or sum): tiles are read in place, B rows walked 4 at a time with the A block streamed
// past them; the activation is applied to each finished block.
template <typename T>
void run_dot(const GemmProblem<T>& pb, const MicroKernel<T>& uk, const Blocking& blk,
             const T* bias_padded, int64_t jb, int64_t ib_begin, int64_t ib_end) {
  const int64_t j0 = jb * blk.nc, nc = std::min(blk.nc, pb.n - j0);
  const StridedMatrix<T> bt = pb.b.transposed();  // n x k, rows K-contiguous
  for (int64_t ib = ib_begin; ib < ib_end; ++ib) {
    const int64_t i0 = ib * blk.mc, mc = std::min(blk.mc, pb.m - i0);
    int64_t p0 = 0;
    do {  // runs once when k == 0: C is then the epilogue of the bias alone
      const int64_t kc = std::min(blk.kc, pb.k - p0);
      const bool first = p0 == 0;
      for (int64_t jr = 0; jr < nc; jr += kDotNR) {
        const T* b = &bt.data[(j0 + jr) * bt.row_stride + p0];
        const int n_valid = static_cast<int>(std::min<int64_t>(kDotNR, nc - jr));
        for (int64_t ir = 0; ir < mc; ir += uk.dot_mr) {
          uk.dot(kc, &pb.a.data[(i0 + ir) * pb.a.row_stride + p0], pb.a.row_stride, b,
                 bt.row_stride, pb.c + (i0 + ir) * pb.n + j0 + jr, pb.n,
                 static_cast<int>(std::min<int64_t>(uk.dot_mr, mc - ir)), n_valid,
                 bias_padded ? bias_padded + j0 + jr : nullptr, !first);
        }
      }
      p0 += kc;
    } while (p0 < pb.k);
    // The epilogue on the finished block, while it is still in cache.
    if (pb.act != Activation::identity || pb.c_pre)
      uk.activate(pb.c + i0 * pb.n + j0, pb.n, static_cast<int>(mc), static_cast<int>(nc),
                  tile_epilogue(pb, i0, j0));
  }
}

}  // namespace

template <typename T>
void gemm(const GemmProblem<T>& pb) {
  if (pb.m == 0) return;
  if (pb.n == 0) {  // no C to compute, but the row sums of A may still be wanted
    if (pb.a_row_sums) derived_row_sums(pb);
    return;
  }
  const MicroKernel<T> uk = active_microkernel<T>();
  if (uk.mr > kMaxMR) throw std::logic_error("fusedmlp: micro-kernel MR exceeds kMaxMR");
  // x · W^T with row-major x and W (the forward pass) needs no packing at all: the
  // dot-product kernel reads both in place. It wins where packing B is a large share of
  // the work (few rows of A per packed panel), up to a crossover that depends on the ISA's
  // kernel pair (AVX2: ~512 rows, AVX-512 on Zen 5: ~64; prefers_dot, NOTES.md).
  // Everything else (strided operands, the masked backward GEMMs) goes through packed
  // panels of A, and of B unless small_k_or_few_rows reads all of it in place.
  const bool dot = uk.dot && pb.a.col_stride == 1 && pb.b.row_stride == 1 &&
                   !pb.a_saved.data && !pb.a_row_sums &&
                   prefers_dot(pb.m, pb.n, pb.k, uk.dot_max_rows, uk.nr);
  const bool whole_b_in_place = !dot && small_k_or_few_rows(pb, uk);
  (dot ? dot_calls : whole_b_in_place ? row_panel_calls : packed_calls)
      .fetch_add(1, std::memory_order_relaxed);
  // Threads only for work that outweighs waking them: a tiny GEMM (an MLP's 128 -> 10
  // layer) runs faster on the calling thread, and does not wait on a descheduled worker.
  const int64_t threads = std::clamp<int64_t>(pb.m * pb.n * pb.k / kMinWorkPerThread, 1,
                                              at::get_num_threads());
  // Block sizes from this machine's caches (blocking.h), read on every call so that an
  // override (tests: forced small or large caches) applies from the next GEMM on.
  const CacheSizes caches = cache_sizes();
  const Blocking blk =
      dot ? choose_blocking(pb.m, pb.n, pb.k, uk.dot_mr, kDotNR,
                            dot_block_limits(caches, uk.dot_mr, sizeof(T)), threads)
          : choose_blocking(pb.m, pb.n, pb.k, uk.mr, uk.nr,
                            packed_block_limits(caches, uk.mr, uk.nr, sizeof(T)), threads);
  // The micro-kernel loads NR bias values at once: give it a zero-padded contiguous copy.
  std::vector<T> bias_padded;
  if (pb.bias) {
    bias_padded.assign(round_up(pb.n, uk.nr), T(0));
    for (int64_t j = 0; j < pb.n; ++j) bias_padded[j] = pb.bias[j * pb.bias_stride];
  }
  const T* bias_ptr = pb.bias ? bias_padded.data() : nullptr;
  // Tasks are (column block, row block) pairs numbered column-major, so a thread's range
  // is a few runs of row blocks sharing a column block (and its packed B).
  const auto run_tasks = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end;) {
      const int64_t jb = t / blk.m_blocks;
      const int64_t run_end = std::min(end, (jb + 1) * blk.m_blocks);
      const int64_t ib_begin = t - jb * blk.m_blocks, ib_end = run_end - jb * blk.m_blocks;
      if (dot) {
        run_dot(pb, uk, blk, bias_ptr, jb, ib_begin, ib_end);
      } else {
        run_packed(pb, uk, blk, bias_ptr, jb, ib_begin, ib_end, whole_b_in_place);
      }
      t = run_end;
    }
  };
  const int64_t tasks = blk.m_blocks * blk.n_blocks;
  if (threads == 1) {
    run_tasks(0, tasks);
  } else {
    at::parallel_for(0, tasks, 1, run_tasks);
  }
}

template <typename T>
bool backward_sweep(const GemmProblem<T>& gx, const GemmProblem<T>& gw) {
  const int64_t rows = gx.m, n_out = gx.k, cols = gx.n;
  // Exactly the pair linear_ops.cpp builds: gx = g' · W (B = W, n_out x cols), gw = g'ᵀ · x
  // (A = gᵀ, B = x, rows x cols), plain stores (no bias, activation or pre-activation).
  const bool pair = rows >= 1 && rows <= 2 && n_out > 0 && cols > 0 && gw.m == n_out &&
                    gw.n == cols && gw.k == rows && gx.c && gw.c && gx.a.data == gw.a.data &&
                    gx.a_saved.data == gw.a_saved.data && gx.a_act == gw.a_act;
  const bool plain = !gx.bias && !gw.bias && !gx.c_pre && !gw.c_pre &&
                     gx.act == Activation::identity && gw.act == Activation::identity &&
                     !gx.a_row_sums;
  // W and x rows read with vector loads; a derivative the scalar loop below computes with
  // the packers' bits (a select or one multiply; exp/erf/tanh are derived before on CPU).
  const Activation act = gx.a_saved.data ? gx.a_act : Activation::identity;
  if (!pair || !plain || gx.b.col_stride != 1 || gw.b.col_stride != 1 || transcendental(act))
    return false;
  const MicroKernel<T> uk = active_microkernel<T>();
  if (!uk.sweep) return false;
  sweep_calls.fetch_add(1, std::memory_order_relaxed);
  // d = g' (rows x n_out), and grad_b as the packers sum it: from zero, rows ascending.
  T* d = scratch<T>(0, rows * n_out);
  visit_activation(act, [&](auto a) {
    using A = decltype(a);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t n = 0; n < n_out; ++n)
        d[r * n_out + n] = gx.a_saved.data ? grad_scalar<A>(gx.a(r, n), gx.a_saved(r, n), gx.slope)
                                           : gx.a(r, n);
  });
  // Summed from d as stored, not through derived_row_sums: that one adds each derivative
  // as it is computed, which a compiler may contract into an FMA (aarch64 does, for
  // relu_squared's g * 2z), and the packers' sums, which these must match bit for bit,
  // add the stored value.
  if (gw.a_row_sums) {
    for (int64_t n = 0; n < n_out; ++n) {
      T sum = T(0);
      for (int64_t r = 0; r < rows; ++r) sum += d[r * n_out + n];
      gw.a_row_sums[n] = sum;
    }
  }
  // Column ranges per thread (whole cache lines): every element's sums run in one thread
  // in the same order, so the bits do not depend on the thread count. Threads as gemm()
  // would give the two GEMMs: none for a small layer.
  const int64_t work = 2 * rows * n_out * cols;
  const int64_t threads =
      std::clamp<int64_t>(work / kMinWorkPerThread, 1, at::get_num_threads());
  const int64_t chunk = round_up(ceil_div(cols, threads), 64 / sizeof(T));
  const auto run = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t j0 = t * chunk, j1 = std::min(cols, j0 + chunk);
      if (j0 >= j1) continue;
      uk.sweep(static_cast<int>(rows), n_out, j1 - j0, d, n_out, gx.b.data + j0,
               gx.b.row_stride, gw.b.data + j0, gw.b.row_stride, gx.c + j0, gx.n, gw.c + j0,
               gw.n);
    }
  };
  if (threads == 1) {
    run(0, 1);
  } else {
    at::parallel_for(0, threads, 1, run);
  }
  return true;
}

GemmPathCounts gemm_path_counts() {
  return {dot_calls.load(std::memory_order_relaxed), packed_calls.load(std::memory_order_relaxed),
          row_panel_calls.load(std::memory_order_relaxed),
          sweep_calls.load(std::memory_order_relaxed)};
}

double fma_peak_gflops() {
  const MicroKernel<float> uk = active_microkernel<float>();
  const int64_t threads = at::get_num_threads();
  constexpr int64_t kRounds = 1 << 20;  // ~2 ms per thread at 10 GF/s-class cores
  double best = 0.0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::vector<double> flops(threads, 0.0);
    const auto start = std::chrono::steady_clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) flops[t] = uk.fma_probe(kRounds);
    });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double total = 0.0;
    for (double f : flops) total += f;
    best = std::max(best, total / seconds / 1e9);
  }
  return best;
}

template <typename T>
BlockingInfo blocking_info() {
  const MicroKernel<T> uk = active_microkernel<T>();
  const CacheSizes caches = cache_sizes();
  return {uk.mr, uk.nr, uk.dot_mr, uk.dot_max_rows,
          packed_block_limits(caches, uk.mr, uk.nr, sizeof(T)),
          dot_block_limits(caches, uk.dot_mr, sizeof(T))};
}

template <typename T>
void elementwise_grad(const T* g, const T* s, T* out, int64_t count, Activation act, T slope,
                      int order) {
  const MicroKernel<T> uk = active_microkernel<T>();
  at::parallel_for(0, count, 16384, [&](int64_t begin, int64_t end) {
    uk.elementwise_grad(g + begin, s + begin, out + begin, end - begin, act, slope, order);
  });
}

template <typename T>
void derived_row_sums(const GemmProblem<T>& pb) {
  const Activation act = pb.a_saved.data ? pb.a_act : Activation::identity;
  // Rows per task: enough additions to outweigh waking a thread (a small batch's grad_b
  // is a few thousand additions and stays on the calling thread).
  const int64_t grain = std::max<int64_t>(64, kMinWorkPerThread / std::max<int64_t>(pb.k, 1));
  visit_activation(act, [&](auto a) {
    using A = decltype(a);
    at::parallel_for(0, pb.m, grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        T sum = T(0);  // same order as the sums taken while packing: one row, k ascending
        for (int64_t c = 0; c < pb.k; ++c)
          sum += pb.a_saved.data ? grad_scalar<A>(pb.a(r, c), pb.a_saved(r, c), pb.slope)
                                 : pb.a(r, c);
        pb.a_row_sums[r] = sum;
      }
    });
  });
}

template void gemm<float>(const GemmProblem<float>&);
template void gemm<double>(const GemmProblem<double>&);
template bool backward_sweep<float>(const GemmProblem<float>&, const GemmProblem<float>&);
template bool backward_sweep<double>(const GemmProblem<double>&, const GemmProblem<double>&);
template BlockingInfo blocking_info<float>();
template BlockingInfo blocking_info<double>();
template void elementwise_grad<float>(const float*, const float*, float*, int64_t, Activation,
                                      float, int);
template void elementwise_grad<double>(const double*, const double*, double*, int64_t,
                                       Activation, double, int);
template void derived_row_sums<float>(const GemmProblem<float>&);
template void derived_row_sums<double>(const GemmProblem<double>&);

}  // namespace fusedmlp::cpu
