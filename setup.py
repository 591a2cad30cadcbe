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
  FUSEDMLP_OPENMP=0|1     force OpenMP off / on (default: on when the C++ compiler links an
                          OpenMP program with -fopenmp; MSVC: /openmp)
  CXX                     the C++ compiler (torch's default: c++, or cl on Windows)

Compilers: GCC and clang get -fopenmp when it works; Apple clang without libomp gets no
OpenMP (then, with torch's OpenMP builds, at::parallel_for runs the kernels on one thread);
MSVC gets its own flags. Only GCC on Linux is tested.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile

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


def _cuda_targets():
    """The GPU code the build will carry, read off the -gencode flags torch's build passes
    (a private helper, the same in torch 2.11-2.14): 'sm_XX' machine code and 'compute_XX'
    PTX, by arch, e.g. ['sm_80', 'sm_90', 'compute_90']. fusedmlp.info() reports them, and
    tests/test_cuda.py checks the built library against them."""
    from torch.utils.cpp_extension import _get_cuda_arch_flags
    targets = {code for flag in _get_cuda_arch_flags() for code in re.findall(r",code=(\w+)", flag)}
    return sorted(targets, key=lambda t: (int(re.sub(r"\D", "", t)), t.startswith("compute")))


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


def _is_msvc():
    # torch's BuildExtension supports only MSVC on Windows.
    return sys.platform == "win32"


def _openmp_works(flag):
    """Whether the C++ compiler torch will run ($CXX, else c++) compiles and links an OpenMP
    program with `flag`: GCC and LLVM clang do; Apple clang without libomp does not."""
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    program = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.cpp")
        with open(src, "w") as f:
            f.write(program)
        try:
            result = subprocess.run(cxx + [flag, src, "-o", os.path.join(tmp, "omp_probe")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return False
    return result.returncode == 0


def _want_openmp(flag):
    forced = os.environ.get("FUSEDMLP_OPENMP", "").strip()
    if forced not in ("", "0", "1"):
        raise RuntimeError(f"FUSEDMLP_OPENMP must be 0, 1 or unset, got {forced!r}")
    if forced:
        return forced == "1"
    if _is_msvc() or _openmp_works(flag):
        return True
    print(f"fusedmlp: the C++ compiler cannot link OpenMP ({flag}); building without it, so "
          "with an OpenMP build of torch the CPU kernels run on one thread (install libomp, "
          "or set CXX to a compiler with OpenMP)", file=sys.stderr)
    return False


def _cxx_flags():
    """(compile flags, link flags) for the host C++ compiler.

    OpenMP: at::parallel_for is an inline template that only runs in parallel when the
    extension itself is compiled with OpenMP (torch's CPU builds use OpenMP; the runtime torch
    already loaded is reused). Without it the build still works and at::parallel_for runs
    serially, unless torch uses its native thread pool (AT_PARALLEL_NATIVE)."""
    debug = os.environ.get("FUSEDMLP_DEBUG") == "1"
    sanitize = os.environ.get("FUSEDMLP_SANITIZE") == "1"
    if _is_msvc():
        if sanitize:
            raise RuntimeError("FUSEDMLP_SANITIZE=1 needs GCC or clang")
        # torch adds /MD, /EHsc and its /wd list; /W3 is MSVC's usual level (-Wall there
        # would be /Wall, every warning of the standard library and torch's headers too).
        cxx = ["/Od", "/Zi"] if debug else ["/O2"]
        cxx += ["/W3"] + (["/openmp"] if _want_openmp("/openmp") else [])
        return cxx, []
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    openmp = ["-fopenmp"] if _want_openmp("-fopenmp") else []
    cxx += ["-fvisibility=hidden", "-Wall"] + openmp
    ldflags = list(openmp)
    if sanitize:
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer", "-g"]
        cxx += san
        ldflags += san
    return cxx, ldflags


def _extension():
    cpu_sources = _cpu_sources(_target_arch())
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    with_cuda = _want_cuda(cuda_sources)

    cxx, ldflags = _cxx_flags()
    macros = [("FUSEDMLP_WITH_CUDA", "1")] if with_cuda else []
    # csrc/python_module.cpp defines the module (pybind11); csrc/fusedmlp.cpp the op schemas.
    common = dict(
        name="fusedmlp._C",
        include_dirs=[os.path.join(HERE, "csrc")],
        define_macros=macros,
        extra_link_args=ldflags,
        py_limited_api=False,
    )
    if with_cuda:
        _default_cuda_archs()
        # Plain words and commas, no quotes to survive the shell; C++ units only (nvcc would
        # read the commas as separating more -D options). python_module.cpp turns it into
        # fusedmlp.info()'s "cuda_targets".
        targets = "-DFUSEDMLP_CUDA_TARGETS=" + ",".join(_cuda_targets())
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        return CUDAExtension(sources=cpu_sources + cuda_sources,
                             extra_compile_args={"cxx": cxx + [targets], "nvcc": nvcc}, **common)
    return CppExtension(sources=cpu_sources, extra_compile_args={"cxx": cxx}, **common)


# Guarded so that scripts/arm_check.sh can import this file for _cpu_sources (pip and
# `python setup.py` run it as __main__).
if __name__ == "__main__":
    setup(
        packages=find_packages(include=["fusedmlp", "fusedmlp.*"]),
        ext_modules=[_extension()],
        cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)},
    )
