// Standalone check of the CPU GEMM driver (gemm.cpp, pack.cpp) with every micro-kernel
// this CPU runs, against a scalar float64 reference, without torch. It runs the three
// GEMMs of a linear layer as linear_relu_cpu.cpp sets them up (y = act(x W^T + b);
// grad_x = g W and grad_w = g^T x with the ReLU mask of y and grad_b summed while packing)
// over the cases of tests/test_linear_relu.py: helpers.py's odd shapes and empty
// dimensions, its strided inputs, bias or none, ReLU or none, and the NaN/Inf and ReLU-mask
// special values; fp32 and fp64; on 1 and on 3 threads, which must agree bit for bit.
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

#include "cpu/gemm.h"
#include "cpu/isa.h"

namespace {

using fusedmlp::cpu::GemmProblem;
using fusedmlp::cpu::Isa;
using fusedmlp::cpu::StridedMatrix;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::mt19937_64 rng(0);

// A strided view into its own buffer of normal random values: element (r, c) is
// buf[offset + r * row_stride + c * col_stride], as a sliced or transposed tensor is.
template <typename T>
struct Operand {
  std::vector<T> buf;
  StridedMatrix<T> view;
  int64_t rows = 0, cols = 0;
  T& at(int64_t r, int64_t c) {
    return const_cast<T&>(view.data[r * view.row_stride + c * view.col_stride]);
  }
};

template <typename T>
Operand<T> random_operand(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
                          int64_t offset = 0) {
  Operand<T> op;
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
Operand<T> make_x(int64_t m, int64_t k, Layout::X l) {
  switch (l) {
    case Layout::X::transposed: return random_operand<T>(m, k, 1, m);
    case Layout::X::sliced: return random_operand<T>(m, k, 2 * k, 2);
    case Layout::X::misaligned: return random_operand<T>(m, k, k + 1, 1, 1);
    case Layout::X::row_padded: return random_operand<T>(m, k, k + 5, 1);
    case Layout::X::expanded: return random_operand<T>(m, k, 0, 1);
    case Layout::X::rows_48_apart: return random_operand<T>(m, k, 48, 1);
    case Layout::X::contiguous: break;
  }
  return random_operand<T>(m, k, k, 1);
}

template <typename T>
Operand<T> make_w(int64_t n, int64_t k, Layout::W l) {
  switch (l) {
    case Layout::W::transposed: return random_operand<T>(n, k, 1, n);
    case Layout::W::rows_48_apart: return random_operand<T>(n, k, 48, 1);
    case Layout::W::contiguous: break;
  }
  return random_operand<T>(n, k, k, 1);
}

template <typename T>
Operand<T> make_g(int64_t m, int64_t n, Layout::G l) {
  switch (l) {
    case Layout::G::transposed: return random_operand<T>(m, n, 1, m);
    case Layout::G::expanded: return random_operand<T>(m, n, 0, 0);  // y.sum()'s gradient
    case Layout::G::contiguous: break;
  }
  return random_operand<T>(m, n, n, 1);
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
  bool relu;
  Layout layout;
  std::vector<Special> specials;
  // Replace x, w and b entirely (the ReLU-mask case): row-major m x k, n x k, n.
  std::vector<double> x_values, w_values, b_values;
};

// max(0, v) keeping NaN, and the mask of its gradient: kept where !(y <= 0), NaN too.
double relu(double v) { return (v > 0 || v != v) ? v : 0.0; }
bool keep(double y) { return !(y <= 0); }

// |a - e| <= atol + rtol |e| as torch.testing.assert_close, with helpers.py's bounds for a
// sum of `reduction` products; NaN must meet NaN and an infinity the same infinity.
template <typename T>
bool close(T actual, double expected, int64_t reduction) {
  const double eps = std::numeric_limits<T>::epsilon();
  const double a = static_cast<double>(actual);
  if (std::isnan(expected) || std::isnan(a)) return std::isnan(expected) && std::isnan(a);
  if (std::isinf(expected) || std::isinf(a)) return a == expected;
  return std::fabs(a - expected) <=
         4 * eps * static_cast<double>(std::max<int64_t>(reduction, 4)) + 64 * eps * std::fabs(expected);
}

struct Tally {
  int64_t checks = 0, failures = 0;
};

template <typename T>
void compare(Tally& tally, const std::string& what, const T* actual, const std::vector<double>& expected,
             int64_t cols, int64_t reduction) {
  ++tally.checks;
  int64_t bad = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (close(actual[i], expected[i], reduction)) continue;
    if (bad++ < 3)
      std::printf("  FAIL %s at (%lld, %lld): got %.9g, expected %.9g\n", what.c_str(),
                  static_cast<long long>(i / std::max<int64_t>(cols, 1)),
                  static_cast<long long>(i % std::max<int64_t>(cols, 1)),
                  static_cast<double>(actual[i]), expected[i]);
  }
  if (bad > 0) ++tally.failures;
}

// The kernels' outputs for one case.
template <typename T>
struct Outputs {
  std::vector<T> y, grad_x, grad_w, grad_b, grad_b_alone;
  bool operator==(const Outputs& o) const {
    auto same = [](const std::vector<T>& a, const std::vector<T>& b) {
      return a.size() == b.size() &&
             (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
    };
    return same(y, o.y) && same(grad_x, o.grad_x) && same(grad_w, o.grad_w) &&
           same(grad_b, o.grad_b) && same(grad_b_alone, o.grad_b_alone);
  }
};

// The GEMMs of linear_relu_cpu.cpp's forward and backward.
template <typename T>
Outputs<T> run_layer(const Case& cs, Operand<T>& x, Operand<T>& w, const T* bias, int64_t bias_stride,
                     Operand<T>& g) {
  const int64_t m = cs.m, k = cs.k, n = cs.n;
  Outputs<T> out;
  // NaN, not zero: an element the driver forgets to write shows up.
  const T unset = std::numeric_limits<T>::quiet_NaN();
  out.y.assign(m * n, unset);
  out.grad_x.assign(m * k, unset);
  out.grad_w.assign(n * k, unset);
  out.grad_b.assign(n, unset);
  out.grad_b_alone.assign(n, unset);

  GemmProblem<T> fwd;
  fwd.m = m, fwd.n = n, fwd.k = k;
  fwd.a = x.view;
  fwd.b = w.view.transposed();
  fwd.c = out.y.data();
  fwd.bias = bias;
  fwd.bias_stride = bias_stride;
  fwd.relu = cs.relu;
  fusedmlp::cpu::gemm(fwd);

  const StridedMatrix<T> mask =
      cs.relu ? StridedMatrix<T>{out.y.data(), n, 1} : StridedMatrix<T>{};
  GemmProblem<T> dx;  // grad_x = g W
  dx.m = m, dx.n = k, dx.k = n;
  dx.a = g.view;
  dx.a_mask = mask;
  dx.b = w.view;
  dx.c = out.grad_x.data();
  fusedmlp::cpu::gemm(dx);

  GemmProblem<T> dw;  // grad_w = g^T x, grad_b = row sums of g^T
  dw.m = n, dw.n = k, dw.k = m;
  dw.a = g.view.transposed();
  dw.a_mask = mask.transposed();
  dw.b = x.view;
  dw.c = out.grad_w.data();
  dw.a_row_sums = out.grad_b.data();
  fusedmlp::cpu::gemm(dw);
  // grad_b when grad_w is not wanted
  fusedmlp::cpu::masked_row_sums(n, m, g.view.transposed(), mask.transposed(),
                                 out.grad_b_alone.data());
  return out;
}

template <typename T>
void fill(Operand<T>& op, const std::vector<double>& values) {
  for (int64_t r = 0; r < op.rows; ++r)
    for (int64_t c = 0; c < op.cols; ++c) op.at(r, c) = static_cast<T>(values[r * op.cols + c]);
}

template <typename T>
void run_case(Tally& tally, const Case& cs, const char* dtype, const char* isa) {
  const int64_t m = cs.m, k = cs.k, n = cs.n;
  Operand<T> x = make_x<T>(m, k, cs.layout.x);
  Operand<T> w = make_w<T>(n, k, cs.layout.w);
  const int64_t bs = cs.layout.bias_stride;
  Operand<T> b = random_operand<T>(1, n, 0, bs);
  Operand<T> g = make_g<T>(m, n, cs.layout.g);
  if (!cs.x_values.empty()) fill(x, cs.x_values);
  if (!cs.w_values.empty()) fill(w, cs.w_values);
  if (!cs.b_values.empty()) fill(b, cs.b_values);
  for (const Special& s : cs.specials) {
    Operand<T>& op = s.operand == 'x' ? x : s.operand == 'w' ? w : s.operand == 'b' ? b : g;
    op.at(s.operand == 'b' ? 0 : s.r, s.c) = static_cast<T>(s.value);
  }
  const T* bias = cs.bias ? b.view.data : nullptr;

  at::shim_num_threads() = 1;
  const Outputs<T> one = run_layer(cs, x, w, bias, bs, g);
  at::shim_num_threads() = 3;
  const Outputs<T> three = run_layer(cs, x, w, bias, bs, g);
  const std::string tag = std::string(isa) + " " + dtype + " " + cs.name;
  ++tally.checks;
  if (!(one == three)) {
    ++tally.failures;
    std::printf("  FAIL %s: 1 and 3 threads differ\n", tag.c_str());
  }

  // The float64 reference, from the same (rounded) inputs.
  std::vector<double> y(m * n), gx(m * k, 0.0), gw(n * k, 0.0), gb(n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = cs.bias ? static_cast<double>(b.at(0, j)) : 0.0;
      for (int64_t p = 0; p < k; ++p) acc += double(x.at(i, p)) * double(w.at(j, p));
      y[i * n + j] = cs.relu ? relu(acc) : acc;
    }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      // The mask is taken from the kernel's y, as the op's backward does (a value within
      // rounding of 0 may have either sign): the forward check above covers y itself. A
      // dropped gradient is a zero that still multiplies (0 * Inf is NaN), as in torch.
      const bool kept = !cs.relu || keep(three.y[i * n + j]);
      const double gv = kept ? double(g.at(i, j)) : 0.0;
      gb[j] += gv;
      for (int64_t p = 0; p < k; ++p) {
        gx[i * k + p] += gv * double(w.at(j, p));
        gw[j * k + p] += gv * double(x.at(i, p));
      }
    }
  compare(tally, tag + " y", three.y.data(), y, n, k);
  compare(tally, tag + " grad_x", three.grad_x.data(), gx, k, n);
  compare(tally, tag + " grad_w", three.grad_w.data(), gw, k, m);
  compare(tally, tag + " grad_b", three.grad_b.data(), gb, 1, m);
  compare(tally, tag + " grad_b (no grad_w)", three.grad_b_alone.data(), gb, 1, m);
}

std::vector<Case> cases() {
  std::vector<Case> all;
  // helpers.ODD_SHAPES (rows, in_features, out_features), with and without bias; the
  // first six and (300, 70, 9) also without activation, as fusedmlp.linear's test.
  const int64_t odd[][3] = {{1, 1, 1},     {3, 17, 5},     {17, 3, 1},    {1, 129, 3},
                            {7, 1, 13},    {2, 31, 37},    {129, 257, 131}, {64, 784, 128},
                            {5, 300, 41},  {300, 70, 9},   {5, 1100, 6},  {600, 37, 10}};
  for (int s = 0; s < 12; ++s) {
    const auto& [m, k, n] = odd[s];
    const std::string shape =
        std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
    for (bool bias : {true, false}) {
      const std::string b = bias ? " bias" : " nobias";
      all.push_back({"linear_relu " + shape + b, m, k, n, bias, true, {}});
      if (s < 6 || s == 9) all.push_back({"linear " + shape + b, m, k, n, bias, false, {}});
    }
  }
  // helpers.EMPTY_SHAPES as GEMMs: no rows, in_features = 0 (y = act(bias)), out_features = 0.
  for (bool relu : {true, false}) {
    const std::string op = relu ? "linear_relu " : "linear ";
    all.push_back({op + "rows0", 0, 5, 3, true, relu, {}});
    all.push_back({op + "in0", 4, 0, 3, true, relu, {}});
    all.push_back({op + "out0", 4, 5, 0, true, relu, {}});
  }
  // helpers.strided_cases (k, n, rows = 21, 13, 10), and test_non_contiguous_grad_output's
  // transposed and expanded grad_y.
  using X = Layout::X;
  using W = Layout::W;
  using G = Layout::G;
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
  for (const auto& [name, layout] : strided) all.push_back({name, 10, 21, 13, true, true, layout});
  // Rows 48 elements apart and 45 used: full panels of B read in place, the edge packed.
  all.push_back({"x_and_weight_rows_48_apart", 10, 45, 13, true, true,
                 {X::rows_48_apart, W::rows_48_apart}});
  // helpers.check_nan_inf_parity: NaN and +-Inf in x, weight, bias and grad_y.
  const std::vector<Special> specials = {
      {'x', 1, 3, kNaN}, {'x', 2, 0, kInf}, {'w', 4, 5, -kInf}, {'b', 0, 7, kNaN}, {'g', 0, 0, kNaN}};
  all.push_back({"nan_inf", 8, 12, 10, true, true, {}, specials});
  all.push_back({"nan_inf linear", 8, 12, 10, true, false, {}, specials});
  // The same through the packed kernel (a transposed x is packed; the contiguous case
  // takes the dot-product kernel), whose ReLU is the vector one.
  all.push_back({"nan_inf x_transposed", 8, 12, 10, true, true, {X::transposed}, specials});
  // test_relu_keeps_nan_drops_negative_zero_gradient: pre-activations exactly
  // [NaN, -1, 0, 2] give y = [NaN, 0, 0, 2] and pass the gradient where y is NaN or > 0.
  Case mask{"relu_mask_nan_negative_zero", 1, 1, 4, true, true, {}};
  mask.x_values = {1.0};
  mask.w_values = {1.0, -1.0, 0.0, 2.0};
  mask.b_values = {kNaN, 0.0, 0.0, 0.0};
  all.push_back(mask);
  return all;
}

// The exact values test_relu_keeps_nan_drops_negative_zero_gradient asserts, with a grad_y
// of ones (the tolerance check alone would accept a kernel that got the mask wrong in a
// way the reference shares).
template <typename T>
bool relu_mask_exact() {
  Case cs{"", 1, 1, 4, true, true, {}};
  Operand<T> x = random_operand<T>(1, 1, 1, 1), w = random_operand<T>(4, 1, 1, 1);
  Operand<T> b = random_operand<T>(1, 4, 0, 1), g = random_operand<T>(1, 4, 4, 1);
  fill(x, {1.0});
  fill(w, {1.0, -1.0, 0.0, 2.0});
  fill(b, {kNaN, 0.0, 0.0, 0.0});
  fill(g, {1.0, 1.0, 1.0, 1.0});
  const Outputs<T> out = run_layer(cs, x, w, b.view.data, 1, g);
  return std::isnan(out.y[0]) && out.y[1] == 0 && out.y[2] == 0 && out.y[3] == 2 &&
         out.grad_b == std::vector<T>{1, 0, 0, 1};
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
