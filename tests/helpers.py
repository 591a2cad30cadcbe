"""Shared test helpers: the float64 reference, dtype tolerances, and the shapes, strided
inputs and checks that the CPU (test_linear_relu.py) and CUDA (test_cuda.py) suites share,
and what the fuse() tests check of a fused model (structure, state_dict)."""
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fusedmlp
from fusedmlp import FusedLinear, FusedLinearReLU
from fusedmlp.fuse import _activation_modules

REDUCED_PRECISION = (torch.float16, torch.bfloat16)

SLOPE = 0.2  # leaky_relu's negative_slope in the activation tests (torch's default 0.01 too)

# Each activation of fusedmlp.ops.ACTIVATIONS as eager torch computes it.
TORCH_ACTS = {
    "identity": lambda z: z,
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, SLOPE),
    "gelu": F.gelu,
    "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu_squared": lambda z: F.relu(z) ** 2,
}


KINKED = ("relu", "leaky_relu")  # derivative jumps at 0: the side comes from our op


def torch_activation(activation, z, slope=SLOPE):
    """TORCH_ACTS[activation](z), with leaky_relu's slope given."""
    if activation == "leaky_relu":
        return F.leaky_relu(z, slope)
    return TORCH_ACTS[activation](z)


def reference_activation(activation, z, slope, side):
    """activation(z) in float64, through which autograd differentiates as our op does: at
    the kinks of relu and leaky_relu, on the side of 0 that `side` (True: z > 0, taken from
    the op's output or saved z) gives: a z within rounding of 0 may have either sign in the
    op, and the forward check covers the value there."""
    if activation in KINKED:
        return torch.where(side, z, z * (slope if activation == "leaky_relu" else 0.0))
    return torch_activation(activation, z, slope)


def activation_tolerance_scale(activation):
    """What the linear-layer tolerances are multiplied by behind an activation: its slope
    is at most ~1.13 (gelu), and 2|z| for relu_squared."""
    return 10 if activation == "relu_squared" else 2

ODD_SHAPES = [  # (rows, in_features, out_features)
    (1, 1, 1), (3, 17, 5), (17, 3, 1), (1, 129, 3), (7, 1, 13), (2, 31, 37),
    (129, 257, 131), (64, 784, 128), (5, 300, 41), (300, 70, 9),  # 300 rows: K-blocked grad_w
    # CPU: the dot-product forward blocks K (past 1024 fp32 / 512 fp64 elements at a 32 KiB
    # L1d), and from 513 rows on (AVX-512: 65) the forward takes the packed path.
    (5, 1100, 6), (600, 37, 10),
]


def reference(x, weight, bias, grad_y=None, relu=True, relu_output=None):
    """relu(linear) (or plain linear) and its grads (x, weight, bias) in float64, eager.

    relu_output: the output y of the op under test. If given, the reference backward takes
    its ReLU mask from it (grad passes where !(y <= 0)), as linear_relu_backward does: a
    pre-activation within rounding error of 0 may have either sign in the op's y, and the
    forward check covers y; the backward is checked for the mask y defines."""
    xd = x.detach().double().requires_grad_()
    wd = weight.detach().double().requires_grad_()
    bd = bias.detach().double().requires_grad_() if bias is not None else None
    pre = F.linear(xd, wd, bd)
    y = F.relu(pre) if relu else pre
    if grad_y is None:
        return y, None
    masked = y
    if relu and relu_output is not None:
        masked = torch.where(relu_output.detach().double() <= 0, torch.zeros_like(pre), pre)
    inputs = (xd, wd) + ((bd,) if bd is not None else ())
    grads = torch.autograd.grad(masked, inputs, grad_y.double(), allow_unused=True)
    return y, grads


def tolerances(dtype, k):
    """Bounds for sums of k products of O(1) values against a float64 reference: the
    rounding error of a length-k sum of partial sums up to sqrt(k) grows like eps * k.
    float16/bfloat16 kernels accumulate in float32 and round once at the store: the
    result's own rounding (eps/2 relative) plus the float32 sum's error."""
    if dtype in REDUCED_PRECISION:
        return dict(rtol=2 * torch.finfo(dtype).eps,
                    atol=4 * torch.finfo(torch.float32).eps * max(k, 4))
    eps = torch.finfo(dtype).eps
    return dict(rtol=64 * eps, atol=4 * eps * max(k, 4))


def assert_close_to(actual, expected, k):
    torch.testing.assert_close(actual, expected.to(actual.dtype), **tolerances(actual.dtype, k))


def make(rows, k, n, dtype, bias=True, requires_grad=True, device="cpu"):
    x = torch.randn(rows, k, dtype=dtype, device=device, requires_grad=requires_grad)
    w = torch.randn(n, k, dtype=dtype, device=device, requires_grad=requires_grad)
    b = torch.randn(n, dtype=dtype, device=device, requires_grad=requires_grad) if bias else None
    return x, w, b


def check_against_reference(fn, x, w, b, relu=True):
    """Forward and every gradient of fn(x, w, b) vs the float64 reference."""
    y = fn(x, w, b)
    grad_y = torch.randn_like(y)
    y_ref, grads_ref = reference(x, w, b, grad_y, relu=relu, relu_output=y)
    k = w.shape[1]
    assert y.shape == y_ref.shape and y.dtype == x.dtype and y.device == x.device
    assert_close_to(y, y_ref, k)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, inputs, grad_y)
    reductions = [w.shape[0], y.numel() // max(w.shape[0], 1), y.numel() // max(w.shape[0], 1)]
    for g, g_ref, red, t in zip(grads, grads_ref, reductions, inputs):
        assert g.shape == t.shape and g.dtype == t.dtype
        assert_close_to(g, g_ref, red)


def strided_cases(dtype, device="cpu"):
    """Non-contiguous x / weight / bias as users produce them (call .requires_grad_())."""
    k, n, rows = 21, 13, 10

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, device=device)

    base_x = randn(k, rows)
    base_w = randn(k, n)
    return {
        "x_transposed": (base_x.t(), randn(n, k), randn(n)),
        "x_sliced": (randn(rows, 2 * k)[:, ::2], randn(n, k), randn(n)),
        "x_misaligned": (randn(rows, k + 1)[:, 1:], randn(n, k), randn(n)),
        "x_row_padded": (randn(rows, k + 5)[:, :k], randn(n, k), randn(n)),  # lda > k
        "x_expanded": (randn(1, k).expand(rows, k), randn(n, k), randn(n)),
        "weight_transposed": (randn(rows, k), base_w.t(), randn(n)),
        "bias_sliced": (randn(rows, k), randn(n, k), randn(3 * n)[::3]),
        "bias_expanded": (randn(rows, k), randn(n, k), randn(1).expand(n)),
        "nd_x_permuted": (randn(k, 2, 5).permute(1, 2, 0), randn(n, k), randn(n)),
        # Rows 48 elements apart (fp32: 3 cache lines, which the CPU backward reads in place)
        # and 45 used: full panels in place, the 13-column edge panel packed.
        "x_and_weight_rows_48_apart": (randn(rows, 48)[:, :45], randn(n, 48)[:, :45], randn(n)),
    }


def assert_same_special_values(actual, expected):
    assert torch.equal(actual.isnan(), expected.isnan())
    assert torch.equal(actual.isinf(), expected.isinf())
    finite = expected.isfinite()
    assert torch.equal(actual[expected.isinf()], expected[expected.isinf()])
    torch.testing.assert_close(actual[finite], expected[finite])


def well_conditioned(rows, k, n, margin=1e-2, device="cpu"):
    """fp64 inputs whose pre-activations stay >= margin away from the ReLU kink, so finite
    differences do not straddle it (same seed -> same draw)."""
    gen = torch.Generator().manual_seed(1234)
    while True:
        x = torch.randn(rows, k, dtype=torch.float64, generator=gen)
        w = torch.randn(n, k, dtype=torch.float64, generator=gen)
        b = torch.randn(n, dtype=torch.float64, generator=gen)
        if (F.linear(x, w, b).abs() > margin).all():
            return tuple(t.to(device).requires_grad_() for t in (x, w, b))


def check_nan_inf_parity(dtype, device="cpu", fn=fusedmlp.linear_relu, act=F.relu):
    """NaN/Inf in x, weight, bias and grad_y give what act(F.linear(...)) gives."""
    x, w, b = make(8, 12, 10, dtype, requires_grad=False, device=device)
    x[1, 3] = float("nan")        # NaN pre-activation: relu keeps NaN
    x[2, 0] = float("inf")        # +-Inf pre-activations: relu gives Inf / 0
    w[4, 5] = float("-inf")
    b[7] = float("nan")
    for t in (x, w, b):
        t.requires_grad_()
    y = fn(x, w, b)
    y_ref = act(F.linear(x, w, b))
    assert y.isnan().any() and (act is not F.relu or y.isinf().any())
    assert_same_special_values(y, y_ref)
    grad_y = torch.randn_like(y)
    grad_y[0, 0] = float("nan")
    for g, g_ref in zip(torch.autograd.grad(y, (x, w, b), grad_y),
                        torch.autograd.grad(y_ref, (x, w, b), grad_y)):
        assert_same_special_values(g, g_ref)


def opcheck_backward_ops(mask, device="cpu"):
    x, w, b = make(4, 6, 3, torch.float32, requires_grad=False, device=device)
    y = fusedmlp.linear_relu(x, w, b)
    torch.library.opcheck(torch.ops.fusedmlp.linear_relu_backward.default,
                          (torch.randn_like(y), x, w, y, mask))
    torch.library.opcheck(torch.ops.fusedmlp.linear_backward.default,
                          (torch.randn_like(y), x, w, mask))


def same_init_as_nn_linear(layer_class, in_features, out_features, bias, seed):
    """(layer, nn.Linear) built from the same seed, after checking that the layer has
    nn.Linear's parameter names, shapes and dtypes, the same RNG draws (not just the same
    distribution), and leaves the RNG where nn.Linear leaves it."""
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    after_linear = torch.get_rng_state()
    torch.manual_seed(seed)
    layer = layer_class(in_features, out_features, bias=bias)
    assert torch.equal(torch.get_rng_state(), after_linear)
    assert [n for n, _ in layer.named_parameters()] == [n for n, _ in linear.named_parameters()]
    for (_, p), (_, q) in zip(layer.named_parameters(), linear.named_parameters()):
        assert p.shape == q.shape and p.dtype == q.dtype
        assert torch.equal(p, q)
    return layer, linear


class SmallMLP(nn.Module):
    """Fused hidden layer + fusedmlp.linear head, for compile/export tests."""

    def __init__(self):
        super().__init__()
        self.fc1 = fusedmlp.FusedLinearReLU(32, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return fusedmlp.linear(self.fc1(x), self.fc2.weight, self.fc2.bias)


def check_compile_equals_eager(backend, dynamic, device="cpu"):
    """torch.compile(fullgraph=True) of SmallMLP: outputs and all grads equal eager's,
    over several batch sizes (recompiles or dynamic shapes)."""
    torch._dynamo.reset()
    model = SmallMLP().to(device)
    compiled = torch.compile(model, fullgraph=True, backend=backend, dynamic=dynamic)
    for batch in (8, 5, 13):
        assert_same_function(model, compiled, torch.randn(batch, 32, device=device))


EMPTY_SHAPES = [  # (x_shape, w_shape)
    ((0, 5), (3, 5)),        # empty batch
    ((2, 0, 5), (3, 5)),     # empty leading dimension
    ((4, 0), (3, 0)),        # in_features = 0: y = act(bias)
    ((4, 5), (0, 5)),        # out_features = 0
]
EMPTY_IDS = ["rows0", "lead0", "in0", "out0"]


def check_empty_dimensions(x_shape, w_shape, dtype, op, device="cpu"):
    """fusedmlp.<op> on shapes with a zero dimension: outputs and grads (shapes and values,
    e.g. zeros or act(bias)) equal eager PyTorch's."""
    x = torch.randn(*x_shape, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(*w_shape, dtype=dtype, device=device, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=dtype, device=device, requires_grad=True)
    y = getattr(fusedmlp, op)(x, w, b)
    y_ref = F.linear(x, w, b)
    if op == "linear_relu":
        y_ref = F.relu(y_ref)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref)
    grad_y = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, w, b), grad_y)
    grads_ref = torch.autograd.grad(y_ref, (x, w, b), grad_y)
    for g, g_ref in zip(grads, grads_ref):
        assert g.shape == g_ref.shape
        torch.testing.assert_close(g, g_ref)


# fusedmlp.fuse (test_fuse.py, test_fuse_models.py)

def fused_activations(model):
    """Path -> activation of every layer running a fused activation: FusedLinearReLU
    ("relu") and FusedLinear with an activation (as fuse()'s report writes it)."""
    found = {}
    for name, m in model.named_modules():
        if isinstance(m, fusedmlp.FusedLinearReLU):
            found[name] = "relu"
        elif isinstance(m, fusedmlp.FusedLinear) and m.activation != "identity":
            found[name] = (f"leaky_relu(negative_slope={m.negative_slope:g})"
                           if m.activation == "leaky_relu" else m.activation)
    return found


def fused_layer_names(model):
    return sorted(fused_activations(model))


def linear_names(model):
    return sorted(name for name, m in model.named_modules() if type(m) is nn.Linear)


def assert_same_function(original, fused, *inputs, **tolerance):
    """Same outputs, and the same gradients for the inputs and for every parameter (by
    name), within float32 rounding (or ``tolerance``: assert_close's rtol, atol). Each
    model runs from the same RNG state, so Dropout draws the same masks in both."""
    def outputs_and_grads(model):
        xs = [x.clone().requires_grad_() for x in inputs]
        torch.manual_seed(2)
        out = model(*xs)
        weights = torch.randn(out.shape, dtype=out.dtype,
                              generator=torch.Generator().manual_seed(1)).to(out.device)
        params = dict(getattr(model, "_orig_mod", model).named_parameters())  # torch.compile'd
        grads = torch.autograd.grad((out * weights).sum(), [*xs, *params.values()],
                                    allow_unused=True)  # None for a parameter forward skips
        return out, dict(zip([f"input{i}" for i in range(len(xs))] + list(params), grads))

    out, grads = outputs_and_grads(original)
    out_fused, grads_fused = outputs_and_grads(fused)
    torch.testing.assert_close(out_fused, out, **tolerance)
    assert grads_fused.keys() == grads.keys()
    for name, grad in grads.items():
        if grad is None:
            assert grads_fused[name] is None, f"{name} gets a gradient only when fused"
        else:
            torch.testing.assert_close(grads_fused[name], grad, **tolerance,
                                       msg=lambda m: f"grad of {name}: {m}")


def assert_same_state_dict(original, fused):
    """The same keys in the same order with the same values, and strict loading works
    both ways (an original checkpoint into the fused model and back)."""
    expected, actual = original.state_dict(), fused.state_dict()
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key
    fused.load_state_dict(expected, strict=True)
    copy.deepcopy(original).load_state_dict(actual, strict=True)


def assert_same_structure(original, fused):
    """The same class and the same named_modules() paths; each module keeps its type,
    except that fused Linear layers are FusedLinearReLU (ReLU) or FusedLinear (any other
    activation, or none with plain_linear=True) and the activation modules fused into them
    are nn.Identity."""
    assert type(fused) is type(original)
    before, after = dict(original.named_modules()), dict(fused.named_modules())
    assert list(after) == list(before)
    fused_names = set(fused.fuse_report.fused)
    activation_modules = _activation_modules(original)
    for name, module in before.items():
        if name in fused_names:
            expected = (FusedLinearReLU if fused.fuse_report.activations[name] == "relu"
                        else FusedLinear)
            assert type(after[name]) is expected, name
        elif name in fused.fuse_report.linear:  # plain_linear=True
            assert type(after[name]) is FusedLinear, name
        elif type(after[name]) is not type(module):
            assert id(module) in activation_modules and type(after[name]) is nn.Identity, name


class OpLog(TorchDispatchMode):
    """The fusedmlp ops that reach the kernels, by name."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fusedmlp":
            self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


class FlattenThenHead(nn.Module):
    """A common wrapper fx cannot trace (its ``if`` reads a tensor's dim at run time)."""

    def __init__(self):
        import torchvision  # a test dependency the CUDA suites need not load

        super().__init__()
        self.head = torchvision.ops.MLP(16, [32, 8])

    def forward(self, x):
        if x.dim() > 2:
            x = x.flatten(1)
        return self.head(x)
