"""The CUDA kernels: values and gradients of every dtype against a float64 reference over
the CPU suite's shapes and strides, special values, gradcheck, opcheck, torch.compile,
determinism, autocast, streams and devices. Every test but the build check needs a GPU
and is skipped (with the reason) without one."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusedmlp
from conftest import requires_cuda
from helpers import (EMPTY_IDS, EMPTY_SHAPES, ODD_SHAPES, REDUCED_PRECISION, SmallMLP,
                     check_against_reference, check_compile_equals_eager,
                     check_empty_dimensions, check_nan_inf_parity, make,
                     opcheck_backward_ops, reference, strided_cases, tolerances,
                     well_conditioned)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Beyond the CPU suite's shapes: 16-byte loads, multi-chunk grad_b (> 256 rows), split k
# (few output tiles, long k: most of these, e.g. grad_w of 65536 rows), the big tiles
# (>= 132 tiles of 128 x 128: 2048 x 1160), and sizes just off the tile multiples.
CUDA_SHAPES = ODD_SHAPES + [(512, 1024, 384), (1000, 784, 256), (130, 136, 129), (2049, 40, 72),
                            (2048, 72, 1160), (65536, 128, 128)]


def gpu_test(test):
    """Marks a test that needs a GPU (skipped, with the reason, without one) and this
    build's CUDA kernels (the cuda_kernels fixture fails it if a GPU is visible but the
    build has none)."""
    return requires_cuda(pytest.mark.usefixtures("cuda_kernels")(test))


def shape_id(shape):
    return "x".join(map(str, shape))


@pytest.fixture
def cuda_kernels():
    if not fusedmlp.info()["cuda_built"]:
        pytest.fail("a GPU is visible but this fusedmlp build has no CUDA kernels "
                    "(torch without CUDA, no toolkit at build time, or FUSEDMLP_CUDA=0)")


def _toolkit_found():
    home = os.environ.get("CUDA_HOME")
    return bool(home and os.path.exists(os.path.join(home, "bin", "nvcc"))) or \
        os.path.exists("/usr/local/cuda/bin/nvcc") or shutil.which("nvcc") is not None


def test_cuda_kernels_were_compiled():
    """Runs without a GPU: a CUDA build of torch plus a toolkit must give CUDA kernels."""
    if torch.version.cuda is None:
        pytest.skip("torch is a CPU-only build: the CUDA kernels are not compiled")
    if not _toolkit_found():
        pytest.skip("no CUDA toolkit (nvcc) found: the CUDA kernels are not compiled")
    if os.environ.get("FUSEDMLP_CUDA") == "0":
        pytest.skip("FUSEDMLP_CUDA=0 turns the CUDA kernels off")
    assert fusedmlp.info()["cuda_built"]


def _cuobjdump():
    """cuobjdump from the PATH, the toolkit or the one Triton ships (None if none)."""
    candidates = [shutil.which("cuobjdump"),
                  os.path.join(os.environ.get("CUDA_HOME") or "/usr/local/cuda", "bin",
                               "cuobjdump")]
    triton = importlib.util.find_spec("triton")
    if triton and triton.submodule_search_locations:
        candidates.append(os.path.join(triton.submodule_search_locations[0], "backends",
                                       "nvidia", "bin", "cuobjdump"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gemm_mma_images(tool, library):
    """The mma kernels' images in the library: {'sm_80', ...} machine code, {'compute_90',
    ...} PTX (cuobjdump names PTX by the arch it targets: gemm_mma.sm_90.ptx)."""
    def listing(kind):
        return subprocess.run([tool, f"--list-{kind}", library], capture_output=True,
                              text=True, check=True).stdout
    elves = set(re.findall(r"gemm_mma\.(sm_\d+a?)\.cubin", listing("elf")))
    ptx = {"compute_" + arch for arch in re.findall(r"gemm_mma\.sm_(\d+a?)\.ptx", listing("ptx"))}
    return elves, ptx


def test_build_carries_the_gpu_code_it_reports():
    """fusedmlp.info()["cuda_targets"] (what setup.py asked nvcc for) is exactly the mma
    kernels' machine code and PTX in the library, with no PTX older than compute_80 (it
    would JIT into the mma kernels' __trap() bodies)."""
    if not fusedmlp.info()["cuda_built"]:
        pytest.skip("this build has no CUDA kernels")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (CUDA toolkit or Triton) to list the build's images")
    elves, ptx = _gemm_mma_images(tool, fusedmlp._C.__file__)
    targets = fusedmlp.info()["cuda_targets"]
    assert elves | ptx == set(targets), (targets, elves, ptx)
    assert elves, "no machine code for any GPU"
    assert all(int(re.sub(r"\D", "", arch)) >= 80 for arch in ptx), ptx


def test_default_arch_list_gives_ampere_hopper_code_and_ptx_for_newer_cards():
    """A build with no GPU visible and no TORCH_CUDA_ARCH_LIST (CI, build hosts) asks for
    sm_80 and sm_90 machine code plus compute_90 PTX, which the driver JIT-compiles for
    newer cards (without it they would have no image). Asked of setup.py in a child process
    that sees no GPU, so this holds on a GPU machine too."""
    if not fusedmlp.info()["cuda_built"]:
        pytest.skip("this build has no CUDA kernels (torch without CUDA, or no toolkit)")
    child = ("import os, setup; setup._default_cuda_archs(); "
             "print(os.environ['TORCH_CUDA_ARCH_LIST'], setup._cuda_targets())")
    env = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "8.0;9.0+PTX ['sm_80', 'sm_90', 'compute_90']", out.stdout


@gpu_test
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_matches_float64_reference(shape, dtype, bias):
    check_against_reference(fusedmlp.linear_relu, *make(*shape, dtype, bias, device="cuda"))


@gpu_test
@pytest.mark.parametrize("shape", ODD_SHAPES[:6] + [(300, 70, 9), (512, 1024, 384)],
                         ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_without_activation_matches_reference(shape, dtype, bias):
    x, w, b = make(*shape, dtype, bias, device="cuda")
    check_against_reference(fusedmlp.linear, x, w, b, relu=False)


@gpu_test
@pytest.mark.parametrize("leading", [(2, 3), (4, 1, 2), ()], ids=["3d", "4d", "1d"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nd_and_1d_input(leading, dtype):
    x = torch.randn(*leading, 19, dtype=dtype, device="cuda", requires_grad=True)
    _, w, b = make(1, 19, 7, dtype, device="cuda")
    assert fusedmlp.linear_relu(x, w, b).shape == (*leading, 7)
    check_against_reference(fusedmlp.linear_relu, x, w, b)


@gpu_test
@pytest.mark.parametrize("x_shape,w_shape", EMPTY_SHAPES, ids=EMPTY_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["linear_relu", "linear"])
def test_empty_dimensions(x_shape, w_shape, dtype, op):
    check_empty_dimensions(x_shape, w_shape, dtype, op, device="cuda")


@gpu_test
@pytest.mark.parametrize("case", list(strided_cases(torch.float32)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_inputs(case, dtype):
    x, w, b = (t.requires_grad_() for t in strided_cases(dtype, device="cuda")[case])
    assert not (x.is_contiguous() and w.is_contiguous() and b.is_contiguous())
    check_against_reference(fusedmlp.linear_relu, x, w, b)


@gpu_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_large_operands(dtype):
    """Transposed and misaligned operands at sizes where every tile is full: the loaders'
    along-the-outer-dimension and scalar paths under the big tiles."""
    rows, k, n = 300, 264, 200
    x = torch.randn(k, rows, dtype=dtype, device="cuda").t().requires_grad_()
    w = torch.randn(n, k + 1, dtype=dtype, device="cuda")[:, 1:].requires_grad_()
    b = torch.randn(n, dtype=dtype, device="cuda", requires_grad=True)
    check_against_reference(fusedmlp.linear_relu, x, w, b)


@gpu_test
def test_non_contiguous_grad_output():
    x, w, b = make(6, 9, 4, torch.float64, device="cuda")
    y = fusedmlp.linear_relu(x, w, b)
    y_ref = F.relu(F.linear(x, w, b))
    # sum() hands backward an expanded (stride 0) gradient; .t() a transposed one
    other = torch.randn(4, 6, dtype=y.dtype, device="cuda")
    for loss_fn in (lambda y: y.sum(), lambda y: (y.t() * other).sum()):
        grads = torch.autograd.grad(loss_fn(y), (x, w, b), retain_graph=True)
        grads_ref = torch.autograd.grad(loss_fn(y_ref), (x, w, b), retain_graph=True)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref)


@gpu_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_and_inf_match_eager(dtype):
    check_nan_inf_parity(dtype, device="cuda")


@gpu_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_relu_keeps_nan_drops_negative_zero_gradient(dtype):
    # pre-activations exactly [NaN, -1, 0, 2]: y = [NaN, 0, 0, 2]; grad passes where y > 0
    # and, as torch's threshold_backward does, where y is NaN.
    opts = dict(dtype=dtype, device="cuda")
    x = torch.ones(1, 1, **opts, requires_grad=True)
    w = torch.tensor([[1.0], [-1.0], [0.0], [2.0]], **opts, requires_grad=True)
    b = torch.tensor([float("nan"), 0.0, 0.0, 0.0], **opts, requires_grad=True)
    y = fusedmlp.linear_relu(x, w, b)
    assert y.isnan().tolist() == [[True, False, False, False]]
    assert y[0, 1:].tolist() == [0.0, 0.0, 2.0]
    (gb,) = torch.autograd.grad(y, (b,), torch.ones_like(y))
    assert gb.tolist() == [1.0, 0.0, 0.0, 1.0]


@gpu_test
@pytest.mark.parametrize("op", ["linear_relu", "linear"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gradcheck_fp64(op, bias):
    x, w, b = well_conditioned(4, 6, 5, device="cuda")
    args = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradcheck(getattr(fusedmlp, op), args, eps=1e-6, atol=1e-8, rtol=1e-6)
    x_nd = x.detach().reshape(2, 2, 6).transpose(0, 1).requires_grad_()
    assert torch.autograd.gradcheck(getattr(fusedmlp, op), (x_nd, w.t().contiguous().t(), b),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)


@gpu_test
@pytest.mark.parametrize("op", ["linear_relu", "linear"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gradgradcheck_fp64(op, bias):
    """Double backward on CUDA: first order from our kernels, second order composite."""
    x, w, b = well_conditioned(4, 6, 5, device="cuda")
    args = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradgradcheck(getattr(fusedmlp, op), args, eps=1e-6, atol=1e-8,
                                        rtol=1e-6)


@gpu_test
@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False),
                                   (False, False, True), (True, True, False)])
def test_only_requested_grads_are_computed(needs):
    x, w, b = make(5, 7, 3, torch.float32, requires_grad=False, device="cuda")
    y = fusedmlp.linear_relu(x, w, b)
    grads = torch.ops.fusedmlp.linear_relu_backward(torch.ones_like(y), x, w, y, list(needs))
    _, grads_ref = reference(x, w, b, torch.ones_like(y))
    for want, g, g_ref in zip(needs, grads, grads_ref):
        assert (g is not None) == want
        if want:
            torch.testing.assert_close(g, g_ref.float())


def opcheck_samples(dtype):
    def m(*s, rg=False):
        return torch.randn(*s, dtype=dtype, device="cuda", requires_grad=rg)
    return [
        (m(4, 6), m(3, 6), m(3)),
        (m(4, 6, rg=True), m(3, 6, rg=True), m(3, rg=True)),
        (m(2, 5, 6, rg=True), m(3, 6, rg=True), None),
        (m(1, 1, rg=True), m(1, 1, rg=True), None),
        (m(7, 9).t(), m(5, 7, rg=True), m(5)),
        (m(0, 6), m(3, 6, rg=True), m(3, rg=True)),
    ]


@gpu_test
@pytest.mark.parametrize("op", ["linear_relu", "linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck_forward(op, dtype):
    for args in opcheck_samples(dtype):
        torch.library.opcheck(getattr(torch.ops.fusedmlp, op).default, args)


@gpu_test
@pytest.mark.parametrize("mask", [[True, True, True], [False, True, True], [True, False, False]])
def test_opcheck_backward(mask):
    opcheck_backward_ops(mask, device="cuda")


@gpu_test
@pytest.mark.compile
@pytest.mark.parametrize("backend,dynamic", [("inductor", False), ("aot_eager", True)])
def test_compile_fullgraph_equals_eager(backend, dynamic):
    check_compile_equals_eager(backend, dynamic, device="cuda")


@gpu_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3000, 96, 70), (64, 784, 128), (65536, 128, 128)],
                         ids=shape_id)
def test_backward_bitwise_deterministic(dtype, shape):
    """No floating-point atomics: repeated runs give bitwise the same outputs and grads
    (3000 rows: grad_b sums 12 row chunks; split k in the forward of 64 rows and in grad_w)."""
    x, w, b = make(*shape, dtype, device="cuda")
    grad_y = torch.randn(shape[0], shape[2], dtype=dtype, device="cuda")
    runs = []
    for _ in range(5):
        y = fusedmlp.linear_relu(x, w, b)
        runs.append((y, *torch.autograd.grad(y, (x, w, b), grad_y)))
    for run in runs[1:]:
        for first, again in zip(runs[0], run):
            assert torch.equal(first, again)


@gpu_test
@pytest.mark.parametrize("autocast_dtype", REDUCED_PRECISION, ids=str)
@pytest.mark.parametrize("op", ["linear_relu", "linear"])
def test_autocast_runs_in_autocast_dtype_like_f_linear(autocast_dtype, op):
    x, w, b = make(33, 70, 20, torch.float32, device="cuda")
    with torch.autocast("cuda", dtype=autocast_dtype):
        y = getattr(fusedmlp, op)(x, w, b)
        y_ref = F.linear(x, w, b)
        if op == "linear_relu":
            y_ref = F.relu(y_ref)
    assert y.dtype == y_ref.dtype == autocast_dtype
    # Same casted inputs, both accumulating in float32: equal up to the final rounding.
    torch.testing.assert_close(y, y_ref, **tolerances(autocast_dtype, 70))
    grads = torch.autograd.grad(y.float().sum(), (x, w, b))
    grads_ref = torch.autograd.grad(y_ref.float().sum(), (x, w, b))
    for g, g_ref in zip(grads, grads_ref):
        assert g.dtype == torch.float32  # the grads of the float32 leaves
        torch.testing.assert_close(g, g_ref, **tolerances(autocast_dtype, 33))


@gpu_test
def test_autocast_leaves_float64_alone():
    x, w, b = make(5, 7, 3, torch.float64, device="cuda")
    with torch.autocast("cuda"):
        assert fusedmlp.linear_relu(x, w, b).dtype == torch.float64


@gpu_test
@pytest.mark.compile
def test_autocast_under_compile():
    torch._dynamo.reset()
    model = SmallMLP().cuda()
    x = torch.randn(8, 32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    assert compiled.dtype == eager.dtype == torch.bfloat16
    torch.testing.assert_close(compiled, eager)


@gpu_test
@pytest.mark.parametrize("op", ["linear_relu", "linear"])
def test_mixed_devices_get_clear_error(op):
    x = torch.randn(2, 3, device="cuda")
    with pytest.raises(RuntimeError,
                       match=r"expected weight on the same device as x \(cuda:0\), got cpu"):
        getattr(fusedmlp, op)(x, torch.randn(4, 3))
    with pytest.raises(RuntimeError,
                       match=r"expected bias on the same device as x \(cuda:0\), got cpu"):
        getattr(fusedmlp, op)(x, torch.randn(4, 3, device="cuda"), torch.randn(4))
    with pytest.raises(RuntimeError,
                       match=r"expected weight on the same device as x \(cpu\), got cuda:0"):
        getattr(fusedmlp, op)(torch.randn(2, 3), torch.randn(4, 3, device="cuda"))
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"same device as x \(cuda:0\)"):
        getattr(fusedmlp, op)(x, torch.randn(4, 3))


@gpu_test
def test_dtype_mismatch_and_unsupported_dtype_on_cuda():
    x = torch.randn(2, 3, device="cuda")
    with pytest.raises(RuntimeError, match=r"expected weight to have the dtype of x \(Float\)"):
        fusedmlp.linear_relu(x, torch.randn(4, 3, device="cuda", dtype=torch.float16))
    x8 = torch.ones(2, 3, device="cuda").to(torch.float8_e4m3fn)
    w8 = torch.ones(4, 3, device="cuda").to(torch.float8_e4m3fn)
    with pytest.raises(RuntimeError, match=r"CUDA kernels support float32, float64, float16 "
                                           r"and bfloat16, got x of dtype Float8_e4m3fn"):
        fusedmlp.linear_relu(x8, w8)


@gpu_test
def test_runs_on_the_current_stream():
    x, w, b = make(512, 256, 128, torch.float32, requires_grad=False, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # queue work so that a wrong-stream launch would race
            y = fusedmlp.linear_relu(x, w, b)
        grads = torch.ops.fusedmlp.linear_relu_backward(torch.ones_like(y), x, w, y,
                                                        [True, True, True])
    torch.cuda.current_stream().wait_stream(side)
    y_ref, grads_ref = reference(x, w, b, torch.ones_like(y), relu_output=y)
    torch.testing.assert_close(y, y_ref.float(), **tolerances(torch.float32, 256))
    for g, g_ref, red in zip(grads, grads_ref, (128, 512, 512)):
        torch.testing.assert_close(g, g_ref.float(), **tolerances(torch.float32, red))


@gpu_test
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device_uses_its_own_guard():
    x, w, b = make(70, 33, 20, torch.float32, device="cuda:1")
    y = fusedmlp.linear_relu(x, w, b)
    assert y.device == torch.device("cuda:1")
    check_against_reference(fusedmlp.linear_relu, x, w, b)


@gpu_test
def test_module_on_cuda_matches_linear_relu():
    torch.manual_seed(0)
    linear = nn.Linear(784, 128).cuda()
    fused = fusedmlp.FusedLinearReLU.from_linear(linear)
    x = torch.randn(64, 784, device="cuda")
    torch.testing.assert_close(fused(x), F.relu(linear(x)), **tolerances(torch.float32, 784))


# Every activation (csrc/activation.h, compiled by nvcc from the same header as the CPU's):
# the CPU suite's checks (test_activations.py) on the GPU, for all four dtypes.
from test_activations import (ACTIVATIONS, SLOPE, TORCH_ACTS, check_values_and_grads,  # noqa: E402
                              fused, scaled_inputs, smooth_inputs)


@gpu_test
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 5), (129, 257, 131), (2049, 40, 72),
                                   (65536, 128, 128)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_matches_float64_reference(activation, dtype, shape):
    x, w, b = (t.detach().cuda().requires_grad_() for t in scaled_inputs(*shape, dtype))
    check_values_and_grads(fused("function", activation), activation, x, w, b)


@gpu_test
@pytest.mark.parametrize("entry", ["op", "module"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_entry_points(activation, entry):
    x, w, b = (t.detach().cuda().requires_grad_()
               for t in scaled_inputs(37, 29, 19, torch.float32))
    check_values_and_grads(fused(entry, activation), activation, x, w, b)


@gpu_test
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_gradcheck_and_gradgradcheck_fp64(activation):
    x, w, b = (t.detach().cuda().requires_grad_() for t in smooth_inputs(activation))
    fn = fused("function", activation)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@gpu_test
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_nan_inf_match_eager(activation, dtype):
    check_nan_inf_parity(dtype, device="cuda", fn=fused("function", activation),
                         act=TORCH_ACTS[activation])


@gpu_test
@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh"])
def test_activation_autocast_and_opcheck(activation):
    x, w, b = make(16, 32, 8, torch.float32, requires_grad=True, device="cuda")
    with torch.autocast("cuda"):
        y = fusedmlp.linear(x, w, b, activation=activation)
    assert y.dtype == torch.float16
    y.float().sum().backward()
    assert w.grad.dtype == torch.float32
    torch.library.opcheck(torch.ops.fusedmlp.linear_act.default,
                          (x.detach(), w.detach(), b.detach(), activation, 0.1))
