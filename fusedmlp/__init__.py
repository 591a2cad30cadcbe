"""fusedmlp: fused Linear + bias + activation for PyTorch, forward and backward, on hand-written
CPU (and CUDA) kernels."""
__version__ = "0.1.0"

from .fuse import FuseReport, fuse
from ._info import info, set_cpu_caches, set_cpu_isa
from .nn import FusedLinear, FusedLinearReLU, FusedMLP
from .ops import ACTIVATIONS, LinearReLUFunction, linear, linear_relu, mlp

__all__ = ["linear_relu", "linear", "LinearReLUFunction", "mlp", "ACTIVATIONS", "FusedLinearReLU",
           "FusedLinear", "FusedMLP", "fuse", "FuseReport", "info", "set_cpu_caches", "set_cpu_isa"]
