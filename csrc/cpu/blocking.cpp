// Cache blocking from the cache sizes (see blocking.h). Each formula names the cache it
// fills; at 32 KiB L1d / 1 MiB L2 they give the hand-tuned values of the AVX2 kernels
// (fp32 packed KC 256, NC 512, MC 192; dot KC 1024, MC 64, NC 512).
#include "cpu/blocking.h"

#include <algorithm>

#include "cpu/isa.h"

namespace fusedmlp::cpu {
namespace {

int64_t floor_to(int64_t value, int64_t multiple) { return value / multiple * multiple; }

// K per block is kept between these: below, the C tile is reloaded too often per FMA;
// above, a forced huge "L1" would ask for scratch buffers of hundreds of MiB.
constexpr int64_t kMinKc = 16, kMaxKc = 8192;

}  // namespace

BlockLimits packed_block_limits(const CacheSizes& caches, int mr, int nr, int64_t elem_size) {
  BlockLimits limits{};
  // One A micro-panel (MR x KC) and one B micro-panel (KC x NR) in 70% of L1d: the rest
  // is the C tile's lines and the next B panel arriving.
  limits.kc = std::clamp<int64_t>(
      floor_to(caches.l1d * 7 / 10 / ((mr + nr) * elem_size), 8), kMinKc, kMaxKc);
  // The packed B block (KC x NC), reused by every A micro-panel, in half of L2.
  limits.nc = std::max<int64_t>(nr, floor_to(caches.l2 / 2 / (limits.kc * elem_size), nr));
  // The packed A block (MC x KC) next to it in 3/16 of L2, read right after it is packed.
  limits.mc = std::max<int64_t>(mr, floor_to(caches.l2 * 3 / 16 / (limits.kc * elem_size), mr));
  return limits;
}

BlockLimits dot_block_limits(const CacheSizes& caches, int dot_mr, int64_t elem_size) {
  BlockLimits limits{};
  // The rows of one tile (dot_mr of A, kDotNR of B, KC each) in 7/8 of L1d.
  limits.kc = std::clamp<int64_t>(
      floor_to(caches.l1d * 7 / 8 / ((dot_mr + kDotNR) * elem_size), 16), kMinKc, kMaxKc);
  // The A block (MC x KC), re-read for every kDotNR rows of B, in a quarter of L2.
  limits.mc = std::max<int64_t>(1, caches.l2 / 4 / (limits.kc * elem_size));
  // The B rows of a column block (NC x KC) stream from L3 once per A block: twice L2.
  limits.nc = std::max<int64_t>(
      kDotNR, floor_to(caches.l2 * 2 / (limits.kc * elem_size), kDotNR));
  return limits;
}

bool prefers_dot(int64_t m, int64_t n, int64_t k, int64_t dot_max_rows, int nr) {
  // Narrow layers: 1024 x 128 -> 10 takes 27 vs 37 us (AVX-512), 31 vs 37 us (AVX2); at
  // K = 64 the dot tiles lose (1024 x 64 -> 24: 40 vs 20-37 us).
  constexpr int64_t kDotNarrowMinK = 128;
  return m <= dot_max_rows || (n < nr && k >= kDotNarrowMinK);
}

}  // namespace fusedmlp::cpu
