// Standalone check of the CPU GEMM driver (gemm.cpp, pack.cpp) with every micro-kernel
// this CPU runs, against a scalar float64 reference, without torch. It builds the GEMM
// problems of a linear layer as linear_ops.cpp does and hands them over as
// backend_cpu.cpp does (typed_problem): y = act(x W^T + b) (with the pre-activation z
// stored when backward reads it), then grad_x = g' W, grad_w = g'^T x and grad_b (summed
// while packing, or alone) with g' = grad_y * act'(saved). Backward runs both ways the op
// layer can take: the CPU backend's (the exp/erf/tanh derivatives computed once by
// elementwise_grad, the others applied as grad_y is packed) and the A-load path for every
// activation. Every activation is checked twice: against activation.h's own formulas in
// float64, and against formulas written here independently with libm (erfc, cosh, ...),
// so that a wrong shared formula would show. elementwise_grad (orders 1 and 2) is
// checked on a grid of special values. Cases: helpers.py's odd shapes and empty
// dimensions, its strided inputs, bias or none, NaN/Inf; fp32 and fp64; on 1 and on 3
// threads, which must agree bit for bit.
//
// scripts/arm_check.sh cross-compiles it for aarch64 and runs it under qemu-aarch64 (the
// NEON kernel); it also builds natively (`make gemm-check`). Threads come from the
// stand-in tests/native/shim/ATen/Parallel.h. Exit status 0 when every check passes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ATen/Parallel.h>  // the shim

#include "activation.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "gemm_problem.h"

namespace {

using fusedmlp::Activation;
using fusedmlp::Saved;
using fusedmlp::cpu::Isa;
using fusedmlp::cpu::StridedMatrix;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::mt19937_64 rng(0);

// A strided view into its own buffer of normal random values: element (r, c) is
// buf[offset + r * row_stride + c * col_stride], as a sliced or transposed tensor is.
template <typename T>
struct Matrix {
  std::vector<T> buf;
  StridedMatrix<T> view;
  int64_t rows = 0, cols = 0;
  T& at(int64_t r, int64_t c) {
    return const_cast<T&>(view.data[r * view.row_stride + c * view.col_stride]);
  }
  // As linear_ops.cpp's rows_of(): the rows are the outer dimension.
  fusedmlp::Operand rows_of() const { return {view.data, view.row_stride, view.col_stride}; }
};

template <typename T>
Matrix<T> random_matrix(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                        int64_t offset = 0) {
  Matrix<T> op;
  int64_t size = offset + 1;
  if (rows > 0 && cols > 0) size += (rows - 1) * row_stride + (cols - 1) * col_stride;
  std::normal_distribution<double> normal;
  op.buf.resize(size);
  for (T& v : op.buf) v = static_cast<T>(normal(rng));
  op.view = {op.buf.data() + offset, row_stride, col_stride};
  op.rows = rows;
  op.cols = cols;
  return op;
}

// How x (m x k), weight (n x k) and bias are laid out in memory.
struct Layout {
  enum class X { contiguous, transposed, sliced, misaligned, row_padded, expanded, rows_48_apart };
  enum class W { contiguous, transposed, rows_48_apart };
  enum class G { contiguous, transposed, expanded };  // grad_y
  X x = X::contiguous;
  W w = W::contiguous;
  G g = G::contiguous;
  int64_t bias_stride = 1;  // 3: sliced, 0: expanded
};

template <typename T>
Matrix<T> make_x(int64_t m, int64_t k, Layout::X l) {
  switch (l) {
    case Layout::X::transposed: return random_matrix<T>(m, k, 1, m);
    case Layout::X::sliced: return random_matrix<T>(m, k, 2 * k, 2);
    case Layout::X::misaligned: return random_matrix<T>(m, k, k + 1, 1, 1);
    case Layout::X::row_padded: return random_matrix<T>(m, k, k + 5, 1);
    case Layout::X::expanded: return random_matrix<T>(m, k, 0, 1);
    case Layout::X::rows_48_apart: return random_matrix<T>(m, k, 48, 1);
    case Layout::X::contiguous: break;
  }
  return random_matrix<T>(m, k, k, 1);
}

template <typename T>
Matrix<T> make_w(int64_t n, int64_t k, Layout::W l) {
  switch (l) {
    case Layout::W::transposed: return random_matrix<T>(n, k, 1, n);
    case Layout::W::rows_48_apart: return random_matrix<T>(n, k, 48, 1);
    case Layout::W::contiguous: break;
  }
  return random_matrix<T>(n, k, k, 1);
}

template <typename T>
Matrix<T> make_g(int64_t m, int64_t n, Layout::G l) {
  switch (l) {
    case Layout::G::transposed: return random_matrix<T>(m, n, 1, m);
    case Layout::G::expanded: return random_matrix<T>(m, n, 0, 0);  // y.sum()'s gradient
    case Layout::G::contiguous: break;
  }
  return random_matrix<T>(m, n, n, 1);
}

// Values that replace random ones before a case runs (the special-value cases).
struct Special {
  char operand;  // 'x', 'w', 'b' or 'g'
  int64_t r, c;  // (r, c) of x, w or g; b[c]
  double value;
};

struct Case {
  std::string name;
  int64_t m, k, n;
  bool bias;
  Activation act;
  Layout layout;
  std::vector<Special> specials;
  // Replace x, w and b entirely (the ReLU-mask and value-grid cases): row-major m x k,
  // n x k, n.
  std::vector<double> x_values, w_values, b_values;
  double slope = 0.01;  // leaky_relu's negative_slope
};

// ---- The activations written independently of activation.h, with libm, on float64:
// act(z) and act'(z). Where activation.h differentiates from the output y, act'(z) is
// taken at z here all the same (so the derivative-from-y formulas are checked too).

double sigmoid_ind(double z) {  // never exp of a large positive argument
  return z >= 0 ? 1.0 / (1.0 + std::exp(-z)) : std::exp(z) / (1.0 + std::exp(z));
}
double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI); }
constexpr double kGeluTanhC = 0.044715;
double gelu_tanh_u(double z) { return std::sqrt(2.0 / M_PI) * (z + kGeluTanhC * z * z * z); }

double forward_ind(Activation a, double z, double slope) {
  switch (a) {
    case Activation::identity: return z;
    case Activation::relu: return z > 0 || std::isnan(z) ? z : 0.0;
    case Activation::leaky_relu: return z > 0 || std::isnan(z) ? z : slope * z;
    case Activation::gelu: return 0.5 * z * std::erfc(-z / std::sqrt(2.0));
    case Activation::gelu_tanh: return 0.5 * z * (1.0 + std::tanh(gelu_tanh_u(z)));
    case Activation::silu: return z * sigmoid_ind(z);
    case Activation::sigmoid: return sigmoid_ind(z);
    case Activation::tanh: return 2.0 * sigmoid_ind(2.0 * z) - 1.0;
    case Activation::relu_squared: return z > 0 || std::isnan(z) ? z * z : 0.0;
  }
  return kNaN;
}

// d act / dz. The piecewise-linear ones take 1 where the gradient passes (NaN too, as
// torch's threshold_backward).
double derivative_ind(Activation a, double z, double slope) {
  switch (a) {
    case Activation::identity: return 1.0;
    case Activation::relu: return z > 0 || std::isnan(z) ? 1.0 : 0.0;
    case Activation::leaky_relu: return z > 0 || std::isnan(z) ? 1.0 : slope;
    case Activation::gelu: return 0.5 * std::erfc(-z / std::sqrt(2.0)) + z * normal_pdf(z);
    case Activation::gelu_tanh: {
      const double c = std::cosh(gelu_tanh_u(z));
      const double du = std::sqrt(2.0 / M_PI) * (1.0 + 3.0 * kGeluTanhC * z * z);
      return 0.5 * (1.0 + std::tanh(gelu_tanh_u(z))) + 0.5 * z * du / (c * c);
    }
    case Activation::silu: {
      const double s = sigmoid_ind(z);
      return s + z * s * (1.0 - s);
    }
    case Activation::sigmoid: return sigmoid_ind(z) * sigmoid_ind(-z);
    case Activation::tanh: {
      const double c = std::cosh(z);
      return 1.0 / (c * c);
    }
    case Activation::relu_squared: return z > 0 || std::isnan(z) ? 2.0 * z : 0.0;
  }
  return kNaN;
}

bool drops(Activation a) { return a == Activation::relu || a == Activation::relu_squared; }

// |a - e| <= scale * atol + rtol |e| (torch.testing.assert_close's form), atol from
// helpers.py's bound for a sum of `reduction` products of O(1) values, `scale` the size
// of the operands (an activation derivative may exceed 1), `loosen` a factor on both;
// NaN must meet NaN and an infinity the same infinity (a finite expected value beyond T's
// range is an infinity).
template <typename T>
bool close(T actual, double expected, int64_t reduction, double scale, double loosen) {
  const double eps = std::numeric_limits<T>::epsilon();
  const double a = static_cast<double>(actual);
  if (std::fabs(expected) > std::numeric_limits<T>::max())  // rounds to an infinity in T
    expected = std::copysign(kInf, expected);
  if (std::isnan(expected) || std::isnan(a)) return std::isnan(expected) && std::isnan(a);
  if (std::isinf(expected) || std::isinf(a)) return a == expected;
  return std::fabs(a - expected) <=
         loosen * (4 * eps * static_cast<double>(std::max<int64_t>(reduction, 4)) *
                       std::max(scale, 1.0) +
                   64 * eps * std::fabs(expected));
}

struct Tally {
  int64_t checks = 0, failures = 0;
};

// One check: every element of `actual` close to `expected` (scale: per element).
template <typename T>
void compare(Tally& tally, const std::string& what, const T* actual,
             const std::vector<double>& expected, int64_t cols, int64_t reduction,
             const std::vector<double>& scale, double loosen = 1.0) {
  ++tally.checks;
  int64_t bad = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (close(actual[i], expected[i], reduction, scale[i], loosen)) continue;
    if (bad++ < 3)
      std::printf("  FAIL %s at (%lld, %lld): got %.9g, expected %.9g\n", what.c_str(),
                  static_cast<long long>(i / std::max<int64_t>(cols, 1)),
                  static_cast<long long>(i % std::max<int64_t>(cols, 1)),
                  static_cast<double>(actual[i]), expected[i]);
  }
  if (bad > 0) ++tally.failures;
}
template <typename T>
void compare(Tally& tally, const std::string& what, const T* actual,
             const std::vector<double>& expected, int64_t cols, int64_t reduction, double scale,
             double loosen = 1.0) {
  compare(tally, what, actual, expected, cols, reduction,
          std::vector<double>(expected.size(), scale), loosen);
}

// The tolerance factor against the libm formulas: 1 in float32; in float64 100 (~1e-12),
// since activation.h's forms (1 - tanh^2, 1 + erf, derivatives from y) and the ones here
// round differently by more than a few ulp where they cancel. A wrong formula is off by
// far more.
template <typename T>
constexpr double kLibmLoosen = sizeof(T) == 8 ? 100.0 : 1.0;

// The gradients of one backward.
template <typename T>
struct Grads {
  std::vector<T> grad_x, grad_w, grad_b, grad_b_alone;
  bool ran = false;
  // Whether backward_sweep solved grad_x and grad_w, and whether its bits differed from
  // the two GEMMs'.
  bool swept = false, sweep_bits_differ = false;
};

// The kernels' outputs for one case: the forward, and backward the CPU backend's way
// (`op`) and with every derivative applied as grad_y is loaded (`a_load`; for the
// non-transcendental activations the two are the same problems and a_load is not run).
template <typename T>
struct Outputs {
  std::vector<T> y, pre;
  Grads<T> op, a_load;
  bool operator==(const Outputs& o) const {
    // Bitwise, NaN included.
    auto same = [](const std::vector<T>& a, const std::vector<T>& b) {
      return a.size() == b.size() &&
             (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
    };
    auto same_grads = [&](const Grads<T>& a, const Grads<T>& b) {
      return same(a.grad_x, b.grad_x) && same(a.grad_w, b.grad_w) &&
             same(a.grad_b, b.grad_b) && same(a.grad_b_alone, b.grad_b_alone);
    };
    return same(y, o.y) && same(pre, o.pre) && same_grads(op, o.op) &&
           same_grads(a_load, o.a_load);
  }
};

template <typename T>
void gemm(const fusedmlp::GemmProblem& p) {
  fusedmlp::cpu::gemm(fusedmlp::cpu::typed_problem<T>(p));  // as backend_cpu.cpp's typed_gemm
}

// linear_ops.cpp's backward with output_mask `want` (grad_x, grad_w, grad_b):
// `derive_once` is the backend's flag (the CPU backend sets it).
template <typename T>
void backward(const Case& cs, const Matrix<T>& x, const Matrix<T>& w, const Matrix<T>& g,
              const std::vector<T>& saved, bool derive_once, const bool (&want)[3],
              Grads<T>& out, bool alone) {
  const int64_t rows = cs.m, in = cs.k, out_features = cs.n;
  out.ran = true;
  const bool needs_saved = fusedmlp::saved_for(cs.act, cs.slope) != Saved::none;
  fusedmlp::Operand g2 = g.rows_of();
  const fusedmlp::Operand s2{saved.data(), out_features, 1};
  bool derive = needs_saved;
  std::vector<T> g_contig, derived;
  if (derive && derive_once && fusedmlp::transcendental(cs.act) && rows * out_features > 0 &&
      (want[0] || want[1])) {
    // activation_grad(): grad_y.contiguous() * act'(saved), once.
    g_contig.resize(rows * out_features);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < out_features; ++j)
        g_contig[i * out_features + j] = g.view(i, j);
    derived.resize(g_contig.size());
    fusedmlp::cpu::elementwise_grad(g_contig.data(), saved.data(), derived.data(),
                                    static_cast<int64_t>(derived.size()), cs.act,
                                    static_cast<T>(cs.slope), 1);
    g2 = {derived.data(), out_features, 1};
    derive = false;
  }
  const fusedmlp::Operand g_saved = derive ? s2 : fusedmlp::Operand{};
  // NaN, not zero: an element the driver forgets to write shows up.
  const T unset = std::numeric_limits<T>::quiet_NaN();
  std::vector<T>& gb = alone ? out.grad_b_alone : out.grad_b;
  if (want[0]) out.grad_x.assign(rows * in, unset);
  if (want[1]) out.grad_w.assign(out_features * in, unset);
  if (want[1] || want[2]) gb.assign(out_features, unset);
  fusedmlp::GemmProblem px;  // grad_x
  px.a_act = derive ? cs.act : Activation::identity;
  px.slope = cs.slope;
  px.m = rows;
  px.n = in;
  px.k = out_features;
  px.a = g2;
  px.a_saved = g_saved;
  px.b = w.rows_of().transposed();
  px.c = want[0] ? out.grad_x.data() : nullptr;
  px.ldc = in;
  fusedmlp::GemmProblem pw = px;  // grad_w and grad_b
  pw.m = out_features;
  pw.n = want[1] ? in : 0;
  pw.k = rows;
  pw.a = g2.transposed();
  pw.a_saved = g_saved.transposed();
  pw.b = x.rows_of().transposed();
  pw.c = want[1] ? out.grad_w.data() : nullptr;
  pw.a_row_sums = gb.data();
  // The backend's gemm_pair (backend_cpu.cpp): both at once where the sweep takes them.
  // Then the two GEMMs as well, which must give the same bits.
  if (want[0] && want[1] &&
      fusedmlp::cpu::backward_sweep(fusedmlp::cpu::typed_problem<T>(px),
                                    fusedmlp::cpu::typed_problem<T>(pw))) {
    out.swept = true;
    std::vector<T> gx2(out.grad_x.size(), unset), gw2(out.grad_w.size(), unset),
        gb2(gb.size(), unset);
    px.c = gx2.data();
    pw.c = gw2.data();
    pw.a_row_sums = gb2.data();
    gemm<T>(px);
    gemm<T>(pw);
    // Bit for bit, except that any NaN matches any NaN: which operand's payload and sign
    // an FMA of two NaNs passes on depends on the instruction form the compiler picked.
    const auto same = [](const std::vector<T>& a, const std::vector<T>& b) {
      for (size_t i = 0; i < a.size(); ++i)
        if (!(std::isnan(a[i]) && std::isnan(b[i])) &&
            std::memcmp(&a[i], &b[i], sizeof(T)) != 0)
          return false;
      return a.size() == b.size();
    };
    // One column of W is also Wᵀ row-major: grad_x alone may then take the dot-product
    // kernel, whose lane-wise partial sums round differently (checked against the
    // reference like every other path).
    out.sweep_bits_differ = (in > 1 && !same(gx2, out.grad_x)) || !same(gw2, out.grad_w) ||
                            !same(gb2, gb);
    return;
  }
  if (want[0]) gemm<T>(px);
  if (want[1] || want[2]) gemm<T>(pw);
}

// linear_ops.cpp's forward and backward.
template <typename T>
Outputs<T> run_layer(const Case& cs, const Matrix<T>& x, const Matrix<T>& w, const T* bias,
                     int64_t bias_stride, const Matrix<T>& g) {
  const int64_t m = cs.m, k = cs.k, n = cs.n;
  const Saved saved = fusedmlp::saved_for(cs.act, cs.slope);
  Outputs<T> out;
  const T unset = std::numeric_limits<T>::quiet_NaN();
  out.y.assign(m * n, unset);
  if (saved == Saved::pre_activation) out.pre.assign(m * n, unset);

  fusedmlp::GemmProblem fwd;  // y = act(x · Wᵀ + b): A = x, B = W
  fwd.m = m;
  fwd.n = n;
  fwd.k = k;
  fwd.a = x.rows_of();
  fwd.b = w.rows_of();
  if (bias) {
    fwd.bias = bias;
    fwd.bias_stride = bias_stride;
  }
  fwd.act = cs.act;
  fwd.slope = cs.slope;
  fwd.c = out.y.data();
  fwd.ldc = n;
  if (saved == Saved::pre_activation) fwd.c_pre = out.pre.data();
  gemm<T>(fwd);

  const std::vector<T>& s = saved == Saved::output ? out.y : out.pre;
  const bool all[3] = {true, true, true}, bias_only[3] = {false, false, true};
  backward(cs, x, w, g, s, /*derive_once=*/true, all, out.op, false);
  backward(cs, x, w, g, s, true, bias_only, out.op, true);
  if (fusedmlp::transcendental(cs.act)) {
    backward(cs, x, w, g, s, /*derive_once=*/false, all, out.a_load, false);
    backward(cs, x, w, g, s, false, bias_only, out.a_load, true);
  }
  return out;
}

template <typename T>
void fill(Matrix<T>& op, const std::vector<double>& values) {
  for (int64_t r = 0; r < op.rows; ++r)
    for (int64_t c = 0; c < op.cols; ++c) op.at(r, c) = static_cast<T>(values[r * op.cols + c]);
}

// activation.h's formulas on float64 (the scalar path of the kernels, in double).
double forward_shared(Activation a, double z, double slope) {
  return fusedmlp::activate<double>(a, z, slope);
}
double grad_shared(Activation a, double g, double s, double slope) {
  return fusedmlp::activation_grad<double>(a, g, s, slope);
}

// The references of one backward: g' (m x n) -> grad_x, grad_w, grad_b.
struct Reference {
  std::vector<double> gx, gw, gb;
  double scale = 1;  // the largest |g'|
};
template <typename T>
Reference reference_grads(const Case& cs, const Matrix<T>& x, const Matrix<T>& w,
                          const std::vector<double>& derived) {
  const int64_t m = cs.m, k = cs.k, n = cs.n;
  Reference r{std::vector<double>(m * k, 0.0), std::vector<double>(n * k, 0.0),
              std::vector<double>(n, 0.0)};
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double gv = derived[i * n + j];
      if (std::isfinite(gv)) r.scale = std::max(r.scale, std::fabs(gv));
      r.gb[j] += gv;
      for (int64_t p = 0; p < k; ++p) {
        r.gx[i * k + p] += gv * double(w.view(j, p));
        r.gw[j * k + p] += gv * double(x.view(i, p));
      }
    }
  return r;
}

template <typename T>
void check_grads(Tally& tally, const std::string& tag, const Case& cs, const Grads<T>& got,
                 const Reference& ref, double loosen = 1.0) {
  if (!got.ran) return;
  if (got.swept) {
    ++tally.checks;
    if (got.sweep_bits_differ) {
      ++tally.failures;
      std::printf("  FAIL %s: backward_sweep's bits differ from the two GEMMs'\n", tag.c_str());
    }
  }
  compare(tally, tag + " grad_x", got.grad_x.data(), ref.gx, cs.k, cs.n, ref.scale, loosen);
  compare(tally, tag + " grad_w", got.grad_w.data(), ref.gw, cs.k, cs.m, ref.scale, loosen);
  compare(tally, tag + " grad_b", got.grad_b.data(), ref.gb, 1, cs.m, ref.scale, loosen);
  compare(tally, tag + " grad_b (no grad_w)", got.grad_b_alone.data(), ref.gb, 1, cs.m,
          ref.scale, loosen);
}

template <typename T>
void run_case(Tally& tally, const Case& cs, const char* dtype, const char* isa) {
  const int64_t m = cs.m, k = cs.k, n = cs.n;
  const Activation act = cs.act;
  Matrix<T> x = make_x<T>(m, k, cs.layout.x);
  Matrix<T> w = make_w<T>(n, k, cs.layout.w);
  const int64_t bs = cs.layout.bias_stride;
  Matrix<T> b = random_matrix<T>(1, n, 0, bs);
  Matrix<T> g = make_g<T>(m, n, cs.layout.g);
  if (!cs.x_values.empty()) fill(x, cs.x_values);
  if (!cs.w_values.empty()) fill(w, cs.w_values);
  if (!cs.b_values.empty()) fill(b, cs.b_values);
  for (const Special& s : cs.specials) {
    Matrix<T>& op = s.operand == 'x' ? x : s.operand == 'w' ? w : s.operand == 'b' ? b : g;
    op.at(s.operand == 'b' ? 0 : s.r, s.c) = static_cast<T>(s.value);
  }
  const T* bias = cs.bias ? b.view.data : nullptr;

  at::shim_num_threads() = 1;
  const Outputs<T> one = run_layer(cs, x, w, bias, bs, g);
  at::shim_num_threads() = 3;
  const Outputs<T> three = run_layer(cs, x, w, bias, bs, g);
  const std::string tag = std::string(isa) + " " + dtype + " " +
                          fusedmlp::activation_name(act) + " " + cs.name;
  ++tally.checks;
  if (!(one == three)) {
    ++tally.failures;
    std::printf("  FAIL %s: 1 and 3 threads differ\n", tag.c_str());
  }

  // The float64 references, from the same (rounded) inputs: z, y by activation.h and by
  // the formulas above, each y's tolerance scaled by act'(z).
  const double slope = static_cast<double>(static_cast<T>(cs.slope));
  std::vector<double> z(m * n), y_shared(m * n), y_ind(m * n), y_scale(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = cs.bias ? static_cast<double>(b.at(0, j)) : 0.0;
      for (int64_t p = 0; p < k; ++p) acc += double(x.view(i, p)) * double(w.view(j, p));
      const int64_t e = i * n + j;
      z[e] = acc;
      y_shared[e] = forward_shared(act, acc, slope);
      // Independently where z is finite (at +-Inf both follow torch's formula).
      y_ind[e] = std::isfinite(acc) ? forward_ind(act, acc, slope) : y_shared[e];
      const double d = derivative_ind(act, acc, slope);
      y_scale[e] = std::isfinite(d) ? std::fabs(d) : 1.0;
    }
  compare(tally, tag + " y", three.y.data(), y_shared, n, k, y_scale);
  compare(tally, tag + " y (libm formula)", three.y.data(), y_ind, n, k, y_scale,
          kLibmLoosen<T>);
  if (!three.pre.empty()) compare(tally, tag + " pre-activation", three.pre.data(), z, n, k, 1.0);

  // g' = grad_y * act'(saved). By activation.h, from the kernel's own saved tensor, as
  // the op's backward does (a value within rounding of 0 may have either sign: the
  // forward check above covers the saved tensor itself). By the formulas above, from z:
  // for the piecewise-linear ones at the kernel's saved value (its sign is z's).
  const Saved saved = fusedmlp::saved_for(act, slope);
  const std::vector<T>& s = saved == Saved::output ? three.y : three.pre;
  std::vector<double> d_shared(m * n), d_ind(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t e = i * n + j;
      const double gv = double(g.view(i, j));
      const double sv = saved == Saved::none ? 0.0 : double(s[e]);
      d_shared[e] = grad_shared(act, gv, sv, slope);
      const double at_z =
          fusedmlp::piecewise_linear(act) || act == Activation::relu_squared ? sv : z[e];
      const double d = derivative_ind(act, at_z, slope);
      // Where relu and relu_squared drop the gradient it is 0, not 0 * grad_y (NaN stays
      // out), as in torch's threshold_backward.
      const double gd = d == 0 && drops(act) ? 0.0 : gv * d;
      d_ind[e] = std::isfinite(z[e]) && std::isfinite(d) ? gd : d_shared[e];
    }
  const Reference ref = reference_grads(cs, x, w, d_shared);
  const Reference ref_ind = reference_grads(cs, x, w, d_ind);
  check_grads(tally, tag, cs, three.op, ref);
  check_grads(tally, tag + " (libm formula)", cs, three.op, ref_ind, kLibmLoosen<T>);
  check_grads(tally, tag + " A-load", cs, three.a_load, ref);
  check_grads(tally, tag + " A-load (libm formula)", cs, three.a_load, ref_ind, kLibmLoosen<T>);
}

constexpr Activation kAll[] = {
    Activation::identity, Activation::relu,    Activation::leaky_relu,
    Activation::gelu,     Activation::gelu_tanh, Activation::silu,
    Activation::sigmoid,  Activation::tanh,    Activation::relu_squared};

// Values where the activations change branch, saturate, overflow or are not numbers.
std::vector<double> special_grid() {
  std::vector<double> grid = {0.0, -0.0, kNaN, kInf, -kInf};
  for (double v : {1e-30, 1e-6, 9e-5, 1e-4, 0.3, 0.49, 0.5, 0.51, 1.0, 2.5, 4.0, 5.5, 9.0,
                   12.0, 20.0, 30.0, 88.0, 100.0, 400.0, 800.0, 1e30}) {
    grid.push_back(v);
    grid.push_back(-v);
  }
  return grid;
}

std::vector<Case> cases() {
  using X = Layout::X;
  using W = Layout::W;
  using G = Layout::G;
  const Activation relu = Activation::relu, identity = Activation::identity;
  std::vector<Case> all;
  // helpers.ODD_SHAPES (rows, in_features, out_features), with and without bias, with ReLU;
  // the first six and (300, 70, 9) also without activation, as fusedmlp.linear's test.
  const int64_t odd[][3] = {{1, 1, 1},     {3, 17, 5},     {17, 3, 1},    {1, 129, 3},
                            {7, 1, 13},    {2, 31, 37},    {129, 257, 131}, {64, 784, 128},
                            {5, 300, 41},  {300, 70, 9},   {5, 1100, 6},  {600, 37, 10}};
  for (int s = 0; s < 12; ++s) {
    const auto& [m, k, n] = odd[s];
    const std::string shape =
        std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
    for (bool bias : {true, false}) {
      const std::string b = bias ? " bias" : " nobias";
      all.push_back({shape + b, m, k, n, bias, relu});
      if (s < 6 || s == 9) all.push_back({shape + b, m, k, n, bias, identity});
    }
  }
  // helpers.EMPTY_SHAPES as GEMMs: no rows, in_features = 0 (y = act(bias)), out_features = 0.
  for (Activation act : {relu, identity, Activation::gelu}) {
    all.push_back({"rows0", 0, 5, 3, true, act});
    all.push_back({"in0", 4, 0, 3, true, act});
    all.push_back({"out0", 4, 5, 0, true, act});
  }
  // helpers.strided_cases (k, n, rows = 21, 13, 10), and test_non_contiguous_grad_output's
  // transposed and expanded grad_y.
  const std::pair<const char*, Layout> strided[] = {
      {"x_transposed", {X::transposed}},
      {"x_sliced", {X::sliced}},
      {"x_misaligned", {X::misaligned}},
      {"x_row_padded", {X::row_padded}},
      {"x_expanded", {X::expanded}},
      {"weight_transposed", {X::contiguous, W::transposed}},
      {"bias_sliced", {X::contiguous, W::contiguous, G::contiguous, 3}},
      {"bias_expanded", {X::contiguous, W::contiguous, G::contiguous, 0}},
      {"grad_y_transposed", {X::contiguous, W::contiguous, G::transposed}},
      {"grad_y_expanded", {X::contiguous, W::contiguous, G::expanded}},
  };
  for (const auto& [name, layout] : strided) all.push_back({name, 10, 21, 13, true, relu, layout});
  // Rows 48 elements apart and 45 used: full panels of B read in place, the edge packed.
  all.push_back({"x_and_weight_rows_48_apart", 10, 45, 13, true, relu,
                 {X::rows_48_apart, W::rows_48_apart}});
  // Small batches: grad_w (K = rows <= 16) and grad_x (rows <= MR) take the row-panel
  // kernel over B read in place (MicroKernel::rows); rows on both sides of 16 and of every
  // MR (4, 6, 8), in_features whose rows are an odd or even number of 64-byte lines apart
  // (17, 129, 1024) and not a multiple of any vector width.
  for (int64_t m : {1, 2, 3, 5, 8, 16, 17})
    for (int64_t k : {1, 3, 17, 129, 1024})
      all.push_back({"small_batch " + std::to_string(m) + "x" + std::to_string(k) + "x37", m,
                     k, 37, m % 2 == 1, relu});
  // helpers.check_nan_inf_parity: NaN and +-Inf in x, weight, bias and grad_y.
  const std::vector<Special> specials = {
      {'x', 1, 3, kNaN}, {'x', 2, 0, kInf}, {'w', 4, 5, -kInf}, {'b', 0, 7, kNaN}, {'g', 0, 0, kNaN}};
  all.push_back({"nan_inf", 8, 12, 10, true, relu, {}, specials});
  all.push_back({"nan_inf", 8, 12, 10, true, identity, {}, specials});
  // test_relu_keeps_nan_drops_negative_zero_gradient: pre-activations exactly
  // [NaN, -1, 0, 2] give y = [NaN, 0, 0, 2] and pass the gradient where y is NaN or > 0.
  Case mask{"mask_nan_negative_zero", 1, 1, 4, true, relu, {}};
  mask.x_values = {1.0};
  mask.w_values = {1.0, -1.0, 0.0, 2.0};
  mask.b_values = {kNaN, 0.0, 0.0, 0.0};
  all.push_back(mask);

  // Every activation through every path of its epilogue and of its derivative: the
  // dot-product kernel's activate_block (contiguous x), the packed kernel's epilogue
  // (transposed x), row-major (pack_rows) and column-major (pack_cols, grad_b summed)
  // packing of grad_y, SIMD edges (odd n), NaN/Inf, and the special value grid as
  // pre-activations (z = +-grid: x = [1, -1], w = grid, no bias).
  std::vector<double> grid = special_grid();
  for (Activation act : kAll) {
    const std::vector<double> slopes =
        act == Activation::leaky_relu ? std::vector<double>{0.01, -0.2} : std::vector<double>{0.01};
    for (double slope : slopes) {
      const std::string sl = act == Activation::leaky_relu ? " slope " + std::to_string(slope) : "";
      std::vector<Case> mine = {
          {"3x17x5 bias", 3, 17, 5, true, act},
          {"2x31x37 nobias", 2, 31, 37, false, act},
          {"17x3x1 bias", 17, 3, 1, true, act},
          {"70x40x33 bias", 70, 40, 33, true, act},
          {"x_transposed", 10, 21, 13, true, act, {X::transposed}},
          {"grad_y_transposed", 10, 21, 13, true, act, {X::contiguous, W::contiguous, G::transposed}},
          {"x_and_weight_rows_48_apart", 10, 45, 13, true, act, {X::rows_48_apart, W::rows_48_apart}},
          {"nan_inf", 8, 12, 10, true, act, {}, specials},
          {"nan_inf x_transposed", 8, 12, 10, true, act, {X::transposed}, specials},
          // The row-panel kernel: a one-row forward with W transposed (B = W^T row-major,
          // the epilogue applied to the finished panel), K = 1 forwards past every ISA's
          // dot-product rows (the small-K panels with bias and epilogue), small-batch
          // backwards with grad_y transposed and with NaN/Inf.
          {"1x129x20 weight_transposed", 1, 129, 20, true, act, {X::contiguous, W::transposed}},
          {"600x1x13 bias", 600, 1, 13, true, act},
          {"3x40x33 grad_y_transposed", 3, 40, 33, false, act,
           {X::contiguous, W::contiguous, G::transposed}},
          {"5x12x10 nan_inf", 5, 12, 10, true, act, {}, specials},
      };
      Case values{"value_grid", 2, 1, static_cast<int64_t>(grid.size()), false, act};
      values.x_values = {1.0, -1.0};
      values.w_values = grid;
      mine.push_back(values);
      values.name = "value_grid x_sliced";
      values.layout = {X::sliced};
      mine.push_back(values);
      for (Case& cs : mine) {
        cs.name += sl;
        cs.slope = slope;
        all.push_back(cs);
      }
    }
  }
  return all;
}

// elementwise_grad (the CPU backward's derivative computed once, and the double
// backward's factors) on the value grid, against activation.h in float64 and, where
// finite, the formulas above: order 1 is g * act'(s); order 2, g * d act'(s) / ds, is
// checked against a central difference of act' (written above) at z.
// The central difference's own error, as an absolute tolerance (above float32's).
constexpr double kDifferenceError = 1e-6;

template <typename T>
void check_elementwise(Tally& tally, const char* dtype, const char* isa) {
  const double eps = std::numeric_limits<T>::epsilon();
  const std::vector<double> grid = special_grid();
  for (Activation act : kAll) {
    for (double slope_wanted : {0.01, -0.2}) {
      if (slope_wanted < 0 && act != Activation::leaky_relu) continue;
      const T slope = static_cast<T>(slope_wanted);
      const Saved saved = fusedmlp::saved_for(act, slope);
      // s runs over the saved values of z = grid (y or z), g over a few gradients.
      std::vector<T> g, s;
      std::vector<double> z;
      for (double zv : grid)
        for (double gv : {1.0, -0.75, 3.0}) {
          const T zt = static_cast<T>(zv);
          const double y = fusedmlp::activate<double>(act, double(zt), double(slope));
          s.push_back(static_cast<T>(saved == Saved::output ? y : double(zt)));
          g.push_back(static_cast<T>(gv));
          z.push_back(double(zt));
        }
      const int64_t count = static_cast<int64_t>(g.size());
      const std::string tag = std::string(isa) + " " + dtype + " " +
                              fusedmlp::activation_name(act) +
                              (slope_wanted < 0 ? " slope -0.2" : "") + " elementwise_grad";
      for (int order : {1, 2}) {
        std::vector<T> out(count, std::numeric_limits<T>::quiet_NaN());
        fusedmlp::cpu::elementwise_grad(g.data(), s.data(), out.data(), count, act, slope, order);
        std::vector<double> shared(count), ind(count), scale(count, 1.0);
        for (int64_t i = 0; i < count; ++i) {
          const double gv = g[i], sv = s[i];
          shared[i] = order == 1 ? fusedmlp::activation_grad<double>(act, gv, sv, slope)
                                 : fusedmlp::activation_grad2<double>(act, gv, sv, slope);
          // The libm formulas at z (the piecewise ones at s, whose sign is z's); for
          // order 2 a central difference of act', checked within its own error.
          const bool piecewise =
              fusedmlp::piecewise_linear(act) || act == Activation::relu_squared;
          const double at = piecewise ? sv : z[i];
          double d = derivative_ind(act, at, slope);
          bool comparable = std::isfinite(z[i]) && std::isfinite(d);
          if (order == 2) {  // away from the kinks at 0, where the difference straddles
            const double h = 1e-5 * std::max(1.0, std::fabs(at));
            d = (derivative_ind(act, at + h, slope) - derivative_ind(act, at - h, slope)) /
                (2 * h);
            // Differentiated with respect to what backward saves: for y, d/dy = (d/dz) / y'.
            if (saved == Saved::output) d /= derivative_ind(act, at, slope);
            comparable = comparable && std::isfinite(d) && std::fabs(at) > 2 * h;
            if (comparable) scale[i] = std::max(1.0, kDifferenceError / (4 * 4 * eps));
          }
          ind[i] = comparable ? gv * d : shared[i];
        }
        const std::string what = tag + " order " + std::to_string(order);
        compare(tally, what, out.data(), shared, 1, 1, 1.0);
        compare(tally, what + " (libm formula)", out.data(), ind, 1, 1, scale, kLibmLoosen<T>);
      }
    }
  }
}

// The exact values test_relu_keeps_nan_drops_negative_zero_gradient asserts, with a grad_y
// of ones (the tolerance check alone would accept a kernel that got the mask wrong in a
// way the reference shares).
template <typename T>
bool relu_mask_exact() {
  Case cs{"", 1, 1, 4, true, Activation::relu};
  Matrix<T> x = random_matrix<T>(1, 1, 1, 1), w = random_matrix<T>(4, 1, 1, 1);
  Matrix<T> b = random_matrix<T>(1, 4, 0, 1), g = random_matrix<T>(1, 4, 4, 1);
  fill(x, {1.0});
  fill(w, {1.0, -1.0, 0.0, 2.0});
  fill(b, {kNaN, 0.0, 0.0, 0.0});
  fill(g, {1.0, 1.0, 1.0, 1.0});
  const Outputs<T> out = run_layer(cs, x, w, b.view.data, 1, g);
  return std::isnan(out.y[0]) && out.y[1] == 0 && out.y[2] == 0 && out.y[3] == 2 &&
         out.op.grad_b == std::vector<T>{1, 0, 0, 1} &&
         out.op.grad_b_alone == std::vector<T>{1, 0, 0, 1};
}

}  // namespace

int main() {
  Tally tally;
  std::vector<Isa> ran;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::neon}) {
    if (!fusedmlp::cpu::isa_supported(isa)) continue;
    fusedmlp::cpu::set_active_isa(isa);
    const char* name = fusedmlp::cpu::isa_name(isa);
    const int64_t failures_before = tally.failures;
    for (const Case& cs : cases()) {
      run_case<float>(tally, cs, "float32", name);
      run_case<double>(tally, cs, "float64", name);
    }
    tally.checks += 2;
    if (!relu_mask_exact<float>() || !relu_mask_exact<double>()) {
      ++tally.failures;
      std::printf("  FAIL %s: relu mask values of [NaN, -1, 0, 2]\n", name);
    }
    at::shim_num_threads() = 1;
    check_elementwise<float>(tally, "float32", name);
    check_elementwise<double>(tally, "float64", name);
    const double peak = fusedmlp::cpu::fma_peak_gflops();
    ++tally.checks;
    if (!(peak > 0)) ++tally.failures;
    std::printf("%-8s %s (fma probe: %.2f GF/s)\n", name,
                tally.failures == failures_before ? "ok" : "FAILED", peak);
    ran.push_back(isa);
  }
#if defined(__aarch64__)
  // On 64-bit Arm the NEON kernel must be built, be the default, and have run.
  ++tally.checks;
  if (fusedmlp::cpu::best_isa() != Isa::neon ||
      std::find(ran.begin(), ran.end(), Isa::neon) == ran.end()) {
    ++tally.failures;
    std::printf("  FAIL: the NEON kernel is not the best ISA of this aarch64 build\n");
  }
#endif
  std::printf("gemm_check: %lld checks, %lld failed, on %zu ISAs (best: %s)\n",
              static_cast<long long>(tally.checks), static_cast<long long>(tally.failures),
              ran.size(), fusedmlp::cpu::isa_name(fusedmlp::cpu::best_isa()));
  return tally.failures == 0 ? 0 : 1;
}
