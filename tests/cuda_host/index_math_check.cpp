// Host-side checks of the CUDA kernels' index math: the functions of
// csrc/cuda/index_math.h that gemm_mma.cu, gemm_simt.cu and tile.cuh call, run on the CPU
// (our "interpreter mode"; no GPU, no CUDA toolkit, no torch). Built and run by
// tests/test_cuda_index_math.py.
//
// ldmatrix and mma.sync.m16n8k16 are emulated from the PTX ISA's tables ("Warp-level matrix
// load instruction: ldmatrix", "Matrix Fragments for mma.m16n8k16 with floating point
// type"), not from the kernels' comments. Each GEMM check then walks a whole launch the
// way the kernels do (block -> tile, k slices, chunk loads into the shared layout, the
// ldmatrix row addresses, the mma tiles of each warp, the accumulators' (row, col)) and
// compares with A·Bᵀ computed directly. Values are small integers, so every sum is exact
// and any misplaced element shows.
//
// Prints one line per check and every failure with its context; exits 1 if any failed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/index_math.h"

using namespace fusedmlp::cuda;

namespace {

int64_t g_failures = 0;

#define EXPECT(cond, ...)                                                           \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      if (++g_failures <= 25) {                                                     \
        std::fprintf(stderr, "FAILED at index_math_check.cpp:%d: %s\n    ", __LINE__, \
                     #cond);                                                        \
        std::fprintf(stderr, __VA_ARGS__);                                          \
        std::fputc('\n', stderr);                                                   \
      }                                                                             \
    }                                                                               \
  } while (0)

// Runs one named check and reports it.
template <class Check>
void run(const std::string& name, Check&& check) {
  const int64_t before = g_failures;
  check();
  const int64_t failed = g_failures - before;
  if (failed == 0) {
    std::printf("ok    %s\n", name.c_str());
  } else {
    std::printf("FAIL  %s (%lld failed expectations)\n", name.c_str(),
                static_cast<long long>(failed));
  }
  std::fflush(stdout);
}

// ---- 16-bit floats ------------------------------------------------------------------

enum class Half16 { f16, bf16 };
const char* name_of(Half16 t) { return t == Half16::f16 ? "f16" : "bf16"; }

float decode(uint16_t bits, Half16 type) {
  if (type == Half16::bf16) {
    const uint32_t word = uint32_t{bits} << 16;
    float v;
    std::memcpy(&v, &word, sizeof v);
    return v;
  }
  const int sign = bits >> 15, exponent = (bits >> 10) & 31, mantissa = bits & 1023;
  float v;
  if (exponent == 0) {
    v = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    v = mantissa ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(1024 + mantissa), exponent - 25);
  }
  return sign ? -v : v;
}

// Exact for the small integers the checks use (asserted).
uint16_t encode(float v, Half16 type) {
  uint16_t bits = 0;
  if (type == Half16::bf16) {
    uint32_t word;
    std::memcpy(&word, &v, sizeof word);
    bits = static_cast<uint16_t>(word >> 16);
  } else if (v != 0.0f) {
    int e;
    const float f = std::frexp(std::fabs(v), &e);  // |v| = f * 2^e, f in [0.5, 1)
    const int mantissa = static_cast<int>((2.0f * f - 1.0f) * 1024.0f);
    bits = static_cast<uint16_t>((v < 0 ? 0x8000 : 0) | ((e - 1 + 15) << 10) | mantissa);
  }
  EXPECT(decode(bits, type) == v, "%g is not exact in %s", v, name_of(type));
  return bits;
}

// ---- PTX emulation ------------------------------------------------------------------

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16: lanes 8i .. 8i + 7 give the
// addresses of rows 0..7 of matrix i (8 elements, 16 bytes, 16-byte aligned; lanes past
// the last matrix are ignored). Register i of lane l receives two elements of matrix i,
// the first in the low half: (row, column) = (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1);
// with .trans, those of the transposed matrix: (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4).
void ldmatrix(const std::vector<uint16_t>& shared, const int (&row_offset)[32], int num,
              bool trans, uint32_t (&regs)[32][4]) {
  for (int lane = 0; lane < 8 * num; ++lane) {
    EXPECT(row_offset[lane] % 8 == 0 && row_offset[lane] >= 0 &&
               row_offset[lane] + 8 <= static_cast<int>(shared.size()),
           "ldmatrix: lane %d addresses element %d of %zu (rows must be 16-byte aligned, "
           "inside the tile)",
           lane, row_offset[lane], shared.size());
  }
  auto element = [&](int matrix, int row, int col) -> uint32_t {
    const int at = row_offset[matrix * 8 + row] + col;
    return at >= 0 && at < static_cast<int>(shared.size()) ? shared[at] : 0;
  };
  for (int lane = 0; lane < 32; ++lane) {
    const int group = lane / 4, pair = lane % 4;
    for (int i = 0; i < num; ++i) {
      const uint32_t lo = trans ? element(i, 2 * pair, group) : element(i, group, 2 * pair);
      const uint32_t hi =
          trans ? element(i, 2 * pair + 1, group) : element(i, group, 2 * pair + 1);
      regs[lane][i] = lo | hi << 16;
    }
  }
}

// D = A·B + C for mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, from
// the PTX ISA's fragment tables (g = groupID = lane >> 2, t = threadID_in_group = lane % 4;
// element i of a fragment is half i % 2 of register i / 2):
//   A, 16 x 16:      a_i at row g + 8 * (i in {2, 3, 6, 7}), col 2t + (i & 1) + 8 * (i >= 4)
//   B, 16 x 8 (k x n): b_i at row 2t + (i & 1) + 8 * (i >= 2), col g
//   C, D, 16 x 8:    c_i at row g + 8 * (i >= 2), col 2t + (i & 1)
struct MmaTileAcc {
  float c[32][4] = {};
};
void mma_m16n8k16(MmaTileAcc& acc, const uint32_t (&a)[32][4], const uint32_t (&b)[32][2],
                  Half16 type) {
  float A[16][16], B[16][8];
  int a_seen[16][16] = {}, b_seen[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane % 4;
    for (int i = 0; i < 8; ++i) {
      const int row = g + ((i / 2) % 2 == 1 ? 8 : 0), col = 2 * t + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = decode(static_cast<uint16_t>(a[lane][i / 2] >> (16 * (i % 2))), type);
      ++a_seen[row][col];
    }
    for (int i = 0; i < 4; ++i) {
      const int row = 2 * t + (i & 1) + (i >= 2 ? 8 : 0), col = g;
      B[row][col] = decode(static_cast<uint16_t>(b[lane][i / 2] >> (16 * (i % 2))), type);
      ++b_seen[row][col];
    }
  }
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 16; ++c) {
      EXPECT(a_seen[r][c] == 1, "emulator: A(%d, %d) held %d times", r, c, a_seen[r][c]);
    }
    for (int c = 0; c < 8; ++c) {
      EXPECT(b_seen[r][c] == 1, "emulator: B(%d, %d) held %d times", r, c, b_seen[r][c]);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
      float sum = acc.c[lane][i];
      for (int kk = 0; kk < 16; ++kk) sum += A[row][kk] * B[kk][col];
      acc.c[lane][i] = sum;
    }
  }
}

// ---- Operands -----------------------------------------------------------------------

// An outer x k operand with small integer values, stored with the outer dimension or k
// contiguous (the other stride padded, as a sliced tensor would be).
struct Operand2D {
  int64_t outer, k, outer_stride, k_stride;
  std::vector<double> values;
  double at(int64_t o, int64_t kk) const { return values[o * outer_stride + kk * k_stride]; }
};

Operand2D make_operand(int64_t outer, int64_t k, bool outer_contiguous, std::mt19937& rng) {
  Operand2D op{outer, k, outer_contiguous ? 1 : k + 3, outer_contiguous ? outer + 5 : 1, {}};
  const int64_t size = outer_contiguous ? op.k_stride * k : op.outer_stride * outer;
  op.values.assign(static_cast<size_t>(size), 0.0);
  std::uniform_int_distribution<int> value(-3, 3);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t kk = 0; kk < k; ++kk) {
      op.values[o * op.outer_stride + kk * op.k_stride] = value(rng);
    }
  }
  return op;
}

const char* layout_name(bool outer_contiguous) {
  return outer_contiguous ? "outer-contiguous" : "k-contiguous";
}

// Emulates a TileLoader<T, OUTER, K, THREADS> filling one shared stage: every thread's
// chunks (chunk_origin), each element read from the matrix or zero outside it, stored
// where `store_offset(o, kk, along_outer, e)` says (element e of the chunk from (o, kk)).
// Checks that the chunks cover the tile exactly once and that no shared element is
// written twice. The stage is first filled with NaN, so that a read of an element no chunk
// wrote (a pad, a stale value) shows in the product.
template <int OUTER, int K, int VEC, int THREADS, class Elem, class Encode, class StoreOffset>
void load_tile(const Operand2D& src, int64_t outer0, int64_t k0, bool along_outer,
               std::vector<Elem>& shared, Encode encode_value, StoreOffset store_offset) {
  static_assert(OUTER * K % (THREADS * VEC) == 0, "the kernels' TileLoader asserts this too");
  constexpr int kChunks = OUTER * K / (THREADS * VEC);
  if constexpr (sizeof(Elem) == 2) {
    std::fill(shared.begin(), shared.end(), Elem{0x7fff});  // NaN as float16 and bfloat16
  } else {
    std::fill(shared.begin(), shared.end(), Elem(NAN));
  }
  std::vector<int> tile_seen(OUTER * K, 0), shared_seen(shared.size(), 0);
  for (int thread = 0; thread < THREADS; ++thread) {
    for (int c = 0; c < kChunks; ++c) {
      int o, kk;
      chunk_origin<OUTER, K, VEC>(thread + c * THREADS, along_outer, o, kk);
      for (int e = 0; e < VEC; ++e) {
        const int eo = along_outer ? o + e : o, ek = along_outer ? kk : kk + e;
        if (eo < 0 || eo >= OUTER || ek < 0 || ek >= K) {
          EXPECT(false, "chunk %d of thread %d: element %d at (%d, %d) is outside the %d x %d tile",
                 c, thread, e, eo, ek, OUTER, K);
          continue;
        }
        ++tile_seen[eo * K + ek];
        const int at = store_offset(o, kk, along_outer, e);
        if (at < 0 || at >= static_cast<int>(shared.size())) {
          EXPECT(false, "tile element (%d, %d) stored at %d, outside the %zu-element stage", eo,
                 ek, at, shared.size());
          continue;
        }
        ++shared_seen[at];
        const int64_t go = outer0 + eo, gk = k0 + ek;
        shared[at] = encode_value(go < src.outer && gk < src.k ? src.at(go, gk) : 0.0);
      }
    }
  }
  for (int i = 0; i < OUTER * K; ++i) {
    EXPECT(tile_seen[i] == 1, "tile element (%d, %d) loaded %d times (along_outer=%d)", i / K,
           i % K, tile_seen[i], along_outer);
  }
  for (size_t i = 0; i < shared.size(); ++i) {
    EXPECT(shared_seen[i] <= 1, "shared element %zu written %d times", i, shared_seen[i]);
  }
}

// The outputs of a launch: per k slice, the value each (row, col) received and how often.
struct LaunchOutput {
  int64_t m, n;
  std::vector<double> partials;
  std::vector<int> writes;
  LaunchOutput(int splits, int64_t m_, int64_t n_)
      : m(m_), n(n_), partials(static_cast<size_t>(splits * m_ * n_), 0.0),
        writes(partials.size(), 0) {}
  void finish(int64_t slice, int64_t row, int64_t col, double v) {
    if (row >= m || col >= n) return;  // the kernels' finish() drops these too
    EXPECT(row >= 0 && col >= 0, "accumulator sent to (%lld, %lld)", static_cast<long long>(row),
           static_cast<long long>(col));
    if (row < 0 || col < 0) return;
    const size_t at = static_cast<size_t>((slice * m + row) * n + col);
    partials[at] = v;
    ++writes[at];
  }
};

// Compares a launch's outputs with A·Bᵀ: every (row, col) written once per slice, the
// slices' sum (in slice order, as splitk_reduce_kernel adds them) exact.
void compare(const LaunchOutput& out, int splits, const Operand2D& a, const Operand2D& b,
             const std::string& what) {
  int64_t reported = 0;
  for (int64_t row = 0; row < out.m; ++row) {
    for (int64_t col = 0; col < out.n; ++col) {
      double sum = 0, want = 0;
      for (int s = 0; s < splits; ++s) {
        const size_t at = static_cast<size_t>((s * out.m + row) * out.n + col);
        EXPECT(out.writes[at] == 1, "%s: C(%lld, %lld) written %d times by k slice %d",
               what.c_str(), static_cast<long long>(row), static_cast<long long>(col),
               out.writes[at], s);
        sum += out.partials[at];
      }
      for (int64_t kk = 0; kk < a.k; ++kk) want += a.at(row, kk) * b.at(col, kk);
      if (sum != want && reported++ < 3) {
        EXPECT(sum == want, "%s: C(%lld, %lld) = %g, A·Bᵀ has %g", what.c_str(),
               static_cast<long long>(row), static_cast<long long>(col), sum, want);
      }
    }
  }
  if (reported > 3) {
    EXPECT(false, "%s: %lld wrong outputs in all", what.c_str(),
           static_cast<long long>(reported));
  }
}

std::string describe(const char* kernel, int64_t m, int64_t n, int64_t k, const GemmPlan& plan,
                     bool a_outer, bool b_outer) {
  char text[256];
  std::snprintf(text, sizeof text, "%s %lldx%lldx%lld %s tiles, %d k slice(s), A %s, B %s",
                kernel, static_cast<long long>(m), static_cast<long long>(n),
                static_cast<long long>(k), plan.big_tiles ? "big" : "small", plan.splits,
                layout_name(a_outer), layout_name(b_outer));
  return text;
}

// Walks a launch as the kernels' grid does: every block (blockIdx.x -> output tile by
// tile_of_block) and k slice (blockIdx.y -> k_range_of_slice), calling
// block(m0, n0, slice, k_begin, k_tiles).
template <class Tile, class Block>
void for_each_block(int64_t m, int64_t n, int64_t k, const GemmPlan& plan, Block&& block) {
  const int64_t tiles_m = ceil_div(m, Tile::BM), tiles_n = ceil_div(n, Tile::BN);
  for (int64_t id = 0; id < tiles_m * tiles_n; ++id) {
    int64_t tile_m, tile_n;
    tile_of_block(id, tiles_m, tiles_n, tile_m, tile_n);
    for (int slice = 0; slice < plan.splits; ++slice) {
      int64_t k_begin, k_tiles;
      k_range_of_slice(slice, k, plan.k_per_split, Tile::BK, k_begin, k_tiles);
      block(tile_m * Tile::BM, tile_n * Tile::BN, slice, k_begin, k_tiles);
    }
  }
}

// ---- The tensor-core GEMM (gemm_mma.cu) ---------------------------------------------

template <class Tile>
void check_mma_gemm(int64_t m, int64_t n, int64_t k, const GemmPlan& plan, bool a_outer,
                    bool b_outer, Half16 type, std::mt19937& rng) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, MT = Tile::MT, NT = Tile::NT;
  constexpr int kWarps = Tile::kThreads / 32, kVec = 8;  // 16-byte chunks of 2-byte elements
  using ALayout = MmaOperandLayout<BM, BK>;
  using BLayout = MmaOperandLayout<BN, BK>;
  const std::string what =
      describe(name_of(type), m, n, k, plan, a_outer, b_outer);

  Operand2D a = make_operand(m, k, a_outer, rng), b = make_operand(n, k, b_outer, rng);
  const bool a_along = chunks_along_outer(a.outer_stride, a.k_stride);
  const bool b_along = chunks_along_outer(b.outer_stride, b.k_stride);
  EXPECT(a_along == a_outer && b_along == b_outer,
         "%s: chunks along the outer dimension: A %d, B %d", what.c_str(), a_along, b_along);
  auto encode_value = [&](double v) { return encode(static_cast<float>(v), type); };
  // A chunk is one 16-byte store: its elements follow each other from (o, kk) on.
  auto a_store = [](int o, int kk, bool along, int e) {
    return ALayout::offset(o, kk, along) + e;
  };
  auto b_store = [](int o, int kk, bool along, int e) {
    return BLayout::offset(o, kk, along) + e;
  };

  LaunchOutput out(plan.splits, m, n);
  std::vector<uint16_t> a_shared(ALayout::kSize), b_shared(BLayout::kSize);
  for_each_block<Tile>(m, n, k, plan, [&](int64_t m0, int64_t n0, int slice, int64_t k_begin,
                                          int64_t k_tiles) {
    std::vector<MmaTileAcc> acc(static_cast<size_t>(kWarps * MT * NT));
    for (int64_t t = 0; t < k_tiles; ++t) {
      const int64_t k0 = k_begin + t * BK;
      load_tile<BM, BK, kVec, Tile::kThreads>(a, m0, k0, a_along, a_shared, encode_value,
                                              a_store);
      load_tile<BN, BK, kVec, Tile::kThreads>(b, n0, k0, b_along, b_shared, encode_value,
                                              b_store);
      for (int warp = 0; warp < kWarps; ++warp) {
        for (int ks = 0; ks < BK; ks += 16) {
          uint32_t a_regs[MT][32][4], b_regs[NT][32][2];
          for (int i = 0; i < MT; ++i) {
            int rows[32];
            for (int lane = 0; lane < 32; ++lane) {
              rows[lane] = ALayout::template ldmatrix_row<AFragmentMatrices>(
                  lane, a_along, Tile::warp_m0(warp) + i * 16, ks);
            }
            ldmatrix(a_shared, rows, 4, ALayout::ldmatrix_trans(a_along), a_regs[i]);
          }
          for (int j = 0; j < NT; j += 2) {
            int rows[32];
            uint32_t r[32][4];
            for (int lane = 0; lane < 32; ++lane) {
              rows[lane] = BLayout::template ldmatrix_row<BFragmentPairMatrices>(
                  lane, b_along, Tile::warp_n0(warp) + j * 8, ks);
            }
            ldmatrix(b_shared, rows, 4, BLayout::ldmatrix_trans(b_along), r);
            for (int lane = 0; lane < 32; ++lane) {
              for (int q = 0; q < 4; ++q) {
                using Pair = BFragmentPairMatrices;
                b_regs[j + Pair::tile(q)][lane][Pair::reg(q)] = r[lane][q];
              }
            }
          }
          for (int i = 0; i < MT; ++i) {
            for (int j = 0; j < NT; ++j) {
              mma_m16n8k16(acc[(warp * MT + i) * NT + j], a_regs[i], b_regs[j], type);
            }
          }
        }
      }
    }
    for (int warp = 0; warp < kWarps; ++warp) {
      for (int i = 0; i < MT; ++i) {
        for (int j = 0; j < NT; ++j) {
          for (int lane = 0; lane < 32; ++lane) {
            for (int e = 0; e < 4; ++e) {
              const int row = Tile::warp_m0(warp) + i * 16 + mma_accumulator_row(lane, e);
              const int col = Tile::warp_n0(warp) + j * 8 + mma_accumulator_col(lane, e);
              out.finish(slice, m0 + row, n0 + col, acc[(warp * MT + i) * NT + j].c[lane][e]);
            }
          }
        }
      }
    }
  });
  compare(out, plan.splits, a, b, what);
}

// ---- The CUDA-core GEMM (gemm_simt.cu) ----------------------------------------------

// Shared tiles are [BK][OUTER + V], element (o, kk) at [kk][o]: gemm_simt.cu's
// write_chunk(tile, OUTER + V, kk, o, along_outer, chunk) stores the chunk along a row
// when it runs along the outer dimension, down a column when it runs along k.
template <typename T, class Tile>
void check_simt_gemm(int64_t m, int64_t n, int64_t k, const GemmPlan& plan, bool a_outer,
                     bool b_outer, std::mt19937& rng) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  constexpr int V = 16 / static_cast<int>(sizeof(T));
  constexpr int kAPitch = BM + V, kBPitch = BN + V;
  const std::string what =
      describe(sizeof(T) == 4 ? "f32" : "f64", m, n, k, plan, a_outer, b_outer);

  Operand2D a = make_operand(m, k, a_outer, rng), b = make_operand(n, k, b_outer, rng);
  const bool a_along = chunks_along_outer(a.outer_stride, a.k_stride);
  const bool b_along = chunks_along_outer(b.outer_stride, b.k_stride);
  auto encode_value = [](double v) { return static_cast<T>(v); };
  auto store_at = [](int pitch) {
    return [pitch](int o, int kk, bool along, int e) {
      if (along) {
        EXPECT((kk * pitch + o) % V == 0, "a 16-byte chunk store at element %d", kk * pitch + o);
      }
      return along ? kk * pitch + o + e : (kk + e) * pitch + o;
    };
  };

  LaunchOutput out(plan.splits, m, n);
  std::vector<T> a_shared(BK * kAPitch), b_shared(BK * kBPitch);
  for_each_block<Tile>(m, n, k, plan, [&](int64_t m0, int64_t n0, int slice, int64_t k_begin,
                                          int64_t k_tiles) {
    std::vector<T> acc(static_cast<size_t>(Tile::kThreads * TM * TN), T(0));
    for (int64_t t = 0; t < k_tiles; ++t) {
      const int64_t k0 = k_begin + t * BK;
      load_tile<BM, BK, V, Tile::kThreads>(a, m0, k0, a_along, a_shared, encode_value,
                                           store_at(kAPitch));
      load_tile<BN, BK, V, Tile::kThreads>(b, n0, k0, b_along, b_shared, encode_value,
                                           store_at(kBPitch));
      for (int thread = 0; thread < Tile::kThreads; ++thread) {
        const int ty = Tile::thread_m(thread), tx = Tile::thread_n(thread);
        for (int kk = 0; kk < BK; ++kk) {
          T ra[TM], rb[TN];
          // One 16-byte read per V registers, from the offset of the vector's first one.
          for (int i = 0; i < TM; ++i) {
            const int at = register_tile_offset<V, Tile::kThreadsM>(ty, i / V * V);
            EXPECT(at % V == 0 && at + V <= BM, "A register vector at %d", at);
            ra[i] = a_shared[kk * kAPitch + at + i % V];
          }
          for (int j = 0; j < TN; ++j) {
            const int at = register_tile_offset<V, Tile::kThreadsN>(tx, j / V * V);
            EXPECT(at % V == 0 && at + V <= BN, "B register vector at %d", at);
            rb[j] = b_shared[kk * kBPitch + at + j % V];
          }
          for (int i = 0; i < TM; ++i) {
            for (int j = 0; j < TN; ++j) acc[(thread * TM + i) * TN + j] += ra[i] * rb[j];
          }
        }
      }
    }
    for (int thread = 0; thread < Tile::kThreads; ++thread) {
      const int ty = Tile::thread_m(thread), tx = Tile::thread_n(thread);
      for (int i = 0; i < TM; ++i) {
        for (int j = 0; j < TN; ++j) {
          out.finish(slice, m0 + register_tile_offset<V, Tile::kThreadsM>(ty, i),
                     n0 + register_tile_offset<V, Tile::kThreadsN>(tx, j),
                     acc[(thread * TM + i) * TN + j]);
        }
      }
    }
  });
  compare(out, plan.splits, a, b, what);
}

// ---- The checks ---------------------------------------------------------------------

struct Shape {
  int64_t m, n, k;
};

// The emulator against itself: .x1 / .x2 are the first registers of .x4 (lanes past the
// last matrix ignored), and .trans of a matrix is the plain load of its transpose.
void check_ldmatrix_emulator() {
  std::mt19937 rng(7);
  std::vector<uint16_t> shared(1024);
  for (auto& v : shared) v = static_cast<uint16_t>(rng());
  int rows[32];
  for (int lane = 0; lane < 32; ++lane) rows[lane] = static_cast<int>(rng() % 120) * 8;
  for (bool trans : {false, true}) {
    uint32_t x4[32][4], x2[32][4], x1[32][4];
    ldmatrix(shared, rows, 4, trans, x4);
    int garbage[32];
    std::memcpy(garbage, rows, sizeof rows);
    for (int lane = 16; lane < 32; ++lane) garbage[lane] = -1;  // ignored by .x2
    ldmatrix(shared, garbage, 2, trans, x2);
    for (int lane = 8; lane < 32; ++lane) garbage[lane] = -1;  // ignored by .x1
    ldmatrix(shared, garbage, 1, trans, x1);
    for (int lane = 0; lane < 32; ++lane) {
      EXPECT(x2[lane][0] == x4[lane][0] && x2[lane][1] == x4[lane][1], "x2 lane %d", lane);
      EXPECT(x1[lane][0] == x4[lane][0], "x1 lane %d", lane);
    }
  }
  // Matrix 0 at elements 0.., its transpose at 512..: .trans of one = plain load of other.
  int plain[32], transposed[32];
  for (int lane = 0; lane < 32; ++lane) {
    plain[lane] = lane % 8 * 8;
    transposed[lane] = 512 + lane % 8 * 8;
  }
  for (int r = 0; r < 8; ++r) {
    for (int c = 0; c < 8; ++c) shared[512 + c * 8 + r] = shared[r * 8 + c];
  }
  uint32_t t[32][4], p[32][4];
  ldmatrix(shared, plain, 1, true, t);
  ldmatrix(shared, transposed, 1, false, p);
  for (int lane = 0; lane < 32; ++lane) EXPECT(t[lane][0] == p[lane][0], "trans lane %d", lane);
}

// Every tile configuration, both operand layouts each, edges in m, n and k, one and
// several k tiles, with and without k slices.
void check_mma_gemms(Half16 type) {
  std::mt19937 rng(type == Half16::f16 ? 11 : 12);
  using Big = MmaTiles::Big;
  using Small = MmaTiles::Small;
  for (bool a_outer : {false, true}) {
    for (bool b_outer : {false, true}) {
      for (auto [m, n, k] : {Shape{133, 77, 70},
                             {128, 128, 32}, {1, 1, 1}, {200, 260, 9}}) {
        GemmPlan one;
        one.k_per_split = k;
        check_mma_gemm<Big>(m, n, k, one, a_outer, b_outer, type, rng);
      }
      for (auto [m, n, k] : {Shape{70, 65, 45}, {64, 64, 16},
                             {3, 130, 100}}) {
        GemmPlan one;
        one.big_tiles = false;
        one.k_per_split = k;
        check_mma_gemm<Small>(m, n, k, one, a_outer, b_outer, type, rng);
      }
      // Few tiles, long k: the plan slices k (its own choice, checked to be a split).
      for (auto [m, n, k] : {Shape{37, 50, 1000}, {64, 128, 517}}) {
        const GemmPlan plan = plan_tiles<Big, Small, float>(m, n, k, 132);
        EXPECT(!plan.big_tiles && plan.splits > 1, "%lldx%lldx%lld on 132 SMs: splits=%d",
               static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
               plan.splits);
        check_mma_gemm<Small>(m, n, k, plan, a_outer, b_outer, type, rng);
      }
    }
  }
}

template <typename T>
void check_simt_gemms() {
  std::mt19937 rng(sizeof(T));
  using Big = typename SimtTiles<T>::Big;
  using Small = typename SimtTiles<T>::Small;
  for (bool a_outer : {false, true}) {
    for (bool b_outer : {false, true}) {
      for (auto [m, n, k] : {Shape{133, 77, 21},
                             {128, 64, 16}, {1, 1, 1}}) {
        GemmPlan one;
        one.k_per_split = k;
        check_simt_gemm<T, Big>(m, n, k, one, a_outer, b_outer, rng);
        one.big_tiles = false;
        check_simt_gemm<T, Small>(m, n, k, one, a_outer, b_outer, rng);
      }
      for (auto [m, n, k] : {Shape{37, 30, 1000}, {20, 9, 333}}) {
        const GemmPlan plan = plan_tiles<Big, Small, T>(m, n, k, 132);
        EXPECT(!plan.big_tiles && plan.splits > 1, "%lldx%lldx%lld on 132 SMs: splits=%d",
               static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
               plan.splits);
        check_simt_gemm<T, Small>(m, n, k, plan, a_outer, b_outer, rng);
      }
    }
  }
}

// tile_of_block maps blocks 0 .. tiles - 1 onto every tile exactly once.
void check_schedule() {
  std::mt19937 rng(3);
  std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1}, {1, 9}, {9, 1}, {8, 8}, {7, 13}, {17, 3}, {300, 301}, {1, 70000}, {70000, 1},
      {9, 10000}, {65536, 2}, {257, 255}};
  std::uniform_int_distribution<int> log_size(0, 11);
  for (int i = 0; i < 400; ++i) {
    const int64_t tm = 1 + static_cast<int64_t>(rng() % (int64_t{1} << log_size(rng)));
    const int64_t tn = 1 + static_cast<int64_t>(rng() % (int64_t{1} << log_size(rng)));
    if (tm * tn <= 4000000) shapes.emplace_back(tm, tn);
  }
  int64_t big = 0;
  for (auto [tiles_m, tiles_n] : shapes) {
    const int64_t tiles = tiles_m * tiles_n;
    big += tiles > 65535;
    std::vector<uint8_t> seen(static_cast<size_t>(tiles), 0);
    int64_t bad = 0;
    for (int64_t block = 0; block < tiles; ++block) {
      int64_t tile_m = -1, tile_n = -1;
      tile_of_block(block, tiles_m, tiles_n, tile_m, tile_n);
      if (tile_m < 0 || tile_m >= tiles_m || tile_n < 0 || tile_n >= tiles_n) {
        if (bad++ < 2) {
          EXPECT(false, "%lld x %lld tiles: block %lld -> tile (%lld, %lld)",
                 static_cast<long long>(tiles_m), static_cast<long long>(tiles_n),
                 static_cast<long long>(block), static_cast<long long>(tile_m),
                 static_cast<long long>(tile_n));
        }
        continue;
      }
      ++seen[static_cast<size_t>(tile_m * tiles_n + tile_n)];
    }
    for (int64_t t = 0; t < tiles && bad < 2; ++t) {
      if (seen[t] != 1) {
        ++bad;
        EXPECT(seen[t] == 1, "%lld x %lld tiles: tile (%lld, %lld) taken by %d blocks",
               static_cast<long long>(tiles_m), static_cast<long long>(tiles_n),
               static_cast<long long>(t / tiles_n), static_cast<long long>(t % tiles_n), seen[t]);
      }
    }
  }
  EXPECT(big >= 5, "only %lld shapes with more than 65535 tiles", static_cast<long long>(big));
}

// plan_tiles and k_range_of_slice: the k slices cover [0, k) in order, without gap or
// overlap, none empty, each read (whole k tiles, clipped at k) inside its own slice.
template <class Big, class Small, typename Acc>
void check_plans(const char* name, std::mt19937& rng) {
  std::vector<int64_t> ks = {0, 1, 2, 15, 16, 17, 31, 33, 127, 128, 129, 1000, 4096, 65536,
                             65537, 1 << 20, (int64_t{1} << 31) + 7, int64_t{1} << 40};
  std::uniform_int_distribution<int> log_size(0, 13);
  const int sms[] = {1, 2, 46, 108, 132, 1000};
  int64_t split_plans = 0;
  for (int i = 0; i < 3000; ++i) {
    const int64_t m = 1 + static_cast<int64_t>(rng() % (int64_t{1} << log_size(rng)));
    const int64_t n = 1 + static_cast<int64_t>(rng() % (int64_t{1} << log_size(rng)));
    const int64_t k = i % 3 == 0
                          ? ks[rng() % ks.size()]
                          : static_cast<int64_t>(rng() % (int64_t{1} << (log_size(rng) + 4)));
    const int sm_count = sms[rng() % 6];
    const GemmPlan plan = plan_tiles<Big, Small, Acc>(m, n, k, sm_count);
    const int bk = plan.big_tiles ? Big::BK : Small::BK;
    char what[160];
    std::snprintf(what, sizeof what, "%s %lldx%lldx%lld on %d SMs (splits %d, k_per_split %lld)",
                  name, static_cast<long long>(m), static_cast<long long>(n),
                  static_cast<long long>(k), sm_count, plan.splits,
                  static_cast<long long>(plan.k_per_split));
    EXPECT(plan.big_tiles == (ceil_div(m, Big::BM) * ceil_div(n, Big::BN) >= sm_count),
           "%s: big_tiles=%d", what, plan.big_tiles);
    EXPECT(plan.splits >= 1 && plan.splits <= 64, "%s", what);
    if (plan.splits == 1) {
      EXPECT(plan.k_per_split == k && plan.workspace_bytes == 0, "%s", what);
    } else {
      ++split_plans;
      EXPECT(!plan.big_tiles && plan.k_per_split % bk == 0 && plan.k_per_split >= 4 * bk,
             "%s: slices must be whole k tiles, at least 4", what);
      EXPECT(plan.workspace_bytes ==
                 static_cast<size_t>(plan.splits * m * n) * sizeof(Acc),
             "%s: workspace %zu bytes", what, plan.workspace_bytes);
    }
    int64_t covered = 0;
    for (int s = 0; s < plan.splits; ++s) {
      int64_t k_begin, k_tiles;
      k_range_of_slice(s, k, plan.k_per_split, bk, k_begin, k_tiles);
      const int64_t read_end = std::min(k, k_begin + k_tiles * bk);
      EXPECT(k_begin == covered, "%s: slice %d starts at %lld, the previous ended at %lld", what,
             s, static_cast<long long>(k_begin), static_cast<long long>(covered));
      EXPECT(k == 0 || k_tiles >= 1, "%s: slice %d is empty", what, s);
      if (s + 1 < plan.splits) {
        EXPECT(read_end == k_begin + plan.k_per_split, "%s: slice %d reads up to %lld", what, s,
               static_cast<long long>(read_end));
      }
      covered = read_end > covered ? read_end : covered;
    }
    EXPECT(covered == k, "%s: slices cover [0, %lld)", what, static_cast<long long>(covered));
  }
  EXPECT(split_plans >= 100, "%s: only %lld of the plans slice k", name,
         static_cast<long long>(split_plans));
}

}  // namespace

int main() {
  run("ldmatrix emulator: .x1/.x2 = first registers of .x4, .trans = load of the transpose",
      check_ldmatrix_emulator);
  run("tile schedule: every tile exactly once (incl. >65535 tiles)", check_schedule);
  run("tiling plans and split-k slices (mma, simt f32, simt f64)", [] {
    std::mt19937 rng(5);
    check_plans<MmaTiles::Big, MmaTiles::Small, float>("mma", rng);
    check_plans<SimtTiles<float>::Big, SimtTiles<float>::Small, float>("simt f32", rng);
    check_plans<SimtTiles<double>::Big, SimtTiles<double>::Small, double>("simt f64", rng);
  });
  run("mma GEMM f16: ldmatrix + mma.m16n8k16 fragments reproduce A·Bᵀ",
      [] { check_mma_gemms(Half16::f16); });
  run("mma GEMM bf16: ldmatrix + mma.m16n8k16 fragments reproduce A·Bᵀ",
      [] { check_mma_gemms(Half16::bf16); });
  run("simt GEMM f32: register tiles reproduce A·Bᵀ", check_simt_gemms<float>);
  run("simt GEMM f64: register tiles reproduce A·Bᵀ", check_simt_gemms<double>);
  if (g_failures > 0) {
    std::printf("index math checks FAILED: %lld expectations\n",
                static_cast<long long>(g_failures));
    return 1;
  }
  std::printf("all index math checks passed\n");
  return 0;
}
