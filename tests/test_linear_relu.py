"""fusedmlp.linear_relu and LinearReLUFunction: values and all three gradients against a
float64 reference, over the shapes, strides and special values users hit."""
import pytest
import torch
import torch.nn.functional as F

import fusedmlp
from helpers import (EMPTY_IDS, EMPTY_SHAPES, ODD_SHAPES, check_against_reference,
                     check_empty_dimensions, check_nan_inf_parity, make, strided_cases,
                     well_conditioned)

DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_matches_float64_reference(isa, shape, dtype, bias):
    check_against_reference(fusedmlp.linear_relu, *make(*shape, dtype, bias))


@pytest.mark.parametrize("shape", ODD_SHAPES[:6] + [(300, 70, 9), (0, 4, 3), (4, 0, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_without_activation_matches_reference(isa, shape, dtype, bias):
    """fusedmlp.linear: the same kernels with no ReLU (the last layer of an MLP)."""
    x, w, b = make(*shape, dtype, bias)
    check_against_reference(fusedmlp.linear, x, w, b, relu=False)


def test_linear_keeps_negative_outputs():
    x = torch.ones(2, 3)
    assert torch.equal(fusedmlp.linear(x, -torch.ones(4, 3)), torch.full((2, 4), -3.0))


def test_linear_gradcheck_and_strided():
    x, w, b = make(5, 7, 3, torch.float64)
    assert torch.autograd.gradcheck(fusedmlp.linear, (x, w, b))
    xt = torch.randn(7, 5, dtype=torch.float64).t().requires_grad_()
    assert torch.autograd.gradcheck(fusedmlp.linear, (xt, w.t().contiguous().t(), None))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_autograd_function_matches_reference(bias):
    x, w, b = make(9, 23, 11, torch.float32, bias)
    fn = lambda x, w, b: fusedmlp.LinearReLUFunction.apply(x, w, b)  # noqa: E731
    check_against_reference(fn, x, w, b)
    # apply() without the bias argument at all, as with F.linear(x, w)
    if not bias:
        y = fusedmlp.LinearReLUFunction.apply(x, w)
        torch.testing.assert_close(y, fusedmlp.linear_relu(x, w))


@pytest.mark.parametrize("leading", [(2, 3), (4, 1, 2), ()], ids=["3d", "4d", "1d"])
def test_nd_and_1d_input(isa, leading):
    x = torch.randn(*leading, 19, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 19, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert fusedmlp.linear_relu(x, w, b).shape == (*leading, 7)
    check_against_reference(fusedmlp.linear_relu, x, w, b)


@pytest.mark.parametrize("x_shape,w_shape", EMPTY_SHAPES, ids=EMPTY_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", ["linear_relu", "linear"])
def test_empty_dimensions(isa, x_shape, w_shape, dtype, op):
    check_empty_dimensions(x_shape, w_shape, dtype, op)


@pytest.mark.parametrize("case", list(strided_cases(torch.float32)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_inputs(isa, case, dtype):
    x, w, b = (t.requires_grad_() for t in strided_cases(dtype)[case])
    assert not (x.is_contiguous() and w.is_contiguous() and b.is_contiguous())
    check_against_reference(fusedmlp.linear_relu, x, w, b)


def test_non_contiguous_grad_output():
    x, w, b = make(6, 9, 4, torch.float64)
    y = fusedmlp.linear_relu(x, w, b)
    y_ref = F.relu(F.linear(x, w, b))
    # sum() hands backward an expanded (stride 0) gradient; .t() a transposed one
    for loss_fn in (lambda y: y.sum(), lambda y: (y.t() * torch.randn(4, 6, dtype=y.dtype)).sum()):
        torch.manual_seed(1)
        grads = torch.autograd.grad(loss_fn(y), (x, w, b), retain_graph=True)
        torch.manual_seed(1)
        grads_ref = torch.autograd.grad(loss_fn(y_ref), (x, w, b), retain_graph=True)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_and_inf_match_eager(isa, dtype):
    check_nan_inf_parity(dtype)


def test_relu_keeps_nan_drops_negative_zero_gradient(isa):
    # pre-activations exactly [NaN, -1, 0, 2]: y = [NaN, 0, 0, 2]; grad passes where y > 0
    # and, as torch's threshold_backward does, where y is NaN.
    x = torch.ones(1, 1, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[1.0], [-1.0], [0.0], [2.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([float("nan"), 0.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    y = fusedmlp.linear_relu(x, w, b)
    assert torch.equal(y.isnan(), torch.tensor([[True, False, False, False]]))
    assert y[0, 1:].tolist() == [0.0, 0.0, 2.0]
    (gb,) = torch.autograd.grad(y, (b,), torch.ones_like(y))
    (gb_ref,) = torch.autograd.grad(F.relu(F.linear(x, w, b)), (b,), torch.ones_like(y))
    assert gb.tolist() == gb_ref.tolist() == [1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("entry", ["linear_relu", "LinearReLUFunction.apply"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gradcheck_fp64(isa, entry, bias):
    x, w, b = well_conditioned(4, 6, 5)
    fn = fusedmlp.linear_relu if entry == "linear_relu" else fusedmlp.LinearReLUFunction.apply
    args = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradcheck_strided_and_nd():
    x, w, b = well_conditioned(6, 5, 3)
    x_nd = x.detach().reshape(2, 3, 5).transpose(0, 1).requires_grad_()
    assert torch.autograd.gradcheck(fusedmlp.linear_relu, (x_nd, w.t().contiguous().t(), b))


@pytest.mark.parametrize("needs", [(False, True, True), (True, False, False),
                                   (False, False, True), (True, True, False)])
def test_only_requested_grads_are_computed(needs):
    x, w, b = make(5, 7, 3, torch.float64, requires_grad=False)
    y = fusedmlp.linear_relu(x, w, b)
    grads = torch.ops.fusedmlp.linear_relu_backward(torch.ones_like(y), x, w, y, list(needs))
    for want, g, t in zip(needs, grads, (x, w, b)):
        assert (g is not None) == want
        if want:
            assert g.shape == t.shape
    # and through autograd: the first layer of an MLP, whose input needs no grad
    x_in, w_p, b_p = x, w.requires_grad_(), b.requires_grad_()
    fusedmlp.linear_relu(x_in, w_p, b_p).sum().backward()
    assert x_in.grad is None and w_p.grad is not None and b_p.grad is not None


@pytest.mark.parametrize("fn", ["linear_relu", "LinearReLUFunction", "linear"])
def test_saves_only_x_weight_and_output(fn):
    x, w, b = make(4, 6, 3, torch.float32)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if fn == "linear":  # no activation: no output to keep
            y = fusedmlp.linear(x, w, b)
        elif fn == "linear_relu":
            y = fusedmlp.linear_relu(x, w, b)
        else:
            y = fusedmlp.LinearReLUFunction.apply(x, w, b)
    if fn == "linear":
        assert [t.data_ptr() for t in saved] == [x.data_ptr(), w.data_ptr()]
        return
    assert len(saved) == 3
    assert saved[0] is x or saved[0].data_ptr() == x.data_ptr()
    assert saved[1].data_ptr() == w.data_ptr()
    assert saved[2].data_ptr() == y.data_ptr()


# 1024 x 784 -> 128: five 208-row blocks on one thread, six on two (gemm.cpp rounds the
# task count up to a multiple of the threads).
@pytest.mark.parametrize("shape", [(300, 520, 200), (1024, 784, 128)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bitwise_identical_for_any_thread_count(dtype, shape):
    x, w, b = make(*shape, dtype)
    grad_y = torch.randn(shape[0], shape[2], dtype=dtype)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            y = fusedmlp.linear_relu(x, w, b)
            results.append((y, *torch.autograd.grad(y, (x, w, b), grad_y)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)


@pytest.mark.parametrize("entry", ["linear_relu", "LinearReLUFunction.apply", "linear"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gradgradcheck_fp64(entry, bias):
    """Double backward: the backward ops are differentiable too."""
    x, w, b = well_conditioned(4, 6, 5)
    x = x.detach().reshape(2, 2, 6).requires_grad_()  # N-D input through the 2nd order too
    fn = {"linear_relu": fusedmlp.linear_relu, "linear": fusedmlp.linear,
          "LinearReLUFunction.apply": fusedmlp.LinearReLUFunction.apply}[entry]
    args = (x, w, b) if bias else (x, w)
    assert torch.autograd.gradgradcheck(fn, args, eps=1e-6, atol=1e-8, rtol=1e-6)


def test_gradient_penalty_matches_eager():
    x, w, b = make(7, 9, 5, torch.float64)

    def penalty_grads(layer):
        (gx,) = torch.autograd.grad(layer(x, w, b).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (w, b), allow_unused=True)

    ours = penalty_grads(fusedmlp.linear_relu)
    eager = penalty_grads(lambda x, w, b: F.relu(F.linear(x, w, b)))
    torch.testing.assert_close(ours[0], eager[0])
    assert ours[1] is None or torch.count_nonzero(ours[1]) == 0  # b enters only via the mask


@pytest.mark.parametrize("x_shape,w_shape", [((3, 0), (4, 0)), ((0, 5), (4, 5)),
                                             ((2, 3, 5), (4, 5))], ids=["in0", "rows0", "3d"])
def test_double_backward_matches_eager_on_edge_shapes(x_shape, w_shape):
    def draw(*shape, seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(*shape, dtype=torch.float64, generator=gen).requires_grad_()

    def second_order(layer):
        x, w, b = draw(*x_shape, seed=1), draw(*w_shape, seed=2), draw(w_shape[0], seed=3)
        y = layer(x, w, b)
        grads = torch.autograd.grad((y * y).sum(), (x, w, b), create_graph=True)
        penalty = sum((g * g).sum() for g in grads)
        return torch.autograd.grad(penalty, (x, w, b), allow_unused=True)

    ours = second_order(fusedmlp.linear_relu)
    eager = second_order(lambda x, w, b: F.relu(F.linear(x, w, b)))
    for a, e in zip(ours, eager):
        if e is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            torch.testing.assert_close(a, e)


def test_fma_peak_probe_is_a_plausible_rate():
    """The benchmark's ceilings divide by it: a measured, finite rate, on one core below
    what any x86 core can issue (2 FMA pipes x 16 float32 lanes x 2 flops x 6 GHz).
    (No comparison across thread counts: on a shared host a worker may be descheduled.)"""
    from fusedmlp import _C
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _C.fma_peak_gflops()
    finally:
        torch.set_num_threads(before)
    assert 0.1 < one < 2 * 16 * 2 * 6
    assert _C.fma_peak_gflops() > 0
