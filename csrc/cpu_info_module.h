// fusedmlp._C functions that report the CPU and the cache blocking (fusedmlp.info()),
// and force cache sizes (tests). Kept out of fusedmlp.cpp so they compile without torch.
#pragma once

#include <Python.h>

namespace fusedmlp {

// {"vendor", "brand", "family", "model", "stepping", "l1d", "l2", "l3", "source"}.
PyObject* py_cpu_caches(PyObject* self, PyObject* unused);
// set_cpu_caches("l1d=32K,l2=1M,l3=32M") (any subset; "" restores the detected sizes).
PyObject* py_set_cpu_caches(PyObject* self, PyObject* spec);
// {"float32": {"packed", "dot", "dot_max_rows"}, "float64": {...}, "min_work_per_thread"}:
// the block sizes the active ISA's kernels use with the current cache sizes.
PyObject* py_cpu_blocking(PyObject* self, PyObject* unused);

}  // namespace fusedmlp
