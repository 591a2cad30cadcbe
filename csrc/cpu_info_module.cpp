// fusedmlp._C's CPU report and cache override (see cpu_info_module.h).
#include "cpu_info_module.h"

#include <exception>

#include "cpu/cache_info.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"

namespace fusedmlp {
namespace {

// Sets d[key] = value and drops the reference to value; false (with the error set) on failure.
bool put(PyObject* d, const char* key, PyObject* value) {
  if (value == nullptr) return false;
  const int rc = PyDict_SetItemString(d, key, value);
  Py_DECREF(value);
  return rc == 0;
}

PyObject* limits_dict(const cpu::BlockLimits& limits, int mr, int nr) {
  PyObject* d = PyDict_New();
  if (d && put(d, "mr", PyLong_FromLong(mr)) && put(d, "nr", PyLong_FromLong(nr)) &&
      put(d, "mc", PyLong_FromLongLong(limits.mc)) && put(d, "kc", PyLong_FromLongLong(limits.kc)) &&
      put(d, "nc", PyLong_FromLongLong(limits.nc)))
    return d;
  Py_XDECREF(d);
  return nullptr;
}

template <typename T>
PyObject* dtype_blocking() {
  const cpu::BlockingInfo info = cpu::blocking_info<T>();
  PyObject* d = PyDict_New();
  if (d && put(d, "packed", limits_dict(info.packed, info.mr, info.nr)) &&
      put(d, "dot", limits_dict(info.dot, info.dot_mr, cpu::kDotNR)) &&
      put(d, "dot_max_rows", PyLong_FromLong(info.dot_max_rows)))
    return d;
  Py_XDECREF(d);
  return nullptr;
}

// A C++ exception must not cross into Python's C API: turn it into a ValueError.
template <typename Fn>
PyObject* guarded(Fn fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

}  // namespace

PyObject* py_cpu_caches(PyObject*, PyObject*) {
  return guarded([]() -> PyObject* {
    const cpu::CpuModel& cpu = cpu::cpu_model();
    const cpu::CacheSizes caches = cpu::cache_sizes();
    PyObject* d = PyDict_New();
    if (d && put(d, "vendor", PyUnicode_FromString(cpu.vendor.c_str())) &&
        put(d, "brand", PyUnicode_FromString(cpu.brand.c_str())) &&
        put(d, "family", PyLong_FromLong(cpu.family)) &&
        put(d, "model", PyLong_FromLong(cpu.model)) &&
        put(d, "stepping", PyLong_FromLong(cpu.stepping)) &&
        put(d, "l1d", PyLong_FromLongLong(caches.l1d)) &&
        put(d, "l2", PyLong_FromLongLong(caches.l2)) &&
        put(d, "l3", PyLong_FromLongLong(caches.l3)) &&
        put(d, "source", PyUnicode_FromString(caches.source)))
      return d;
    Py_XDECREF(d);
    return nullptr;
  });
}

PyObject* py_set_cpu_caches(PyObject*, PyObject* spec) {
  const char* text = PyUnicode_AsUTF8(spec);
  if (text == nullptr) return nullptr;
  return guarded([text] {
    cpu::set_cache_sizes(text);
    Py_RETURN_NONE;
  });
}

PyObject* py_cpu_blocking(PyObject*, PyObject*) {
  return guarded([]() -> PyObject* {
    PyObject* d = PyDict_New();
    if (d && put(d, "float32", dtype_blocking<float>()) &&
        put(d, "float64", dtype_blocking<double>()) &&
        put(d, "min_work_per_thread", PyLong_FromLongLong(cpu::kMinWorkPerThread)))
      return d;
    Py_XDECREF(d);
    return nullptr;
  });
}

}  // namespace fusedmlp
