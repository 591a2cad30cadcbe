"""fusedmlp: fused Linear + bias + ReLU for PyTorch, forward and backward, on hand-written
CPU (and CUDA) kernels."""
__version__ = "0.1.0"

from .info import info, set_cpu_isa
from .nn import FusedLinearReLU
from .ops import LinearReLUFunction, linear, linear_relu

__all__ = ["linear_relu", "linear", "LinearReLUFunction", "FusedLinearReLU", "info", "set_cpu_isa"]
