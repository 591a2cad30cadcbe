// The blocked GEMM behind every CPU kernel: C = epilogue(bias + A · B), written once.
// Goto/BLIS structure: A and B are packed into panels sized for the caches, and a
// register micro-kernel (picked per ISA at run time, see isa.h) computes MR x NR tiles.
// GemmProblem<T> is the typed form of fusedmlp::GemmProblem (gemm_problem.h) that the
// packing reads: B as the k x n matrix Bᵀ (backend_cpu.cpp converts).
#pragma once

#include <cstdint>

#include "activation.h"
#include "cpu/blocking.h"
#include "gemm_problem.h"

namespace fusedmlp::cpu {

// A read-only strided matrix: element (r, c) is data[r * row_stride + c * col_stride].
// Strides may be anything (transposed, sliced, 0 for broadcast), so callers never copy.
template <typename T>
struct StridedMatrix {
  const T* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 0;

  T operator()(int64_t r, int64_t c) const { return data[r * row_stride + c * col_stride]; }
  StridedMatrix transposed() const { return {data, col_stride, row_stride}; }
};

template <typename T>
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  StridedMatrix<T> a;      // m x k
  StridedMatrix<T> b;      // k x n
  T* c = nullptr;          // m x n, row-major, contiguous; only written
  const T* bias = nullptr; // n values (stride bias_stride) the accumulators start from; null: 0
  int64_t bias_stride = 1;
  // Epilogue before the single store of C: C = act(v); c_pre (m x n like C) receives v.
  Activation act = Activation::identity;
  T slope = T(0);  // leaky_relu's negative slope, for act and a_act
  T* c_pre = nullptr;
  // If a_saved.data is set, A(r, c) is multiplied by the derivative of a_act read from
  // a_saved(r, c) (activation.h's grad: the backward pass, applied while A is packed; the
  // derived A is never written out).
  StridedMatrix<T> a_saved;
  Activation a_act = Activation::identity;
  // If set, receives the m row sums of the (derived) A, accumulated while A is packed.
  T* a_row_sums = nullptr;
};

// The typed form of the shared problem (the one mapping from gemm_problem.h's convention,
// used by backend_cpu.cpp and by the standalone check tests/native/gemm_check.cpp): an
// outer x k operand is the matrix (outer, k), and B is taken as the k x n matrix Bᵀ.
// C must be contiguous (ldc == n).
template <typename T>
GemmProblem<T> typed_problem(const fusedmlp::GemmProblem& p) {
  const auto matrix = [](const Operand& op) {
    return StridedMatrix<T>{static_cast<const T*>(op.data), op.outer_stride, op.k_stride};
  };
  GemmProblem<T> pb;
  pb.m = p.m;
  pb.n = p.n;
  pb.k = p.k;
  pb.a = matrix(p.a);
  pb.b = matrix(p.b).transposed();
  pb.c = static_cast<T*>(p.c);
  pb.bias = static_cast<const T*>(p.bias);
  pb.bias_stride = p.bias_stride;
  pb.act = p.act;
  pb.slope = static_cast<T>(p.slope);
  pb.c_pre = static_cast<T*>(p.c_pre);
  pb.a_saved = matrix(p.a_saved);
  pb.a_act = p.a_act;
  pb.a_row_sums = static_cast<T*>(p.a_row_sums);
  return pb;
}

template <typename T>
void gemm(const GemmProblem<T>& problem);

// The backward's two GEMMs of a batch of 1 or 2 rows, grad_x = g' · W (`grad_x`: m rows,
// B = W row-major) and grad_w = g'ᵀ · x (`grad_w`, with grad_b as its a_row_sums if set;
// B = x row-major), as linear_ops.cpp builds them, solved in one pass over W
// (MicroKernel::sweep): W is read and grad_w written once, together. The same bits as
// gemm() on each. Returns false, having written nothing, for any other form: more rows,
// strided W or x rows, a bias or epilogue, a derivative with exp/erf/tanh still to apply
// (the CPU backend derives those first).
template <typename T>
bool backward_sweep(const GemmProblem<T>& grad_x, const GemmProblem<T>& grad_w);

// How many GEMMs (of either dtype, m and n > 0) took each path since start-up: the
// dot-product tiles, packed panels, or the row-panel kernel over B in place; and the
// backward pairs backward_sweep() took. For tests and diagnostics (which kernel a shape
// gets); counted once per call, not per tile.
struct GemmPathCounts {
  int64_t dot, packed, row_panels, backward_sweeps;
};
GemmPathCounts gemm_path_counts();

// The float32 FMA peak of this machine in GF/s, on the active ISA's vectors and all
// at::get_num_threads() threads: the best of a few ~20 ms register-only runs. The
// benchmark's ceilings and "% of FMA peak" columns are taken against it.
double fma_peak_gflops();

// The register tiles of the active ISA's micro-kernels for T and the block limits a GEMM
// would use with the current cache sizes (what fusedmlp.info() shows).
struct BlockingInfo {
  int mr, nr, dot_mr, dot_max_rows;
  BlockLimits packed, dot;
};
template <typename T>
BlockingInfo blocking_info();

// out[i] = g[i] * act'(s[i]) (order 1) or g[i] * d act'(s[i]) / ds (order 2) for count
// contiguous values, on the active ISA's vectors and all threads.
template <typename T>
void elementwise_grad(const T* g, const T* s, T* out, int64_t count, Activation act, T slope,
                      int order);

// pb.a_row_sums[r] = sum over c of A(r, c) (derived as in GemmProblem), for when no GEMM
// runs.
template <typename T>
void derived_row_sums(const GemmProblem<T>& pb);

}  // namespace fusedmlp::cpu
