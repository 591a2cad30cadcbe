// The one schema file: every fusedmlp op is declared here; each backend registers its
// kernels in its own TORCH_LIBRARY_IMPL (cpu/linear_relu_cpu.cpp, cuda/..., autograd.cpp).
// Also the Python module fusedmlp._C (plain C API, no pybind11: it only has to load the
// library, which registers the ops, and report build facts).
#include <Python.h>
#include <torch/library.h>

#include <stdexcept>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu_info_module.h"

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
    {"cpu_caches", fusedmlp::py_cpu_caches, METH_NOARGS,
     "The CPU model and the cache sizes the blocking uses (and where they came from)."},
    {"set_cpu_caches", fusedmlp::py_set_cpu_caches, METH_O,
     "Force cache sizes, e.g. 'l1d=32K,l2=1M,l3=32M'; '' restores the detected ones."},
    {"cpu_blocking", fusedmlp::py_cpu_blocking, METH_NOARGS,
     "The GEMM block sizes of the active CPU ISA with the current cache sizes."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                          "fusedmlp's compiled kernels; importing it registers the ops.", -1,
                          methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
