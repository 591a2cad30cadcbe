"""setup.py's choice of ISA sources per target architecture: the x86 kernels only for x86
(their intrinsics headers exist nowhere else), NEON only for 64-bit Arm, the portable
kernel everywhere; and its compile flags per compiler (OpenMP only where the compiler links
it). (`make dist-check` and `make arm-check` build the results.)"""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARCH_ONLY = {"x86": {"csrc/cpu/isa_avx2.cpp", "csrc/cpu/isa_avx512.cpp"},
             "arm64": {"csrc/cpu/isa_neon.cpp"}, None: set()}
PLATFORMS = {  # sysconfig.get_platform() of the build target -> architecture
    "linux-x86_64": "x86", "win-amd64": "x86", "macosx-10.9-x86_64": "x86",
    "linux-aarch64": "arm64", "macosx-11.0-arm64": "arm64", "win-arm64": "arm64",
    "linux-riscv64": None, "linux-ppc64le": None,
}

# In a child process: importing setup.py sets CUDA_HOME. _PYTHON_HOST_PLATFORM is what
# sysconfig.get_platform() reports (cross builds set it).
CHILD = """
import json, os, sys, setup
result = {}
for platform in json.loads(sys.argv[1]):
    os.environ["_PYTHON_HOST_PLATFORM"] = platform
    arch = setup._target_arch()
    result[platform] = [arch, setup._cpu_sources(arch)]
print(json.dumps(result))
"""


def test_isa_sources_follow_the_target_architecture():
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(PLATFORMS))], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    all_arch_only = set().union(*ARCH_ONLY.values())
    for platform, arch in PLATFORMS.items():
        got_arch, sources = result[platform]
        assert got_arch == arch, platform
        assert set(sources) & all_arch_only == ARCH_ONLY[arch], platform
        for everywhere in ("csrc/cpu/isa_generic.cpp", "csrc/cpu/gemm.cpp", "csrc/fusedmlp.cpp"):
            assert everywhere in sources, platform


# setup.py's compile flags per compiler, in a child process as above. CXX=false stands for a
# compiler that cannot link OpenMP (Apple clang without libomp); sys.platform = "win32" for
# MSVC (torch's only compiler there).
FLAGS_CHILD = """
import json, os, sys, setup
cases = {}
for name, env, platform in [("gcc", {}, "linux"), ("no_openmp", {"CXX": "false"}, "linux"),
                            ("forced_off", {"FUSEDMLP_OPENMP": "0"}, "linux"),
                            ("msvc", {}, "win32")]:
    os.environ.update(env)
    sys.platform = platform
    cases[name] = setup._cxx_flags()
    for key in env:
        del os.environ[key]
print(json.dumps(cases))
"""


def test_openmp_and_flags_follow_the_compiler():
    env = {k: v for k, v in os.environ.items()
           if k not in ("CXX", "FUSEDMLP_OPENMP", "FUSEDMLP_DEBUG", "FUSEDMLP_SANITIZE")}
    out = subprocess.run([sys.executable, "-c", FLAGS_CHILD], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    flags = json.loads(out.stdout.splitlines()[-1])
    # This machine's c++ is GCC: OpenMP on, compiled and linked.
    assert flags["gcc"] == [["-O3", "-fvisibility=hidden", "-Wall", "-fopenmp"], ["-fopenmp"]]
    # No OpenMP: the same build without it, and a message saying what that costs.
    no_openmp = [["-O3", "-fvisibility=hidden", "-Wall"], []]
    assert flags["no_openmp"] == no_openmp
    assert "building without it" in out.stderr and "one thread" in out.stderr
    assert flags["forced_off"] == no_openmp
    assert flags["msvc"] == [["/O2", "/W3", "/openmp"], []]
