"""Property-based fuzzing with hypothesis: random shapes (0, 1, primes, up to a few
hundred), strides (transposed, sliced, expanded bias), bias or not, dtypes and ISAs:
- linear / linear_relu: forward and every gradient against the float64 reference;
- fusedmlp.linear with every activation (leaky_relu with positive and negative slopes) on
  O(1) pre-activations, 1 or 2 threads;
- the whole-MLP op: 1-4 layers of random widths, a random activation and slope per layer,
  some biases, transposed weights, some inputs without grad.
Where an activation's derivative jumps at 0 (relu, leaky_relu), the reference takes the
side of the kink from the op's own output (or saved pre-activation): a pre-activation
within rounding of 0 may fall on either side, and the forward check covers its value.

CI runs FUZZ_EXAMPLES (default 300) examples each; `make fuzz` runs many more."""
import os

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedmlp
from conftest import AVAILABLE_ISAS
from fusedmlp.ops import ACTIVATIONS, _saves_pre_activation
from helpers import (activation_tolerance_scale, assert_close_to, reference,
                     reference_activation, tolerances, torch_activation)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
SIZES = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 13, 17, 31, 127, 129, 257]),
                  st.integers(0, 300))


# Every random tensor comes from a seed hypothesis drew, so a failing example replays.
SEEDS = st.integers(0, 2 ** 31 - 1)


def random_like(t, seed):
    return torch.randn(t.shape, dtype=t.dtype, generator=torch.Generator().manual_seed(seed))


def input_in_layout(layout, randn, rows, k):
    """A (rows, k) input from randn ("nd": (rows, 2, k)) in one memory layout: contiguous,
    transposed, every other column ("sliced"), padded rows, or a transposed 3-D tensor."""
    if layout == "transposed":
        return randn(k, rows).t()
    if layout == "sliced":
        return randn(rows, 2 * k)[:, ::2]
    if layout == "row_padded":
        return randn(rows, k + 3)[:, :k]
    if layout == "nd":
        return randn(2, rows, k).transpose(0, 1)
    return randn(rows, k)


@st.composite
def layer_inputs(draw, unit_preactivations=False):
    """(x, w, b, isa). unit_preactivations: x scaled by 1/sqrt(in_features), so that the
    pre-activations are O(1), the curved region of the smooth activations."""
    rows, k, n = draw(SIZES), draw(SIZES), draw(SIZES)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(SEEDS))

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, generator=gen)

    def randx(*shape):
        return randn(*shape) / max(k, 1) ** 0.5 if unit_preactivations else randn(*shape)

    x = input_in_layout(
        draw(st.sampled_from(["contiguous", "transposed", "sliced", "nd", "row_padded"])),
        randx, rows, k)
    w = randn(k, n).t() if draw(st.booleans()) else randn(n, k)
    bias_kind = draw(st.sampled_from(["none", "contiguous", "expanded", "sliced"]))
    b = {"none": None, "contiguous": randn(n) if n else randn(0),
         "expanded": randn(1).expand(n), "sliced": randn(2 * n)[::2]}[bias_kind]
    return x, w, b, draw(st.sampled_from(AVAILABLE_ISAS))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(layer_inputs(), st.booleans(), SEEDS)
def test_fuzz_against_float64_reference(inputs, relu, grad_seed):
    x, w, b, isa = inputs
    fusedmlp.set_cpu_isa(isa)
    try:
        x.requires_grad_(), w.requires_grad_()
        if b is not None:
            b.requires_grad_()
        fn = fusedmlp.linear_relu if relu else fusedmlp.linear
        y = fn(x, w, b)
        grad_y = random_like(y, grad_seed)
        y_ref, grads_ref = reference(x, w, b, grad_y, relu=relu, relu_output=y)
        assert y.shape == y_ref.shape
        assert_close_to(y, y_ref, w.shape[1])
        inputs_ = [t for t in (x, w, b) if t is not None]
        grads = torch.autograd.grad(y, inputs_, grad_y, allow_unused=True)
        rows = y.numel() // max(w.shape[0], 1)
        for g, g_ref, t, red in zip(grads, grads_ref, inputs_, (w.shape[0], rows, rows)):
            g = torch.zeros_like(t) if g is None else g
            g_ref = torch.zeros_like(t, dtype=torch.float64) if g_ref is None else g_ref
            assert g.shape == t.shape
            assert_close_to(g, g_ref, red)
    finally:
        fusedmlp.set_cpu_isa(AVAILABLE_ISAS[-1])


SLOPES = st.sampled_from([0.01, 0.2, -0.7])  # leaky_relu's; a negative one saves z
WIDTHS = st.one_of(st.sampled_from([1, 2, 3, 7, 16, 17, 31, 128, 129]), st.integers(1, 300))


def positive_side(activation, slope, output, pre):
    """Where the op's pre-activation is > 0, for a kinked activation: its output says so
    for relu and a non-negative slope; for a negative slope both sides are positive, and
    the op saves z itself."""
    if activation == "leaky_relu" and not slope >= 0:
        return pre.detach() > 0
    return output.detach() > 0


def assert_close_scaled(actual, expected, activation, k, factor=1):
    """actual against the float64 `expected` within tolerances(dtype, k) for sums of O(1)
    terms, times activation_tolerance_scale and `factor`, the absolute part scaled by
    expected's largest magnitude: a sum's rounding error grows with its terms, and an
    element where large terms cancel is as far off as the largest of them allows
    (relu_squared stacks reach 1e4)."""
    scale = factor * activation_tolerance_scale(activation)
    tol = tolerances(actual.dtype, k)
    magnitude = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=scale * tol["rtol"],
                               atol=scale * tol["atol"] * magnitude)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(layer_inputs(unit_preactivations=True), st.sampled_from(ACTIVATIONS + (None,)),
       SLOPES, st.sampled_from([1, 2]), SEEDS)
def test_fuzz_every_activation_against_float64_reference(inputs, activation, slope, threads,
                                                         grad_seed):
    x, w, b, isa = inputs
    name = activation or "identity"
    threads_before = torch.get_num_threads()
    fusedmlp.set_cpu_isa(isa)
    torch.set_num_threads(threads)
    try:
        x.requires_grad_(), w.requires_grad_()
        if b is not None:
            b.requires_grad_()
        y = fusedmlp.linear(x, w, b, activation=activation, negative_slope=slope)
        pre = None
        if name == "leaky_relu" and slope < 0:
            with torch.no_grad():
                y_pre, pre = torch.ops.fusedmlp.linear_act_pre(x, w, b, name, slope)
            assert torch.equal(y_pre, y)  # the z that backward reads belongs to this y
        xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
        bd = b.detach().double().requires_grad_() if b is not None else None
        z = F.linear(xd, wd, bd)
        y_ref = torch_activation(name, z, slope)
        k, n = w.shape[1], w.shape[0]
        assert y.shape == y_ref.shape and y.dtype == x.dtype
        assert_close_scaled(y, y_ref, name, k)
        if y.numel() == 0:
            return
        grad_y = random_like(y, grad_seed)
        side = positive_side(name, slope, y, pre).reshape(z.shape)
        y_for_grad = reference_activation(name, z, slope, side)
        inputs_ = [t for t in (x, w, b) if t is not None]
        grads = torch.autograd.grad(y, inputs_, grad_y, allow_unused=True)
        grads_ref = torch.autograd.grad(y_for_grad, [xd, wd] + ([bd] if bd is not None else []),
                                        grad_y.double(), allow_unused=True)
        rows = y.numel() // max(n, 1)
        for g, g_ref, t, red in zip(grads, grads_ref, inputs_, (n, rows, rows)):
            g = torch.zeros_like(t) if g is None else g
            g_ref = torch.zeros_like(t, dtype=torch.float64) if g_ref is None else g_ref
            assert g.shape == t.shape and g.dtype == t.dtype
            assert_close_scaled(g, g_ref, name, red)
    finally:
        torch.set_num_threads(threads_before)
        fusedmlp.set_cpu_isa(AVAILABLE_ISAS[-1])


@st.composite
def mlp_inputs(draw):
    """(x, weights, biases, activations, slopes, isa): 1-4 layers of random widths, each
    weight scaled by 1/sqrt(in_features) (O(1) pre-activations through the stack)."""
    layers = draw(st.integers(1, 4))
    widths = [draw(WIDTHS) for _ in range(layers + 1)]
    rows = draw(SIZES)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(SEEDS))

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, generator=gen)

    x = input_in_layout(draw(st.sampled_from(["contiguous", "transposed", "sliced", "nd"])),
                        randn, rows, widths[0])
    weights, biases = [], []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        w = randn(n_in, n_out).t() if draw(st.booleans()) else randn(n_out, n_in)
        weights.append(w / n_in ** 0.5)
        biases.append(randn(n_out) if draw(st.booleans()) else None)
    activations = [draw(st.sampled_from(ACTIVATIONS)) for _ in range(layers)]
    slopes = [draw(SLOPES) for _ in range(layers)]
    x.requires_grad_(draw(st.booleans()))
    grad_weights = draw(st.booleans())
    for t in weights + biases:
        if t is not None:
            t.requires_grad_(grad_weights)
    return x, weights, biases, activations, slopes, draw(st.sampled_from(AVAILABLE_ISAS))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(mlp_inputs(), SEEDS)
def test_fuzz_mlp_op_against_float64_reference(inputs, grad_seed):
    x, weights, biases, activations, slopes, isa = inputs
    fusedmlp.set_cpu_isa(isa)
    try:
        y = fusedmlp.mlp(x, weights, biases, activation=activations, negative_slope=slopes)
        with torch.no_grad():  # the same call's hidden outputs and saved pre-activations
            y_op, hidden, pre = torch.ops.fusedmlp.mlp(x, weights, biases, activations, slopes)
        assert torch.equal(y_op, y)
        outputs, saved_pre = list(hidden) + [y], iter(pre)
        as64 = [None if t is None else t.detach().double().requires_grad_(t.requires_grad)
                for t in [x] + weights + biases]
        x64, w64, b64 = as64[0], as64[1:1 + len(weights)], as64[1 + len(weights):]
        h = x64
        for layer, (w, b, act, slope) in enumerate(zip(w64, b64, activations, slopes)):
            z = F.linear(h, w, b)
            layer_pre = next(saved_pre) if _saves_pre_activation(act, slope) else None
            side = positive_side(act, slope, outputs[layer], layer_pre).reshape(z.shape)
            h = reference_activation(act, z, slope, side)
        widest = max([w.shape[1] for w in weights] + [w.shape[0] for w in weights]
                     + [y.numel() // max(y.shape[-1], 1)])
        loosest = "relu_squared" if "relu_squared" in activations else "relu"
        factor = 5 * len(weights)
        assert y.shape == h.shape and y.dtype == x.dtype
        assert_close_scaled(y, h, loosest, widest, factor)
        inputs_ = [t for t in [x] + weights + biases if t is not None and t.requires_grad]
        if not inputs_ or y.numel() == 0:
            return
        inputs64 = [t for t in as64 if t is not None and t.requires_grad]
        grad_y = random_like(y, grad_seed).double()
        grads = torch.autograd.grad(y, inputs_, grad_y.to(y.dtype), allow_unused=True)
        grads_ref = torch.autograd.grad(h, inputs64, grad_y, allow_unused=True)
        for g, g_ref, t in zip(grads, grads_ref, inputs_):
            g = torch.zeros_like(t) if g is None else g
            g_ref = torch.zeros_like(t, dtype=torch.float64) if g_ref is None else g_ref
            assert g.shape == t.shape and g.dtype == t.dtype
            assert_close_scaled(g, g_ref, loosest, widest, factor)
    finally:
        fusedmlp.set_cpu_isa(AVAILABLE_ISAS[-1])
