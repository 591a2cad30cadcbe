"""Every activation of fusedmlp.linear / FusedLinear / the linear_act op (CPU): values and
all three gradients against act(F.linear(...)) in float64, the activation's own accuracy
(ulp) against torch, gradcheck and gradgradcheck, NaN/Inf, odd and empty shapes, bad
names. The CUDA versions are in test_cuda.py."""
import pytest
import torch
import torch.nn.functional as F

import fusedmlp
from fusedmlp.ops import ACTIVATIONS
from helpers import (KINKED, SLOPE, TORCH_ACTS, activation_tolerance_scale,
                     assert_same_function, assert_same_special_values, check_nan_inf_parity,
                     make, reference_activation, tolerances)

DTYPES = [torch.float32, torch.float64]
SHAPES = [(1, 1, 1), (3, 17, 5), (7, 1, 13), (129, 257, 131), (600, 37, 10), (5, 1100, 6)]


def fused(entry, activation):
    """fn(x, w, b) calling the fused layer through one of its entry points."""
    if entry == "function":
        return lambda x, w, b: fusedmlp.linear(x, w, b, activation=activation,
                                               negative_slope=SLOPE)
    if entry == "op":
        return lambda x, w, b: torch.ops.fusedmlp.linear_act(x, w, b, activation, SLOPE)

    def module(x, w, b):
        layer = fusedmlp.FusedLinear(w.shape[1], w.shape[0], bias=b is not None,
                                     activation=activation, negative_slope=SLOPE,
                                     device="meta", dtype=w.dtype)
        params = {"weight": w} if b is None else {"weight": w, "bias": b}
        return torch.func.functional_call(layer, params, (x,))
    return module


def reference(activation, x, w, b, y, grad_y):
    """act(F.linear) and its grads in float64. For the kinked activations the derivative
    is taken where our y says the pre-activation lies (a z within rounding of 0 may have
    either sign in y; the forward check covers y)."""
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    bd = b.detach().double().requires_grad_() if b is not None else None
    z = F.linear(xd, wd, bd)
    y_ref = TORCH_ACTS[activation](z)
    y_for_grad = reference_activation(activation, z, SLOPE, y.detach().double() > 0)
    inputs = [t for t in (xd, wd, bd) if t is not None]
    return y_ref, torch.autograd.grad(y_for_grad, inputs, grad_y.double())


def check_values_and_grads(fn, activation, x, w, b):
    y = fn(x, w, b)
    grad_y = torch.randn_like(y)
    y_ref, grads_ref = reference(activation, x, w, b, y, grad_y)
    k = w.shape[1]
    scale = activation_tolerance_scale(activation)  # relu_squared: |z| < ~5 here
    tol = {name: scale * value for name, value in tolerances(y.dtype, k).items()}
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, y_ref.to(y.dtype), **tol)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, inputs, grad_y)
    rows = y.numel() // max(w.shape[0], 1)
    for g, g_ref, red, t in zip(grads, grads_ref, [w.shape[0], rows, rows], inputs):
        assert g.shape == t.shape and g.dtype == t.dtype
        tol = {name: scale * value for name, value in tolerances(g.dtype, red).items()}
        torch.testing.assert_close(g, g_ref.to(g.dtype), **tol)


def scaled_inputs(rows, k, n, dtype, bias=True):
    """Inputs whose pre-activations are O(1) (the activations' curved region)."""
    x, w, b = make(rows, k, n, dtype, bias, requires_grad=False)
    x = (x / max(k, 1) ** 0.5).requires_grad_()
    return x, w.requires_grad_(), (b.requires_grad_() if b is not None else None)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_function_matches_float64_reference(isa, activation, dtype, shape):
    check_values_and_grads(fused("function", activation), activation,
                           *scaled_inputs(*shape, dtype))


@pytest.mark.parametrize("entry", ["op", "module"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_entry_points_match_float64_reference(activation, dtype, bias, entry):
    check_values_and_grads(fused(entry, activation), activation,
                           *scaled_inputs(37, 29, 19, dtype, bias))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nd_strided_input(activation):
    x = torch.randn(20, 2, 5, dtype=torch.float64).permute(1, 2, 0).requires_grad_()
    w = torch.randn(20, 3, dtype=torch.float64).t().requires_grad_()  # transposed weight
    b = torch.randn(9, dtype=torch.float64)[::3].requires_grad_()
    check_values_and_grads(fused("function", activation), activation, x, w, b)


def exact_pre_activations(values, dtype, out_features=24):
    """x, W, b with z = x @ W.T + b exactly values (one row per value, every column): the
    activation itself is then what is measured."""
    x = values.to(dtype).reshape(-1, 1)
    w = torch.ones(out_features, 1, dtype=dtype)
    return x, w, torch.zeros(out_features, dtype=dtype)


# float64 references free of the cancellation in 1 + erf(z / sqrt 2) and 1 + tanh(u) at
# negative z (where torch's float64 formula itself rounds to 0).
ACCURATE_ACTS = dict(
    TORCH_ACTS,
    gelu=lambda z: 0.5 * z * torch.special.erfc(-z / 2 ** 0.5),
    gelu_tanh=lambda z: z * torch.sigmoid(2 * 0.7978845608028654 * (z + 0.044715 * z ** 3)))


def ulp(t):
    """The float32 spacing at |t| (t float64)."""
    t32 = t.abs().float()
    return (torch.nextafter(t32, torch.tensor(float("inf"))) - t32).double()


@pytest.mark.parametrize("rows", [400, 700], ids=["dot_path", "packed_path"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_activation_within_few_ulp(isa, activation, rows):
    """z exactly representable, so y = act(z) measures our exp/erf/tanh: within 4 ulp of
    the float64 value, or no further than torch's own float32 result is (where torch's
    formula itself cancels, e.g. gelu's 1 + erf at z < -3). Same for grad_x = g act'(z)."""
    z = torch.linspace(-12, 12, rows, dtype=torch.float64)
    z = torch.cat([z, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e-5, -1e-5, 0.4999, 0.5001])])
    z = z.float().double()  # the float32 inputs, exactly
    x, w, b = exact_pre_activations(z, torch.float32)
    x.requires_grad_()
    y = fusedmlp.linear(x, w, b, activation=activation, negative_slope=SLOPE)
    zd = z.reshape(-1, 1).expand(-1, w.shape[0]).clone().requires_grad_()
    y64 = ACCURATE_ACTS[activation](zd)
    y_torch = TORCH_ACTS[activation](zd.detach().float()).double()
    err, err_torch = (y.double() - y64).abs(), (y_torch - y64).abs()
    assert (err <= torch.maximum(4 * ulp(y64.detach()), 2 * err_torch)).all(), err.max()
    # grad_x = sum over the out_features columns of g * act'(z) (each column the same)
    g = torch.ones_like(y)
    (grad_x,) = torch.autograd.grad(y, x, g)
    (d64,) = torch.autograd.grad(y64.sum(), zd)
    zt = zd.detach().float().requires_grad_()
    (d_torch,) = torch.autograd.grad(TORCH_ACTS[activation](zt).sum(), zt)
    d64, d_torch = d64[:, 0].double(), d_torch[:, 0].double()
    d_ours = grad_x[:, 0].double() / w.shape[0]
    err, err_torch = (d_ours - d64).abs(), (d_torch - d64).abs()
    bound = torch.maximum(8 * ulp(d64), 2 * err_torch) + 1e-7 * (activation in KINKED)
    assert (err <= bound).all(), err.max()


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_inf_behave_as_torch(isa, activation):
    """Special pre-activations give torch's act (and its gradient) at them, in the same
    dtype; NaN/Inf inside the GEMM propagate as in eager."""
    special = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e30, -1e30,
                            100.0, -100.0], dtype=torch.float64)
    for dtype in DTYPES:
        x, w, b = exact_pre_activations(special, dtype, out_features=5)
        x.requires_grad_()
        y = fusedmlp.linear(x, w, b, activation=activation, negative_slope=SLOPE)
        zd = special.to(dtype).reshape(-1, 1).expand(-1, 5).clone().requires_grad_()
        # one value at a time: torch's scalar path (its float32 SIMD gelu returns NaN at +inf)
        y_ref = torch.stack([TORCH_ACTS[activation](v) for v in zd.reshape(-1)]).reshape(zd.shape)
        assert_same_special_values(y, y_ref.detach())
        (grad_x,) = torch.autograd.grad(y, x, torch.ones_like(y))
        (d_ref,) = torch.autograd.grad(y_ref.sum(), zd)
        d_ref = d_ref.sum(1, keepdim=True)
        # torch's float32 gelu_tanh backward overflows (z^3) to NaN at |z| = 1e30; ours,
        # evaluated in float64, gives the finite limit there: compared elsewhere only.
        keep = ~(x.detach().isfinite() & d_ref.isnan())
        assert_same_special_values(grad_x[keep], d_ref[keep])
    # NaN / Inf in x, weight, bias and grad_y: what eager act(F.linear(...)) gives
    check_nan_inf_parity(torch.float64, fn=fused("function", activation),
                         act=TORCH_ACTS[activation])


def smooth_inputs(activation, rows=4, k=5, n=3):
    """fp64 inputs with pre-activations away from the kinks (finite differences)."""
    gen = torch.Generator().manual_seed(7)
    while True:
        x, w = torch.randn(rows, k, generator=gen, dtype=torch.float64), \
            torch.randn(n, k, generator=gen, dtype=torch.float64)
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        if (F.linear(x, w, b).abs() > 0.05).all():
            return tuple(t.requires_grad_() for t in (x, w, b))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_and_gradgradcheck(activation):
    x, w, b = smooth_inputs(activation)
    fn = fused("function", activation)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(lambda x, w: fn(x, w, None), (x, w))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_second_derivative_matches_eager(activation):
    """A physics-informed style loss: d/dx of (dy/dx)^2, through create_graph=True."""
    x, w, b = smooth_inputs(activation, rows=6, k=4, n=5)
    results = []
    for f in (fused("function", activation),
              lambda x, w, b: TORCH_ACTS[activation](F.linear(x, w, b))):
        y = f(x, w, b)
        (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        results.append(torch.autograd.grad(dx.square().sum(), (x, w, b), allow_unused=True,
                                           materialize_grads=True))
    for ours, eager in zip(*results):
        torch.testing.assert_close(ours, eager)


@pytest.mark.parametrize("x_shape,w_shape", [((0, 5), (3, 5)), ((2, 0, 5), (3, 5)),
                                             ((4, 0), (3, 0)), ((4, 5), (0, 5))],
                         ids=["rows0", "lead0", "in0", "out0"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_empty_dimensions(activation, x_shape, w_shape):
    x = torch.randn(*x_shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*w_shape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=torch.float64, requires_grad=True)
    y = fusedmlp.linear(x, w, b, activation=activation, negative_slope=SLOPE)
    y_ref = TORCH_ACTS[activation](F.linear(x, w, b))
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref)
    grad_y = torch.randn_like(y)
    for g, g_ref in zip(torch.autograd.grad(y, (x, w, b), grad_y),
                        torch.autograd.grad(y_ref, (x, w, b), grad_y)):
        assert g.shape == g_ref.shape
        torch.testing.assert_close(g, g_ref)


def test_leaky_relu_default_and_negative_slopes():
    x, w, b = scaled_inputs(9, 7, 5, torch.float64)
    torch.testing.assert_close(fusedmlp.linear(x, w, b, "leaky_relu"),
                               F.leaky_relu(F.linear(x, w, b)))
    for slope in (-0.5, 0.0, 3.0):  # a negative slope saves z, not y, for backward
        y = fusedmlp.linear(x, w, b, "leaky_relu", slope)
        y_ref = F.leaky_relu(F.linear(x, w, b), slope)
        torch.testing.assert_close(y, y_ref)
        for g, g_ref in zip(torch.autograd.grad(y.sum(), (x, w, b)),
                            torch.autograd.grad(y_ref.sum(), (x, w, b))):
            torch.testing.assert_close(g, g_ref)


def test_relu_entry_points_are_one_kernel():
    """linear(activation="relu") is linear_relu, and "identity"/None is linear."""
    x, w, b = make(11, 13, 7, torch.float32, requires_grad=False)
    assert torch.equal(fusedmlp.linear(x, w, b, activation="relu"), fusedmlp.linear_relu(x, w, b))
    assert torch.equal(torch.ops.fusedmlp.linear_act(x, w, b, "relu", 0.01),
                       fusedmlp.linear_relu(x, w, b))
    assert torch.equal(fusedmlp.linear(x, w, b, "identity"), fusedmlp.linear(x, w, b))


@pytest.mark.parametrize("name", ["Relu", "gelu_erf", "", "swish", 3])
def test_unknown_activation_lists_the_valid_ones(name):
    x, w, b = make(2, 3, 4, torch.float32)
    with pytest.raises(ValueError, match="unknown activation.*gelu_tanh, silu, sigmoid"):
        fusedmlp.linear(x, w, b, activation=name)
    with pytest.raises(ValueError, match="FusedLinear: unknown activation"):
        fusedmlp.FusedLinear(3, 4, activation=name)
    if isinstance(name, str):
        with pytest.raises(RuntimeError, match="unknown activation.*identity, relu, leaky_relu"):
            torch.ops.fusedmlp.linear_act(x, w, b, name, 0.01)


def test_saved_tensors_are_what_eager_saves():
    """One tensor besides x and weight: y for output-differentiated activations, z for the
    others (never both)."""
    x, w, b = scaled_inputs(6, 5, 4, torch.float32)
    for activation in ACTIVATIONS:
        packed = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t,
                                                      lambda t: t):
            y = fusedmlp.linear(x, w, b, activation=activation)
        assert len(packed) == (2 if activation == "identity" else 3), activation
        assert packed[0] is x and packed[1] is w
        if activation != "identity":
            assert packed[2].shape == y.shape


@pytest.mark.parametrize("activation", ["gelu", "silu", "tanh", "leaky_relu", "relu_squared"])
def test_opcheck(activation):
    x, w, b = make(4, 6, 3, torch.float32, requires_grad=False)
    torch.library.opcheck(torch.ops.fusedmlp.linear_act.default, (x, w, b, activation, 0.1))
    y, z = torch.ops.fusedmlp.linear_act_pre(x, w, b, activation, 0.1)
    torch.library.opcheck(torch.ops.fusedmlp.linear_act_pre.default, (x, w, b, activation, 0.1))
    saved = z if activation in ("gelu", "silu", "relu_squared") else y
    for mask in ([True, True, True], [False, True, False]):
        torch.library.opcheck(torch.ops.fusedmlp.linear_act_backward.default,
                              (torch.randn_like(y), x, w, saved, activation, 0.1, mask))
    torch.library.opcheck(torch.ops.fusedmlp.activation_grad.default,
                          (torch.randn_like(y), saved, activation, 0.1, 2))


@pytest.mark.parametrize("activation", ["gelu_tanh", "sigmoid", "leaky_relu"])
def test_compile_fullgraph_and_export(activation):
    torch._dynamo.reset()
    layer = fusedmlp.FusedLinear(16, 8, activation=activation)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert_same_function(layer, compiled, torch.randn(5, 16))
    exported = torch.export.export(layer, (torch.randn(3, 16),))
    x2 = torch.randn(3, 16)
    torch.testing.assert_close(exported.module()(x2), layer(x2))


@pytest.mark.parametrize("activation,module", [
    ("gelu", torch.nn.GELU()), ("gelu_tanh", torch.nn.GELU(approximate="tanh")),
    ("silu", torch.nn.SiLU()), ("tanh", torch.nn.Tanh()), ("sigmoid", torch.nn.Sigmoid()),
    ("leaky_relu", torch.nn.LeakyReLU(0.3)), ("relu", torch.nn.ReLU())])
def test_fused_mlp_activation_and_sequential_round_trip(activation, module):
    slope = 0.3 if activation == "leaky_relu" else 0.01
    torch.manual_seed(3)
    mlp = fusedmlp.FusedMLP(12, [9, 7], 4, activation=activation, negative_slope=slope)
    seq = mlp.to_sequential()
    assert type(seq[1]) is type(module) and repr(seq[1]) == repr(module)
    torch.manual_seed(3)  # the same initial weights as the plain model
    plain = torch.nn.Sequential(torch.nn.Linear(12, 9), module, torch.nn.Linear(9, 7), module,
                                torch.nn.Linear(7, 4))
    for p, q in zip(mlp.parameters(), plain.parameters()):
        assert torch.equal(p, q)
    x = torch.randn(5, 12)
    torch.testing.assert_close(mlp(x), plain(x))
    back = fusedmlp.FusedMLP.from_sequential(plain)
    assert back.activation == activation and back.negative_slope == slope
    torch.testing.assert_close(back(x), plain(x))
    if activation != "relu":
        assert f"activation={activation}" in repr(mlp)


def test_fused_linear_repr_and_from_linear():
    linear = torch.nn.Linear(6, 3)
    layer = fusedmlp.FusedLinear.from_linear(linear, activation="leaky_relu", negative_slope=0.2)
    assert layer.weight is linear.weight
    assert "activation=leaky_relu, negative_slope=0.2" in repr(layer)
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), F.leaky_relu(linear(x), 0.2))
    assert "activation" not in repr(fusedmlp.FusedLinear(6, 3))
    with pytest.raises(ValueError, match="torch has no module for 'relu_squared'"):
        fusedmlp.FusedMLP(4, [3], 2, activation="relu_squared").to_sequential()
