"""The CUDA kernels' index math, checked on the CPU on every run (no GPU, no CUDA toolkit).

tests/cuda_host/index_math_check.cpp includes csrc/cuda/index_math.h, the header whose
functions the kernels call for their tiling plan, tile schedule, split-k slices, chunk
loads, shared layouts, ldmatrix row addresses and accumulator positions, and checks them
against emulated ldmatrix / mma.sync.m16n8k16 (from the PTX ISA's tables) and A·Bᵀ.
It is compiled here with the host C++ compiler and run.

The planted-mistake tests compile the same checks against a copy of the header with one
deliberate bug each (two lanes swapped, .trans dropped, a k index shifted, ...) and
require the checks to fail: they show the checks can catch what they are for.
"""
import os
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = os.path.join(ROOT, "csrc", "cuda", "index_math.h")
CHECKS = os.path.join(ROOT, "tests", "cuda_host", "index_math_check.cpp")
CXX = os.environ.get("CXX") or next(
    (c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)

pytestmark = pytest.mark.skipif(
    CXX is None, reason="needs a host C++ compiler (g++, c++ or clang++; or $CXX); none found")


def build_checks(tmp_path, header_text=None):
    """Compiles the checks against the real header, or against `header_text` in its place."""
    include = os.path.join(ROOT, "csrc")
    if header_text is not None:
        include = str(tmp_path / "include")
        os.makedirs(os.path.join(include, "cuda"))
        with open(os.path.join(include, "cuda", "index_math.h"), "w") as f:
            f.write(header_text)
    exe = str(tmp_path / "index_math_check")
    cmd = [*shlex.split(CXX), "-std=c++17", "-O1", "-Wall", "-Wextra", f"-I{include}", CHECKS, "-o", exe]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, (
        f"compiling the CUDA index math checks failed:\n{' '.join(cmd)}\n{built.stderr}")
    return exe


def run_checks(exe):
    return subprocess.run([exe], capture_output=True, text=True, timeout=600)


def test_index_math_of_the_cuda_kernels(tmp_path):
    result = run_checks(build_checks(tmp_path))
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"the CUDA kernels' index math is wrong:\n{report}"
    assert "all index math checks passed" in result.stdout
    # Every check ran (a check dropped from main() would otherwise pass unnoticed).
    for check in ("ldmatrix emulator", "tile schedule", "split-k slices", "mma GEMM f16",
                  "mma GEMM bf16", "simt GEMM f32", "simt GEMM f64"):
        assert any(line.startswith("ok") and check in line
                   for line in result.stdout.splitlines()), (
            f"check {check!r} did not report ok:\n{report}")


# (what the mistake is, text in index_math.h, the text that plants it, a check that must fail)
PLANTED = [
    ("two lanes swap their ldmatrix rows",
     "    const int q = lane / 8, row = lane % 8;\n",
     "    lane = lane == 5 ? 6 : lane == 6 ? 5 : lane;\n"
     "    const int q = lane / 8, row = lane % 8;\n",
     "mma GEMM f16"),
    (".trans dropped from ldmatrix",
     "bool ldmatrix_trans(bool along_outer) { return along_outer; }",
     "bool ldmatrix_trans(bool along_outer) { return along_outer && false; }",
     "mma GEMM bf16"),
    ("B fragment's k halves shifted",
     "static FUSEDMLP_HOST_DEVICE int k(int q) { return q % 2 * 8; }",
     "static FUSEDMLP_HOST_DEVICE int k(int q) { return (q + 1) % 2 * 8; }",
     "mma GEMM f16"),
    ("loader chunks start one k late",
     "    kk = chunk % (K / VEC) * VEC;\n",
     "    kk = chunk % (K / VEC) * VEC + 1;\n",
     "simt GEMM f32"),
    ("accumulator columns swapped",
     "return lane % 4 * 2 + e % 2; }",
     "return lane % 4 * 2 + (e + 1) % 2; }",
     "mma GEMM bf16"),
    ("schedule ignores a short last group of tile rows",
     "tile_m = first_m + block % group_size % rows;",
     "tile_m = first_m + block % group_size % kGroup;",
     "tile schedule"),
    ("split-k slices overlap by one k",
     "  k_begin = slice * k_per_split;\n",
     "  k_begin = slice * k_per_split - (slice > 0);\n",
     "split-k slices"),
    ("register tile vectors not spread apart",
     "return i / V * THREADS * V + thread * V + i % V;",
     "return i / V * V + thread * V + i % V;",
     "simt GEMM f64"),
]


@pytest.mark.parametrize("mistake, text, planted, failing_check", PLANTED,
                         ids=[p[0] for p in PLANTED])
def test_checks_catch_a_planted_mistake(tmp_path, mistake, text, planted, failing_check):
    with open(HEADER) as f:
        header = f.read()
    assert header.count(text) == 1, (
        f"index_math.h changed: the text to plant {mistake!r} into is gone; update PLANTED")
    result = run_checks(build_checks(tmp_path, header.replace(text, planted)))
    report = result.stdout + result.stderr
    assert result.returncode != 0, f"the checks missed a planted mistake ({mistake}):\n{report}"
    assert any(line.startswith("FAIL") and failing_check in line
               for line in result.stdout.splitlines()), (
        f"planted {mistake!r}: expected the {failing_check!r} check to fail:\n{report}")
    assert "FAILED at index_math_check.cpp" in result.stderr  # names what went wrong
