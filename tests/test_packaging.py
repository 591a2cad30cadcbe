"""setup.py's choice of ISA sources per target architecture: the x86 kernels only for x86
(their intrinsics headers exist nowhere else), NEON only for 64-bit Arm, the portable
kernel everywhere. (`make dist-check` and `make arm-check` build the results.)"""
import json
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
