// The one schema file: every fusedmlp op is declared here; each backend registers its
// kernels in its own TORCH_LIBRARY_IMPL (cpu/linear_relu_cpu.cpp, cuda/..., autograd.cpp).
// Also the Python module fusedmlp._C (plain C API, no pybind11: it only has to load the
// library, which registers the ops, and report build facts).
#include <Python.h>
#include <torch/library.h>

#include <stdexcept>

#include "cpu/gemm.h"
#include "cpu/isa.h"

TORCH_LIBRARY(fusedmlp, m) {
  // y = relu(x @ weight.T + bias); x: (..., in_features), weight: (out_features, in_features),
  // bias: (out_features,) or None. Same conventions as F.linear.
  m.def("linear_relu(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Gradients of linear_relu from its saved output y (y's sign is the ReLU mask).
  // output_mask = which of (grad_x, grad_weight, grad_bias) to compute; the others are None.
  m.def(
      "linear_relu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor y, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // The same without activation: y = x @ weight.T + bias (the last layer of an MLP).
  m.def("linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def(
      "linear_backward(Tensor grad_y, Tensor x, Tensor weight, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // y = act(x @ weight.T + bias) for any activation of csrc/activation.h, by name
  // ("identity", "relu", "leaky_relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh",
  // "relu_squared"); negative_slope is leaky_relu's.
  m.def(
      "linear_act(Tensor x, Tensor weight, Tensor? bias=None, str activation=\"identity\", "
      "float negative_slope=0.01) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // The same, also returning the pre-activation z = x @ weight.T + bias (what backward of
  // gelu, gelu_tanh, silu and relu_squared differentiates from): (y, z).
  m.def(
      "linear_act_pre(Tensor x, Tensor weight, Tensor? bias, str activation, "
      "float negative_slope) -> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Gradients of linear_act from `saved`: the output y (identity: None; relu, sigmoid,
  // tanh, leaky_relu with negative_slope >= 0) or the pre-activation z (the others).
  m.def(
      "linear_act_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor? saved, "
      "str activation, float negative_slope, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Elementwise: grad * act'(saved) (order 1) or grad * d act'(saved) / d saved (order 2),
  // saved as linear_act_backward reads it (the double backward's pieces).
  m.def(
      "activation_grad(Tensor grad, Tensor saved, str activation, float negative_slope, "
      "int order) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // A whole MLP in one call: h[0] = x, h[l+1] = activations[l](h[l] @ weights[l].T +
  // biases[l]) with negative_slopes[l] (leaky_relu's; one entry per layer in every list),
  // y = h[L]. Returns (y, hidden, pre): hidden = h[1..L-1], pre = the pre-activations of
  // the layers whose activation backward differentiates from z (gelu, gelu_tanh, silu,
  // relu_squared, leaky_relu with a negative slope), in layer order: what backward reads.
  m.def(
      "mlp(Tensor x, Tensor[] weights, Tensor?[] biases, str[] activations, "
      "float[] negative_slopes) -> (Tensor, Tensor[], Tensor[])",
      {at::Tag::pt2_compliant_tag});
  // Gradients of mlp from its saved tensors (y: the output, needed when the last
  // activation differentiates from it). output_mask: [grad_x, grad of each weight, grad of
  // each bias]; returns (grad_x or None, the asked-for weight grads, the asked-for bias
  // grads), in layer order.
  m.def(
      "mlp_backward(Tensor grad_y, Tensor x, Tensor[] weights, Tensor? y, Tensor[] hidden, "
      "Tensor[] pre, str[] activations, float[] negative_slopes, bool[] output_mask) "
      "-> (Tensor, Tensor[], Tensor[])",
      {at::Tag::pt2_compliant_tag});
}

namespace {

using fusedmlp::cpu::Isa;

// A C++ exception must not cross into Python's C API: turn it into a ValueError.
template <typename Fn>
PyObject* as_value_error(Fn fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

PyObject* cpu_isa(PyObject*, PyObject*) {
  return as_value_error([] {
    return PyUnicode_FromString(fusedmlp::cpu::isa_name(fusedmlp::cpu::active_isa()));
  });
}

PyObject* best_cpu_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(fusedmlp::cpu::isa_name(fusedmlp::cpu::best_isa()));
}

PyObject* set_cpu_isa(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;
  return as_value_error([name] {
    fusedmlp::cpu::set_active_isa(fusedmlp::cpu::parse_isa(name));
    Py_RETURN_NONE;
  });
}

PyObject* fma_peak_gflops(PyObject*, PyObject*) {
  return as_value_error([] { return PyFloat_FromDouble(fusedmlp::cpu::fma_peak_gflops()); });
}

PyObject* cuda_built(PyObject*, PyObject*) {
#ifdef FUSEDMLP_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cpu_isa", cpu_isa, METH_NOARGS, "The ISA of the CPU micro-kernels in use."},
    {"best_cpu_isa", best_cpu_isa, METH_NOARGS, "The best ISA this CPU supports."},
    {"set_cpu_isa", set_cpu_isa, METH_O,
     "Use the 'generic', 'avx2' or 'avx512' CPU micro-kernels (ValueError if unsupported)."},
    {"cuda_built", cuda_built, METH_NOARGS, "Whether the CUDA kernels were compiled in."},
    {"fma_peak_gflops", fma_peak_gflops, METH_NOARGS,
     "float32 FMA peak (GF/s) of the active CPU ISA on all torch threads, measured now."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "fusedmlp's compiled kernels; importing it registers the ops.", -1,
                          methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
