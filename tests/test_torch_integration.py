"""The ops as torch sees them: opcheck, torch.compile, torch.export, the info helpers."""
import os
import platform
import re
import subprocess
import sys

import pytest
import torch

import fusedmlp
from conftest import requires_cuda
from helpers import SmallMLP, check_compile_equals_eager, opcheck_backward_ops


def opcheck_samples():
    def m(*s, rg=False, dtype=torch.float32):
        return torch.randn(*s, dtype=dtype, requires_grad=rg)
    return [
        (m(4, 6), m(3, 6), m(3)),
        (m(4, 6, rg=True), m(3, 6, rg=True), m(3, rg=True)),
        (m(2, 5, 6, rg=True), m(3, 6, rg=True), None),
        (m(1, 1, dtype=torch.float64, rg=True), m(1, 1, dtype=torch.float64, rg=True), None),
        (m(7, 9).t(), m(5, 7, rg=True), m(5)),
        (m(0, 6), m(3, 6, rg=True), m(3, rg=True)),
    ]


@pytest.mark.parametrize("op", ["linear_relu", "linear"])
@pytest.mark.parametrize("i", range(len(opcheck_samples())))
def test_opcheck_forward(op, i):
    args = opcheck_samples()[i]
    torch.library.opcheck(getattr(torch.ops.fusedmlp, op).default, args)


@pytest.mark.parametrize("mask", [[True, True, True], [False, True, True], [True, False, False]])
def test_opcheck_backward(mask):
    opcheck_backward_ops(mask)


@pytest.mark.parametrize("backend,dynamic", [("inductor", False), ("aot_eager", True)])
def test_compile_fullgraph_equals_eager(backend, dynamic):
    check_compile_equals_eager(backend, dynamic)


def test_compile_function_with_autograd_function():
    torch._dynamo.reset()
    x = torch.randn(6, 10, requires_grad=True)
    w = torch.randn(4, 10, requires_grad=True)
    b = torch.randn(4, requires_grad=True)

    def fn(x, w, b):
        return fusedmlp.LinearReLUFunction.apply(x, w, b).sum()

    eager = torch.autograd.grad(fn(x, w, b), (x, w, b))
    compiled = torch.autograd.grad(torch.compile(fn, fullgraph=True, backend="aot_eager")(x, w, b), (x, w, b))
    for g, g_c in zip(eager, compiled):
        torch.testing.assert_close(g_c, g)


def test_export_round_trip():
    model = SmallMLP().eval()
    x = torch.randn(8, 32)
    exported = torch.export.export(model, (x,))
    assert any("fusedmlp.linear_relu" in str(node.target) for node in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x), model(x))


def test_info_reports_build_and_isa():
    info = fusedmlp.info()
    assert info["cpu_isa"] in ("generic", "avx2", "avx512", "neon")
    assert info["num_threads"] == torch.get_num_threads()
    assert isinstance(info["cuda_built"], bool)
    # A CUDA build names the GPU code it carries (test_cuda checks it against the library).
    assert bool(info["cuda_targets"]) == info["cuda_built"], info["cuda_targets"]
    assert all(re.fullmatch(r"(sm|compute)_\d+a?", t) for t in info["cuda_targets"])
    out = subprocess.run([sys.executable, "-m", "fusedmlp.info"], capture_output=True,
                         text=True, check=True).stdout
    assert "cpu_isa" in out and info["cpu_isa"] in out


def test_set_cpu_isa_rejects_unknown_and_unsupported():
    before = fusedmlp.info()["cpu_isa"]
    with pytest.raises(ValueError, match="unknown CPU ISA 'sse9'"):
        fusedmlp.set_cpu_isa("sse9")
    if fusedmlp.info()["best_cpu_isa"] != "avx512":
        with pytest.raises(ValueError, match="cannot run the avx512 kernels"):
            fusedmlp.set_cpu_isa("avx512")
    # The ISAs are not a ladder: the NEON kernel exists only in 64-bit Arm builds, the
    # AVX ones only in x86 builds.
    other_arch = "avx2" if platform.machine().lower() in ("aarch64", "arm64") else "neon"
    with pytest.raises(ValueError, match=f"cannot run the {other_arch} kernels"):
        fusedmlp.set_cpu_isa(other_arch)
    assert fusedmlp.info()["cpu_isa"] == before  # a refused choice changes nothing


def run_with_isa_env(value, code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "FUSEDMLP_CPU_ISA": value})


def test_isa_from_environment():
    out = run_with_isa_env("generic", "import fusedmlp; print(fusedmlp.info()['cpu_isa'])")
    assert out.returncode == 0 and out.stdout.strip() == "generic"


def test_bad_isa_environment_gets_clear_errors_not_a_crash():
    code = """
import torch, fusedmlp
for call in (fusedmlp.info, lambda: fusedmlp.linear_relu(torch.ones(1, 1), torch.ones(1, 1))):
    try:
        call()
    except (ValueError, RuntimeError) as e:
        print(type(e).__name__, e)
"""
    out = run_with_isa_env("sse9", code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:  # torch maps the C++ std::invalid_argument to ValueError too
        assert line.startswith("ValueError FUSEDMLP_CPU_ISA=sse9: unknown CPU ISA 'sse9'")


@requires_cuda
def test_cuda_tensor_without_cuda_kernels_gets_clear_error():
    if fusedmlp.info()["cuda_built"]:
        pytest.skip("this build has CUDA kernels; their tests live in test_cuda.py")
    x, w = torch.randn(2, 3, device="cuda"), torch.randn(4, 3, device="cuda")
    with pytest.raises(NotImplementedError, match="CUDA"):
        fusedmlp.linear_relu(x, w)
