// A direct Python entry to the layer ops (fusedmlp._C.linear_entry), for the calls a
// batch of 1 notices. `torch.ops.fusedmlp.linear_relu.default(x, w, b)` goes through the
// OpOverload's Python __call__ and the JIT's boxed call (a stack of IValues built from the
// schema): 1.72 us a call at 1 x 128 -> 10 without grad, 0.97 us through this entry, as
// torch.add (benchmarks/NOTES.md). The entry takes plain tensors and calls the same op
// through the dispatcher, unboxed, as torch's generated bindings do: autograd, autocast,
// the profiler, the JIT tracer and every dispatch mode see the op they saw before.
//
// Every other call goes to ops.py's _linear_via_ops, through the OpOverloads: objects
// that are not exactly a Tensor or Parameter (subclasses, FakeTensor, fx Proxy: their
// __torch_function__ must run), an active TorchFunctionMode (torch.device("meta") as a
// context, for one), keyword arguments, a negative_slope that is not a float, an unknown
// activation (which _linear_via_ops reports). Under torch.compile ops.py calls the
// OpOverloads itself, so that dynamo traces them.
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include <ATen/PythonTorchFunctionTLS.h>

#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "activation.h"
#include "linear_ops.h"
#include "python_entry.h"

namespace fusedmlp {
namespace {

using OptTensor = std::optional<at::Tensor>;

// Set at import (set_entry_fallbacks): nn.Parameter's type and the Python callables for
// every call the entries do not take. Owned references, held for the module's life.
PyTypeObject* parameter_type = nullptr;
PyObject* linear_fallback = nullptr;
PyObject* mlp_fallback = nullptr;

bool plain_tensor(PyObject* obj) {
  const PyTypeObject* type = Py_TYPE(obj);
  return type == reinterpret_cast<PyTypeObject*>(THPVariableClass) || type == parameter_type;
}

// The activation a Python name (or None: identity) stands for; nullopt for anything that
// is not one of activation.h's names (the fallback then raises ops.py's ValueError).
std::optional<Activation> activation_of(PyObject* name) {
  if (name == Py_None) return Activation::identity;
  if (!PyUnicode_Check(name)) return std::nullopt;
  Py_ssize_t size = 0;
  const char* text = PyUnicode_AsUTF8AndSize(name, &size);
  if (text == nullptr) {
    PyErr_Clear();
    return std::nullopt;
  }
  return find_activation(c10::string_view(text, static_cast<size_t>(size)));
}

// fn() with the GIL released, as torch's bindings call ops. The errors our kernels throw
// as std::invalid_argument become ValueError, as from the OpOverload (pybind11's
// translation); an undefined result then says a Python exception is set. c10 errors
// propagate to HANDLE_TH_ERRORS (RuntimeError, or the c10 error's own Python type).
template <class Fn>
auto call_without_gil(Fn&& fn) -> decltype(fn()) {
  try {
    pybind11::gil_scoped_release no_gil;
    return fn();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  }
  return {};
}

// linear_entry(x, weight, bias, activation, negative_slope): activation is None or a
// name of activation.h; the op is that of fusedmlp.linear (linear, linear_relu or
// linear_act).
PyObject* linear_entry(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs,
                       PyObject* kwnames) {
  HANDLE_TH_ERRORS
  TORCH_CHECK(linear_fallback != nullptr, "fusedmlp._C.linear_entry: no fallback set");
  std::optional<Activation> act;
  const bool fast = kwnames == nullptr && nargs == 5 && plain_tensor(args[0]) &&
                    plain_tensor(args[1]) && (args[2] == Py_None || plain_tensor(args[2])) &&
                    PyFloat_CheckExact(args[4]) && !at::impl::torch_function_mode_enabled() &&
                    (act = activation_of(args[3])).has_value();
  if (!fast)
    return PyObject_Vectorcall(linear_fallback, args, static_cast<size_t>(nargs), kwnames);
  const double slope = PyFloat_AS_DOUBLE(args[4]);
  const at::Tensor& x = THPVariable_Unpack(args[0]);
  const at::Tensor& weight = THPVariable_Unpack(args[1]);
  const OptTensor bias =
      args[2] == Py_None ? std::nullopt : OptTensor(THPVariable_Unpack(args[2]));
  static const auto relu_op = find_op<LayerForwardSig>("fusedmlp::linear_relu");
  static const auto linear_op = find_op<LayerForwardSig>("fusedmlp::linear");
  static const auto act_op = find_op<LayerActForwardSig>("fusedmlp::linear_act");
  at::Tensor y = call_without_gil([&] {
    if (*act == Activation::relu) return relu_op.call(x, weight, bias);
    if (*act == Activation::identity) return linear_op.call(x, weight, bias);
    return act_op.call(x, weight, bias, activation_name(*act), slope);
  });
  if (!y.defined()) return nullptr;  // a Python exception is set
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

// Python sequence (list or tuple) -> its items, or false when it is neither.
bool items_of(PyObject* seq, PyObject* const** items, Py_ssize_t* size) {
  if (PyList_CheckExact(seq)) {
    *items = &PyList_GET_ITEM(seq, 0);
    *size = PyList_GET_SIZE(seq);
    return true;
  }
  if (PyTuple_CheckExact(seq)) {
    *items = &PyTuple_GET_ITEM(seq, 0);
    *size = PyTuple_GET_SIZE(seq);
    return true;
  }
  return false;
}

// mlp_entry(x, weights, biases, activations, negative_slopes): the mlp op's y (its other
// outputs are the autograd node's), for lists or tuples of plain tensors (biases: or
// None), of str and of float. The op checks lengths, names and shapes as it does for
// every caller.
PyObject* mlp_entry(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs,
                    PyObject* kwnames) {
  HANDLE_TH_ERRORS
  TORCH_CHECK(mlp_fallback != nullptr, "fusedmlp._C.mlp_entry: no fallback set");
  const auto slow = [&] {
    return PyObject_Vectorcall(mlp_fallback, args, static_cast<size_t>(nargs), kwnames);
  };
  if (kwnames != nullptr || nargs != 5 || !plain_tensor(args[0]) ||
      at::impl::torch_function_mode_enabled())
    return slow();
  PyObject* const* items[4];
  Py_ssize_t sizes[4];
  for (int i = 0; i < 4; ++i)
    if (!items_of(args[i + 1], &items[i], &sizes[i])) return slow();
  std::vector<at::Tensor> weights;
  weights.reserve(sizes[0]);
  for (Py_ssize_t i = 0; i < sizes[0]; ++i) {
    if (!plain_tensor(items[0][i])) return slow();
    weights.push_back(THPVariable_Unpack(items[0][i]));
  }
  c10::List<std::optional<at::Tensor>> biases;
  biases.reserve(sizes[1]);
  for (Py_ssize_t i = 0; i < sizes[1]; ++i) {
    PyObject* b = items[1][i];
    if (b != Py_None && !plain_tensor(b)) return slow();
    biases.push_back(b == Py_None ? std::nullopt
                                  : std::optional<at::Tensor>(THPVariable_Unpack(b)));
  }
  std::vector<std::string> activations;
  activations.reserve(sizes[2]);
  for (Py_ssize_t i = 0; i < sizes[2]; ++i) {
    if (!PyUnicode_Check(items[2][i])) return slow();
    Py_ssize_t size = 0;
    const char* text = PyUnicode_AsUTF8AndSize(items[2][i], &size);
    if (text == nullptr) return nullptr;
    activations.emplace_back(text, static_cast<size_t>(size));
  }
  std::vector<double> slopes;
  slopes.reserve(sizes[3]);
  for (Py_ssize_t i = 0; i < sizes[3]; ++i) {
    if (!PyFloat_CheckExact(items[3][i])) return slow();
    slopes.push_back(PyFloat_AS_DOUBLE(items[3][i]));
  }
  static const auto op = find_op<MlpSig>("fusedmlp::mlp");
  at::Tensor y = call_without_gil([&] {
    return std::get<0>(op.call(THPVariable_Unpack(args[0]), weights, biases, activations, slopes));
  });
  if (!y.defined()) return nullptr;
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyMethodDef linear_entry_def = {
    "linear_entry", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(linear_entry)),
    METH_FASTCALL | METH_KEYWORDS,
    "linear_entry(x, weight, bias, activation, negative_slope): fusedmlp.linear's op "
    "called directly for plain tensors (see csrc/python_entry.cpp)."};

PyMethodDef mlp_entry_def = {
    "mlp_entry", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(mlp_entry)),
    METH_FASTCALL | METH_KEYWORDS,
    "mlp_entry(x, weights, biases, activations, negative_slopes): the mlp op's output "
    "for plain tensors, called directly (see csrc/python_entry.cpp)."};

}  // namespace

void add_python_entry(pybind11::module_& m) {
  for (PyMethodDef* def : {&linear_entry_def, &mlp_entry_def})
    m.add_object(def->ml_name,
                 pybind11::reinterpret_steal<pybind11::object>(
                     PyCFunction_NewEx(def, nullptr, m.attr("__name__").ptr())));
  m.def(
      "set_entry_fallbacks",
      [](pybind11::object parameter, pybind11::object linear, pybind11::object mlp) {
        if (!PyType_Check(parameter.ptr()))
          throw std::invalid_argument("set_entry_fallbacks: parameter must be a type");
        if (!PyCallable_Check(linear.ptr()) || !PyCallable_Check(mlp.ptr()))
          throw std::invalid_argument("set_entry_fallbacks: fallbacks must be callable");
        PyObject* old[] = {reinterpret_cast<PyObject*>(parameter_type), linear_fallback,
                           mlp_fallback};
        parameter_type = reinterpret_cast<PyTypeObject*>(parameter.release().ptr());
        linear_fallback = linear.release().ptr();
        mlp_fallback = mlp.release().ptr();
        for (PyObject* o : old) Py_XDECREF(o);
      },
      "set_entry_fallbacks(parameter, linear, mlp): nn.Parameter's type (taken like "
      "Tensor) and the Python callables linear_entry and mlp_entry hand every other call "
      "to (fusedmlp/ops.py).");
}

}  // namespace fusedmlp
