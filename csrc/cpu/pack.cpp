// Packing of A and B panels (see pack.h).
#include "cpu/pack.h"

#include <algorithm>
#include <type_traits>

#include "cpu/vec_activation.h"

namespace fusedmlp::cpu {
namespace {

// pack_a_block with the activation A of the derivative known at compile time (identity:
// none, the loops stay lean).
template <typename T, class A>
void pack_a_panels(const GemmProblem<T>& pb, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                   const MicroKernel<T>& uk, T* dst, T* row_sums, bool first_k_block) {
  constexpr bool kDerived = !std::is_same_v<A, Act<Activation::identity>>;
  const StridedMatrix<T>& s = pb.a_saved;
  const SavedOperand<T> saved_rows{kDerived ? s.data : nullptr, s.row_stride, pb.a_act, pb.slope};
  const SavedOperand<T> saved_cols{kDerived ? s.data : nullptr, s.col_stride, pb.a_act, pb.slope};
  const int mr = uk.mr;
  // Rows of A (and of the mask) contiguous, as for grad_y in grad_x = g · W: walk each row
  // once, reading contiguously; otherwise walk k and read the MR values of each column.
  const bool row_major =
      pb.a.col_stride == 1 && (!kDerived || s.col_stride == 1);
  for (int64_t ir = 0; ir < mc; ir += mr) {
    const int rows = static_cast<int>(std::min<int64_t>(mr, mc - ir));
    T* panel = dst + ir * kc;
    T sums[kMaxMR] = {};
    if (row_major && uk.pack_rows && !row_sums) {  // the ISA's SIMD packing
      SavedOperand<T> saved = saved_rows;
      if (kDerived) saved.data = &s.data[(i0 + ir) * s.row_stride + p0];
      uk.pack_rows(&pb.a.data[(i0 + ir) * pb.a.row_stride + p0], pb.a.row_stride, saved, rows,
                   kc, panel);
    } else if (row_major) {
      for (int i = 0; i < rows; ++i) {
        const T* a_row = &pb.a.data[(i0 + ir + i) * pb.a.row_stride + p0];
        const T* s_row = kDerived ? &s.data[(i0 + ir + i) * s.row_stride + p0] : nullptr;
        T sum = T(0);
        for (int64_t p = 0; p < kc; ++p) {
          // Both loads unconditional: a select, not a branch (a ReLU mask is random).
          const T a = a_row[p];
          const T v = kDerived ? grad_scalar<A>(a, s_row[p], pb.slope) : a;
          panel[p * mr + i] = v;
          sum += v;
        }
        sums[i] = sum;
      }
      for (int i = rows; i < mr; ++i)
        for (int64_t p = 0; p < kc; ++p) panel[p * mr + i] = T(0);
    } else if (pb.a.row_stride == 1 && (!kDerived || s.row_stride == 1) &&
               uk.pack_cols) {  // column-major A: the ISA's SIMD packing
      SavedOperand<T> saved = saved_cols;
      if (kDerived) saved.data = &s.data[(i0 + ir) + p0 * s.col_stride];
      uk.pack_cols(&pb.a.data[(i0 + ir) + p0 * pb.a.col_stride], pb.a.col_stride, saved, rows,
                   kc, panel, sums);
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        T* out = panel + p * mr;
        for (int i = 0; i < rows; ++i) {
          const T a = pb.a(i0 + ir + i, p0 + p);
          const T v = kDerived ? grad_scalar<A>(a, s(i0 + ir + i, p0 + p), pb.slope) : a;
          out[i] = v;
          sums[i] += v;
        }
        for (int i = rows; i < mr; ++i) out[i] = T(0);
      }
    }
    if (row_sums) {
      for (int i = 0; i < rows; ++i)
        row_sums[i0 + ir + i] = first_k_block ? sums[i] : row_sums[i0 + ir + i] + sums[i];
    }
  }
}

}  // namespace

template <typename T>
void pack_a_block(const GemmProblem<T>& pb, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                  const MicroKernel<T>& uk, T* dst, T* row_sums, bool first_k_block) {
  const Activation act = pb.a_saved.data ? pb.a_act : Activation::identity;
  visit_activation(act, [&](auto a) {
    pack_a_panels<T, decltype(a)>(pb, i0, mc, p0, kc, uk, dst, row_sums, first_k_block);
  });
}

template <typename T>
void pack_b_block(const StridedMatrix<T>& b, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                  const MicroKernel<T>& uk, T* dst) {
  const int nr = uk.nr;
  for (int64_t jr = 0; jr < nc; jr += nr) {
    const int cols = static_cast<int>(std::min<int64_t>(nr, nc - jr));
    T* panel = dst + jr * kc;
    const T* src = &b.data[p0 * b.row_stride + (j0 + jr) * b.col_stride];
    int64_t p_done = 0;
    int j_done = 0;
    const int tile = uk.transpose_tile;
    if (b.row_stride == 1 && tile > 0) {  // B = W^T, W row-major: SIMD tile transposes
      p_done = kc / tile * tile;
      j_done = cols / tile * tile;
      for (int64_t p = 0; p < p_done; p += tile)
        for (int j = 0; j < j_done; j += tile)
          uk.transpose(src + j * b.col_stride + p, b.col_stride, panel + p * nr + j, nr);
    }
    // What the tiles did not cover: the right columns of every row, then the bottom rows.
    for (int64_t p = 0; p < kc; ++p) {
      T* out = panel + p * nr;
      for (int j = p < p_done ? j_done : 0; j < cols; ++j)
        out[j] = src[p * b.row_stride + j * b.col_stride];
      for (int j = cols; j < nr; ++j) out[j] = T(0);
    }
  }
}

template void pack_a_block<float>(const GemmProblem<float>&, int64_t, int64_t, int64_t, int64_t,
                                  const MicroKernel<float>&, float*, float*, bool);
template void pack_a_block<double>(const GemmProblem<double>&, int64_t, int64_t, int64_t,
                                   int64_t, const MicroKernel<double>&, double*, double*, bool);
template void pack_b_block<float>(const StridedMatrix<float>&, int64_t, int64_t, int64_t,
                                  int64_t, const MicroKernel<float>&, float*);
template void pack_b_block<double>(const StridedMatrix<double>&, int64_t, int64_t, int64_t,
                                   int64_t, const MicroKernel<double>&, double*);

}  // namespace fusedmlp::cpu
