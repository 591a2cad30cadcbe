"""Build and run-time facts: ``fusedmlp.info()`` (``python -m fusedmlp.info`` prints them;
that entry point lives in info.py so that running it does not re-execute this module)."""
import torch

from . import _C

__all__ = ["info", "set_cpu_isa", "set_cpu_caches"]


def info() -> dict:
    """The CPU kernel ISA in use, threads, the CPU model, its cache sizes and the GEMM
    block sizes derived from them, and whether CUDA kernels were built.

    ``cpu_caches``: L1d / L2 per core and L3 in bytes and their ``source`` (CPUID leaf
    0x8000001D on AMD, leaf 4 on Intel, sysfs, or an override). ``cpu_blocking``: per dtype,
    the register tile (mr x nr) and the largest blocks (mc, kc, nc) of the packed and the
    dot-product GEMM paths on the active ISA and ``dot_max_rows`` (the largest batch whose
    forward takes the dot-product path); ``min_work_per_thread`` (multiply-adds below which
    a GEMM stays on the calling thread); ``row_panel_max_k`` (the K, e.g. the batch of
    grad_w, up to which a GEMM with a row-major B reads it in place one row panel at a
    time; grad_x takes that path too at up to ``mr`` rows). ``cuda_targets``: the GPU code
    compiled in, ``sm_XX`` machine code and ``compute_XX`` PTX (empty without CUDA kernels)."""
    from . import __version__
    caches = _C.cpu_caches()
    return {
        "fusedmlp": __version__,
        "torch": torch.__version__,
        "cpu_isa": _C.cpu_isa(),
        "best_cpu_isa": _C.best_cpu_isa(),
        "cpu": {key: caches.pop(key) for key in ("vendor", "brand", "family", "model", "stepping")},
        "cpu_caches": caches,
        "cpu_blocking": _C.cpu_blocking(),
        "num_threads": torch.get_num_threads(),
        "cuda_built": _C.cuda_built(),
        "cuda_targets": [t for t in _C.cuda_targets().split(",") if t],
        "cuda_available": torch.cuda.is_available(),
    }


def cpu_description() -> str:
    """One line naming the CPU, its caches and the kernel ISA, for benchmark tables:
    'AuthenticAMD family 26 model 2 (AMD EPYC ...), L1d 48 KiB, L2 1 MiB, L3 32 MiB, ISA avx512'."""
    facts = info()
    cpu, caches = facts["cpu"], facts["cpu_caches"]

    def size(n):
        return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10} KiB"
    brand = f" ({cpu['brand']})" if cpu["brand"] else ""
    return (f"{cpu['vendor'] or 'unknown vendor'} family {cpu['family']} model {cpu['model']}"
            f"{brand}, L1d {size(caches['l1d'])}, L2 {size(caches['l2'])}, "
            f"L3 {size(caches['l3'])} ({caches['source']}), ISA {facts['cpu_isa']}")


def set_cpu_isa(name: str) -> None:
    """Use the 'generic', 'avx2' or 'avx512' (x86) or 'neon' (64-bit Arm) CPU
    micro-kernels (ValueError if this build or CPU cannot run them). The default is the
    best one; FUSEDMLP_CPU_ISA sets it at start-up."""
    _C.set_cpu_isa(name)


def set_cpu_caches(spec: str) -> None:
    """Derive the CPU blocking from these cache sizes instead of the detected ones, e.g.
    ``"l1d=32K,l2=1M,l3=32M"`` (any subset; K, M, G suffixes or bytes); ``""`` goes back
    to the detected sizes. ValueError on a malformed spec. FUSEDMLP_CPU_CACHES sets it at
    start-up. For tests and tuning: it changes the speed, and the rounding only where a
    forward's K is split into blocks of a different length."""
    _C.set_cpu_caches(spec)


def main() -> None:
    for key, value in info().items():
        print(f"{key:>14}: {value}")
