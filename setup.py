"""Build script for fusedmlp: one extension module, fusedmlp._C, from csrc/.

CPU kernels are always built. CUDA sources (csrc/cuda/*.cu) are compiled when torch
is a CUDA build and a CUDA toolkit is found, with or without a visible GPU.

Knobs (environment variables):
  FUSEDMLP_CUDA=0|1       force the CUDA part off / on (on fails loudly if impossible)
  CUDA_HOME               the CUDA toolkit (default: /usr/local/cuda when it has nvcc)
  TORCH_CUDA_ARCH_LIST    GPU archs to compile for (default with no GPU visible: 8.0;9.0+PTX)
  MAX_JOBS                parallel compile jobs (honoured by torch's ninja build)
  FUSEDMLP_DEBUG=1        -O0 -g build
  FUSEDMLP_SANITIZE=1     AddressSanitizer + UBSan build (`make sanitize` runs the suite on it)
"""
import glob
import os
import shutil
import sysconfig

from setuptools import find_packages, setup


def _find_cuda_home():
    """torch guesses CUDA_HOME from the `nvcc` on PATH; when that is a wrapper script the
    guess is wrong and linking fails. Respect CUDA_HOME, else prefer /usr/local/cuda."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return None


_cuda_home = _find_cuda_home()
if _cuda_home:
    # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def _want_cuda(cuda_sources):
    flag = os.environ.get("FUSEDMLP_CUDA", "").strip()
    possible = torch.version.cuda is not None and _cuda_home is not None
    if flag == "0":
        return False
    if flag == "1":
        if not possible:
            raise RuntimeError(
                "FUSEDMLP_CUDA=1 but CUDA cannot be built: torch.version.cuda="
                f"{torch.version.cuda!r}, CUDA toolkit={_cuda_home!r} (set CUDA_HOME)")
        return bool(cuda_sources)
    if flag not in ("", "auto"):
        raise RuntimeError(f"FUSEDMLP_CUDA must be 0, 1 or unset, got {flag!r}")
    return possible and bool(cuda_sources)


def _default_cuda_archs():
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return
    if torch.cuda.is_available():
        return  # torch compiles for the visible GPUs
    # No GPU here (CI, build hosts): machine code for Ampere and Hopper, plus compute_90 PTX
    # that the driver JIT-compiles for newer cards (without it they would have no image).
    os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"


# Micro-kernel sources that only compile for one architecture (their intrinsics headers
# exist only there); every other source, the portable kernel included, builds everywhere.
# csrc/cpu/isa.cpp offers the same split at run time.
ARCH_ONLY_SOURCES = {
    "x86": ["csrc/cpu/isa_avx2.cpp", "csrc/cpu/isa_avx512.cpp"],
    "arm64": ["csrc/cpu/isa_neon.cpp"],
}


def _target_arch():
    """x86, arm64 or None (anything else: the portable kernel only). The platform being
    built for: sysconfig honours _PYTHON_HOST_PLATFORM, which cross builds set."""
    machine = sysconfig.get_platform().rsplit("-", 1)[-1].lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "win32"):
        return "x86"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    return None


def _cpu_sources(arch):
    other_arch = {src for a, srcs in ARCH_ONLY_SOURCES.items() if a != arch for src in srcs}
    sources = (p.replace(os.sep, "/") for p in glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    return sorted(src for src in sources if src not in other_arch)


def _extension():
    cpu_sources = _cpu_sources(_target_arch())
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    with_cuda = _want_cuda(cuda_sources)

    debug = os.environ.get("FUSEDMLP_DEBUG") == "1"
    sanitize = os.environ.get("FUSEDMLP_SANITIZE") == "1"
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    # -fopenmp: at::parallel_for is an inline template that only runs in parallel when the
    # extension itself is compiled with OpenMP (torch's CPU build uses OpenMP; the libgomp
    # torch loads is reused by soname).
    cxx += ["-fvisibility=hidden", "-Wall", "-fopenmp"]
    ldflags = ["-fopenmp"]
    if sanitize:
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer", "-g"]
        cxx += san
        ldflags += san
    macros = [("FUSEDMLP_WITH_CUDA", "1")] if with_cuda else []
    # The module is initialised by our own PyInit__C (csrc/fusedmlp.cpp), not pybind11.
    common = dict(
        name="fusedmlp._C",
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=macros,
        extra_link_args=ldflags,
        py_limited_api=False,
    )
    if with_cuda:
        _default_cuda_archs()
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(sources=cpu_sources + cuda_sources,
                             extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **common)
    return CppExtension(sources=cpu_sources, extra_compile_args={"cxx": cxx}, **common)


# Guarded so that scripts/arm_check.sh can import this file for _cpu_sources (pip and
# `python setup.py` run it as __main__).
if __name__ == "__main__":
    setup(
        packages=find_packages(include=["fusedmlp", "fusedmlp.*"]),
        ext_modules=[_extension()],
        cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)},
    )
