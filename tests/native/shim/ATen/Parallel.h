// Stand-in for torch's <ATen/Parallel.h> in the standalone GEMM check (gemm_check.cpp),
// which builds the CPU GEMM sources without torch: only this include path has it. The
// two calls gemm.cpp makes, with torch's contract: f(begin, end) on disjoint chunks of at
// least `grain_size` that cover [begin, end), on up to get_num_threads() threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace at {

// Set by the check (it runs every case on 1 and on several threads).
inline int& shim_num_threads() {
  static int threads = 1;
  return threads;
}

inline int get_num_threads() { return shim_num_threads(); }

template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& f) {
  if (begin >= end) return;
  const int64_t grain = std::max<int64_t>(grain_size, 1);
  const int64_t chunks =
      std::min<int64_t>(get_num_threads(), (end - begin + grain - 1) / grain);
  if (chunks <= 1) return f(begin, end);
  const int64_t step = (end - begin + chunks - 1) / chunks;
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(chunks);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = begin + c * step, hi = std::min(end, lo + step);
    if (lo >= hi) break;
    workers.emplace_back([&, c, lo, hi] {
      try {
        f(lo, hi);
      } catch (...) {
        errors[c] = std::current_exception();
      }
    });
  }
  for (std::thread& w : workers) w.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace at
