// fusedmlp._C.linear_entry: the direct Python entry to the layer ops (python_entry.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace fusedmlp {

// Adds linear_entry and set_entry_fallback to the module.
void add_python_entry(pybind11::module_& m);

}  // namespace fusedmlp
