// The activation names as fusedmlp._C reports them, in a header without torch so that
// python_module.cpp stays quick to compile (linear_ops.h pulls in ATen).
#pragma once

#include <string>

namespace fusedmlp {

// The valid names (activation.h's), comma separated, in enum order.
std::string activation_names();

}  // namespace fusedmlp
