"""Build and run-time facts: ``fusedmlp.info()`` (``python -m fusedmlp.info`` prints them;
that entry point lives in info.py so that running it does not re-execute this module)."""
import torch

from . import _C

__all__ = ["info", "set_cpu_isa"]


def info() -> dict:
    """The CPU kernel ISA in use, threads, and whether CUDA kernels were built."""
    from . import __version__
    return {
        "fusedmlp": __version__,
        "torch": torch.__version__,
        "cpu_isa": _C.cpu_isa(),
        "best_cpu_isa": _C.best_cpu_isa(),
        "num_threads": torch.get_num_threads(),
        "cuda_built": _C.cuda_built(),
        "cuda_available": torch.cuda.is_available(),
    }


def set_cpu_isa(name: str) -> None:
    """Use the 'generic', 'avx2' or 'avx512' (x86) or 'neon' (64-bit Arm) CPU
    micro-kernels (ValueError if this build or CPU cannot run them). The default is the
    best one; FUSEDMLP_CPU_ISA sets it at start-up."""
    _C.set_cpu_isa(name)


def main() -> None:
    for key, value in info().items():
        print(f"{key:>14}: {value}")
