"""The whole-MLP op (fusedmlp.mlp, torch.ops.fusedmlp.mlp / mlp_backward, FusedMLP's
forward): values and the gradients of x, every weight and every bias against the
per-layer model (the same layers, one op each) and a float64 eager reference, for every
activation and CPU ISA, odd sizes, batches 0/1/3/17/129 and several row blocks, N-D and
strided inputs, no bias; gradcheck and gradgradcheck in float64; what is saved for
backward; opcheck, torch.compile(fullgraph=True), torch.export, autocast; FusedMLP's
choice between the op and its layers; bad inputs. CUDA: runs the per-layer kernels inside
the op (test at the end, needs a GPU)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusedmlp
from conftest import requires_cuda
from fusedmlp.ops import ACTIVATIONS
from helpers import (SLOPE, TORCH_ACTS, OpLog, assert_same_function, tolerances,
                     torch_activation)

DTYPES = [torch.float32, torch.float64]
SIZES = [13, 17, 5, 3]  # 3 layers: 13 -> 17 -> 5 -> 3
BATCHES = [0, 1, 3, 17, 129]


def make_layers(sizes, dtype, bias=True, requires_grad=True):
    """Weights scaled like nn.Linear's initialisation, so every pre-activation stays O(1)
    (the activations' curved region) however many layers there are; biases: one per layer
    or None (bias="some": every other layer)."""
    weights, biases = [], []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights.append((torch.randn(n_out, n_in, dtype=dtype) / max(n_in, 1) ** 0.5)
                       .requires_grad_(requires_grad))
        given = bias is True or (bias == "some" and i % 2 == 0)
        biases.append(torch.randn(n_out, dtype=dtype).requires_grad_(requires_grad)
                      if given else None)
    return weights, biases


def activations_for(activation, count, last=None):
    return [activation] * (count - 1) + [last or "identity"]


def per_layer(x, weights, biases, activations):
    """The same MLP one fused layer at a time (fusedmlp.linear per layer)."""
    for w, b, act in zip(weights, biases, activations):
        x = fusedmlp.linear(x, w, b, activation=act, negative_slope=SLOPE)
    return x


def reference(x, weights, biases, activations):
    """The MLP in float64 eager PyTorch."""
    h = x.double()
    for w, b, act in zip(weights, biases, activations):
        h = TORCH_ACTS[act](F.linear(h, w.double(), None if b is None else b.double()))
    return h


def outputs_and_grads(fn, x, weights, biases, grad_seed=5):
    """fn's output and its gradients for x, every weight and every given bias (a fixed
    random grad_y)."""
    y = fn(x, weights, biases)
    # drawn in float32 for every dtype, so the float64 reference gets the same values
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed))
    inputs = [t for t in [x, *weights, *biases] if t is not None and t.requires_grad]
    return y, torch.autograd.grad(y, inputs, grad_y.to(device=y.device, dtype=y.dtype),
                                  allow_unused=True)


def as_float64(t):
    """t's values in float64, a leaf that requires grad as t does."""
    if t is None:
        return None
    return t.detach().double().requires_grad_(t.requires_grad)


def op(activations):
    return lambda x, weights, biases: fusedmlp.mlp(x, weights, biases, activation=activations,
                                                   negative_slope=SLOPE)


def check_against_per_layer_and_reference(x, weights, biases, activations):
    """Values and all gradients vs the per-layer ops and vs float64 eager, within the
    per-layer tests' tolerances for the widest reduction, times a few per layer. (Per layer
    is not bitwise the same where the whole batch and the op's row blocks take different
    GEMM kernels: on AVX2 beyond 512 rows, the packed one and the dot-product one.)"""
    y, grads = outputs_and_grads(op(activations), x, weights, biases)
    y_layers, grads_layers = outputs_and_grads(
        lambda x, w, b: per_layer(x, w, b, activations), x, weights, biases)
    y_ref, grads_ref = outputs_and_grads(
        lambda x, w, b: reference(x, w, b, activations), as_float64(x),
        [as_float64(w) for w in weights], [as_float64(b) for b in biases])
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    widest = max([w.shape[1] for w in weights] + [w.shape[0] for w in weights]
                 + [y.numel() // max(y.shape[-1], 1)])
    tol = {name: 10 * len(weights) * value for name, value in tolerances(x.dtype, widest).items()}
    torch.testing.assert_close(y, y_layers, **tol)
    torch.testing.assert_close(y, y_ref.to(y.dtype), **tol)
    assert len(grads) == len(grads_layers) == len(grads_ref)
    for g, g_layers, g_ref in zip(grads, grads_layers, grads_ref):
        torch.testing.assert_close(g, g_layers, **tol)
        torch.testing.assert_close(g, g_ref.to(g.dtype), **tol)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_matches_per_layer_and_float64(isa, activation, dtype, batch):
    weights, biases = make_layers(SIZES, dtype)
    x = torch.randn(batch, SIZES[0], dtype=dtype, requires_grad=True)
    check_against_per_layer_and_reference(x, weights, biases,
                                          activations_for(activation, len(weights)))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_on_every_layer_and_no_biases(activation):
    """The last layer with an activation too (y saved when it differentiates from y), no
    biases anywhere or only some."""
    for bias in (False, "some"):
        weights, biases = make_layers([7, 9, 4], torch.float64, bias=bias)
        x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
        check_against_per_layer_and_reference(x, weights, biases, [activation] * 2)


@pytest.mark.parametrize("sizes", [[784, 128, 10], [1, 1], [3, 1, 1, 2], [200, 129, 31, 17, 7]],
                         ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("batch", [1, 64, 600, 1500])
def test_sizes_and_row_blocks(sizes, batch):
    """Odd widths, one layer or five, and batches of one to many row blocks (the CPU
    forward streams blocks of <= 512 rows, spread over threads when there are enough)."""
    weights, biases = make_layers(sizes, torch.float32)
    x = torch.randn(batch, sizes[0], requires_grad=True)
    check_against_per_layer_and_reference(x, weights, biases,
                                          activations_for("relu", len(weights)))


def test_weights_too_large_to_stream():
    """Weights beyond the CPU's streaming budget (1 MiB): one block of all rows, each
    layer over the whole batch (here 700 rows: the packed GEMM)."""
    weights, biases = make_layers([600, 500, 3], torch.float32)
    x = torch.randn(700, 600, requires_grad=True)
    check_against_per_layer_and_reference(x, weights, biases, ["gelu", "identity"])


def test_nd_and_strided_inputs():
    """N-D x (and empty leading dims), a permuted x, a transposed weight, a strided bias."""
    dtype = torch.float64
    weights, biases = make_layers([11, 6, 4], dtype)
    w0 = torch.randn(11, 6, dtype=dtype).t().requires_grad_()  # transposed storage
    b1 = torch.randn(12, dtype=dtype)[::3].requires_grad_()
    cases = [
        (torch.randn(2, 3, 5, 11, dtype=dtype), weights, biases),
        (torch.randn(11, 2, 7, dtype=dtype).permute(1, 2, 0), weights, biases),
        (torch.randn(9, 22, dtype=dtype)[:, ::2], [w0, weights[1]], [biases[0], b1]),
        (torch.randn(1, 11, dtype=dtype).expand(4, 11), weights, biases),
        (torch.randn(2, 0, 11, dtype=dtype), weights, biases),
    ]
    for x, w, b in cases:
        x.requires_grad_()
        check_against_per_layer_and_reference(x, w, b, ["silu", "identity"])
        assert fusedmlp.mlp(x, w, b).shape == (*x.shape[:-1], 4)


def test_zero_width_layers():
    """in_features = 0 (y = act(bias) onwards) and a hidden layer of width 0."""
    for sizes in ([0, 4, 3], [5, 0, 3]):
        weights, biases = make_layers(sizes, torch.float64)
        x = torch.randn(6, sizes[0], dtype=torch.float64, requires_grad=True)
        check_against_per_layer_and_reference(x, weights, biases, ["tanh", "identity"])


def test_returns_hidden_outputs_and_pre_activations():
    """The op's second and third outputs: each layer's output but the last, and the
    pre-activations of the layers whose activation backward reads z, in layer order."""
    weights, biases = make_layers([6, 5, 4, 3, 2], torch.float64, requires_grad=False)
    x = torch.randn(7, 6, dtype=torch.float64)
    activations = ["gelu", "relu", "leaky_relu", "silu"]
    slopes = [0.01, 0.01, -0.5, 0.01]  # a negative slope saves z too
    y, hidden, pre = torch.ops.fusedmlp.mlp(x, weights, biases, activations, slopes)
    h, zs, outs = x, [], []
    for w, b, act, slope in zip(weights, biases, activations, slopes):
        z = F.linear(h, w, b)
        h = torch_activation(act, z, slope)
        outs.append(h)
        if act != "relu":
            zs.append(z)
    torch.testing.assert_close(y, outs[-1])
    assert len(hidden) == 3 and len(pre) == 3
    for got, want in zip(hidden + pre, outs[:-1] + zs):
        torch.testing.assert_close(got, want)


def smooth_layers(activations, sizes=(4, 5, 3, 2), rows=3, margin=0.05, bias="some"):
    """fp64 inputs whose pre-activations all stay `margin` away from 0 (finite differences
    never straddle a kink)."""
    gen = torch.Generator().manual_seed(11)
    while True:
        weights = [torch.randn(n, k, dtype=torch.float64, generator=gen)
                   for k, n in zip(sizes[:-1], sizes[1:])]
        biases = [torch.randn(w.shape[0], dtype=torch.float64, generator=gen)
                  if bias is True or (bias == "some" and i % 2 == 0) else None
                  for i, w in enumerate(weights)]
        x = torch.randn(rows, sizes[0], dtype=torch.float64, generator=gen)
        h, ok = x, True
        for w, b, act in zip(weights, biases, activations):
            z = F.linear(h, w, b)
            ok = ok and bool((z.abs() > margin).all())
            h = TORCH_ACTS[act](z)
        if ok:
            return x.requires_grad_(), [w.requires_grad_() for w in weights], \
                [b.requires_grad_() if b is not None else None for b in biases]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_and_gradgradcheck(activation):
    """First and second derivatives of x, every weight and the given biases, in fp64; the
    last layer with an activation too (tanh: y saved for it)."""
    for activations in ([activation, activation, "identity"], [activation, "identity", "tanh"]):
        x, weights, biases = smooth_layers(activations)
        given = [i for i, b in enumerate(biases) if b is not None]

        def fn(x, *params):
            ws = list(params[:len(weights)])
            bs = [None] * len(weights)
            for i, b in zip(given, params[len(weights):]):
                bs[i] = b
            return fusedmlp.mlp(x, ws, bs, activation=activations, negative_slope=SLOPE)

        inputs = (x, *weights, *(biases[i] for i in given))
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


def test_double_backward_matches_per_layer():
    """A gradient penalty through FusedMLP (create_graph=True) gives the per-layer model's
    second derivatives, and the first-order grads are the fused ones."""
    torch.manual_seed(4)
    mlp = fusedmlp.FusedMLP(9, [7, 5], 3, activation="gelu").double()
    x = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    results = []
    for forward in (mlp, lambda x: nn.Sequential.forward(mlp, x)):
        y = forward(x)
        (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        results.append(torch.autograd.grad(dx.square().sum(), [x, *mlp.parameters()]))
    for ours, layers in zip(*results):
        torch.testing.assert_close(ours, layers)


def test_frozen_layers_and_input_without_grad():
    """Only what needs a gradient gets one; the rest is None, as per layer."""
    weights, biases = make_layers([8, 6, 5, 2], torch.float32)
    weights[0].requires_grad_(False)
    biases[0].requires_grad_(False)
    biases[2].requires_grad_(False)
    x = torch.randn(10, 8)
    y = fusedmlp.mlp(x, weights, biases)
    params = [weights[1], biases[1], weights[2]]
    grads = torch.autograd.grad(y.sum(), params)
    grads_ref = torch.autograd.grad(per_layer(x, weights, biases,
                                              ["relu", "relu", "identity"]).sum(), params)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)
    with torch.no_grad():
        assert fusedmlp.mlp(x, weights, biases).grad_fn is None


# 768 rows: three 256-row blocks on one thread, two of 384 on two (backend_cpu.cpp rounds
# the block count to the threads); 1500: six blocks either way.
@pytest.mark.parametrize("rows", [768, 1500])
def test_deterministic_for_any_thread_count(isa, rows):
    weights, biases = make_layers([300, 128, 10], torch.float32)
    x = torch.randn(rows, 300, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(outputs_and_grads(op(["relu", "identity"]), x, weights, biases))
    finally:
        torch.set_num_threads(before)
    (y1, g1), (y2, g2) = results
    assert torch.equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def saved_bytes(fn):
    """The distinct storages autograd keeps for backward of fn(), and their bytes."""
    packed = {}

    def pack(t):
        packed[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(packed.values())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_saves_no_more_than_per_layer(activation):
    weights, biases = make_layers([30, 20, 10, 5], torch.float32)
    x = torch.randn(16, 30, requires_grad=True)
    for last in ("identity", activation):
        activations = [activation, activation, last]
        ours = saved_bytes(lambda: op(activations)(x, weights, biases))
        layers = saved_bytes(lambda: per_layer(x, weights, biases, activations))
        assert ours <= layers, (activations, ours, layers)


def fusedmlp_ops_run(module, x):
    with OpLog() as log:
        module(x).sum().backward()
    return log.names


def test_fused_mlp_runs_one_op_each_way():
    mlp = fusedmlp.FusedMLP(20, [16, 12], 4, activation="silu")
    x = torch.randn(5, 20)
    assert fusedmlp_ops_run(mlp, x) == ["mlp", "mlp_backward"]
    y = mlp(x)
    torch.testing.assert_close(y, nn.Sequential.forward(mlp, x))


def test_fused_mlp_falls_back_to_its_layers():
    """A replaced slot, a hook, a global hook: the layers run one by one, so they see
    what a Sequential would do."""
    torch.manual_seed(2)
    mlp = fusedmlp.FusedMLP(10, [8], 3)
    x = torch.randn(4, 10)
    expected = nn.Sequential.forward(mlp, x)

    mlp[1] = nn.Dropout(0.0)
    assert "mlp" not in fusedmlp_ops_run(mlp, x)
    torch.testing.assert_close(mlp(x), expected)
    mlp[1] = nn.Identity()
    assert "mlp" in fusedmlp_ops_run(mlp, x)

    mlp[1] = nn.Tanh()  # a real module in the slot: it runs
    torch.testing.assert_close(mlp(x), nn.Sequential.forward(mlp, x))
    mlp[1] = nn.Identity()

    calls = []
    handle = mlp[0].register_forward_hook(lambda m, i, o: calls.append(o))
    assert "mlp" not in fusedmlp_ops_run(mlp, x)
    assert len(calls) == 1
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(m))
    try:
        assert "mlp" not in fusedmlp_ops_run(mlp, x)
    finally:
        handle.remove()
    assert "mlp" in fusedmlp_ops_run(mlp, x)

    mlp[2] = nn.Linear(8, 3)  # a plain layer in the chain
    assert "mlp" not in fusedmlp_ops_run(mlp, x)
    torch.testing.assert_close(mlp(x), nn.Sequential.forward(mlp, x))


def test_fused_mlp_layer_attributes_are_read_each_call():
    """The op takes each layer's activation as the layer has it now."""
    mlp = fusedmlp.FusedMLP(6, [5, 4], 3, activation="gelu")
    x = torch.randn(3, 6)
    mlp[2].activation = "tanh"
    torch.testing.assert_close(mlp(x), nn.Sequential.forward(mlp, x))


@pytest.mark.parametrize("activations,slopes", [(["gelu", "identity"], [0.01, 0.01]),
                                                (["relu", "tanh"], [0.01, 0.01]),
                                                (["leaky_relu", "silu"], [-0.3, 0.01])])
def test_opcheck(activations, slopes):
    x = torch.randn(2, 3, 5)
    weights, biases = make_layers([5, 4, 2], torch.float32, requires_grad=False)
    for bs in (biases, [None, biases[1]]):
        torch.library.opcheck(torch.ops.fusedmlp.mlp.default, (x, weights, bs, activations,
                                                                slopes))
    grad_args = (x.requires_grad_(), [w.requires_grad_() for w in weights], biases,
                 activations, slopes)
    torch.library.opcheck(torch.ops.fusedmlp.mlp.default, grad_args)
    with torch.no_grad():
        y, hidden, pre = torch.ops.fusedmlp.mlp(*grad_args)
    x, weights = x.detach(), [w.detach() for w in weights]
    for mask in ([True, True, True, True, True], [False, True, False, False, True],
                 [False, False, False, False, False]):
        torch.library.opcheck(torch.ops.fusedmlp.mlp_backward.default,
                              (torch.randn_like(y), x, weights, y, hidden, pre, activations,
                               slopes, mask))


def graph_ops(gm):
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]


def test_compile_fullgraph_one_op():
    """torch.compile(fullgraph=True) of FusedMLP: one mlp call in the graph, outputs and
    all gradients equal eager's over several batch sizes."""
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(graph_ops(gm))
        return gm

    mlp = fusedmlp.FusedMLP(16, [12], 4, activation="gelu_tanh")
    compiled = torch.compile(mlp, fullgraph=True, backend=backend)
    for batch in (8, 5, 13):
        assert_same_function(mlp, compiled, torch.randn(batch, 16))
    assert graphs and all(sum("fusedmlp.mlp" in t for t in g) == 1 for g in graphs)
    assert not any("linear" in t for g in graphs for t in g)


def test_compile_aot_eager_and_export():
    torch._dynamo.reset()
    mlp = fusedmlp.FusedMLP(16, [12, 8], 4)
    compiled = torch.compile(mlp, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 16, requires_grad=True)
    results = []
    for m in (mlp, compiled):
        out = m(x)
        results.append((out, *torch.autograd.grad(out.sum(), [x, *mlp.parameters()])))
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager)
    exported = torch.export.export(mlp, (torch.randn(3, 16),))
    assert sum("fusedmlp.mlp" in t for t in graph_ops(exported.graph_module)) == 1
    x2 = torch.randn(3, 16)
    torch.testing.assert_close(exported.module()(x2), mlp(x2))


def test_cpu_autocast_leaves_the_op_in_float32():
    """The CPU kernels are float32/float64 only: under CPU autocast the op runs in the
    input dtype, like the per-layer ops (no AutocastCPU kernel)."""
    mlp = fusedmlp.FusedMLP(8, [6], 3)
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = mlp(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, mlp(x))


def test_bad_inputs_name_the_argument():
    weights, biases = make_layers([5, 4, 3], torch.float32, requires_grad=False)
    x = torch.randn(2, 5)
    mlp = torch.ops.fusedmlp.mlp
    acts, slopes = ["relu", "identity"], [0.01, 0.01]
    with pytest.raises(RuntimeError, match=r"weights\[1\] has in_features = 6 but weights\[0\] "
                                           r"has out_features = 4"):
        mlp(x, [weights[0], torch.randn(3, 6)], biases, acts, slopes)
    with pytest.raises(RuntimeError, match=r"expected x of shape \(\.\.\., 5\) to match weights\[0\]"):
        mlp(torch.randn(2, 6), weights, biases, acts, slopes)
    with pytest.raises(RuntimeError, match=r"expected weights\[1\] to have the dtype of x "
                                           r"\(Float\), got Double"):
        mlp(x, [weights[0], weights[1].double()], biases, acts, slopes)
    with pytest.raises(RuntimeError, match=r"expected biases\[0\] to have the dtype of x"):
        mlp(x, weights, [biases[0].double(), biases[1]], acts, slopes)
    with pytest.raises(RuntimeError, match=r"expected weights\[1\] on the same device as x"):
        mlp(x, [weights[0], weights[1].to("meta")], biases, acts, slopes)
    with pytest.raises(RuntimeError, match=r"expected biases\[1\] of shape \(3,\)"):
        mlp(x, weights, [biases[0], torch.randn(4)], acts, slopes)
    with pytest.raises(RuntimeError, match=r"expected weights\[0\] of shape \(out_features, "
                                           r"in_features\), got a 1-D"):
        mlp(x, [torch.randn(5), weights[1]], biases, acts, slopes)
    with pytest.raises(RuntimeError, match="expected one bias \\(or None\\) per weight"):
        mlp(x, weights, biases[:1], acts, slopes)
    with pytest.raises(RuntimeError, match="expected at least one layer"):
        mlp(x, [], [], [], [])
    with pytest.raises(RuntimeError, match="expected one activation per layer"):
        mlp(x, weights, biases, ["relu"], slopes)
    with pytest.raises(RuntimeError, match="unknown activation 'swish'"):
        mlp(x, weights, biases, ["swish", "identity"], slopes)
    with pytest.raises(RuntimeError, match="expected x to be a floating-point tensor"):
        mlp(x.int(), weights, biases, acts, slopes)
    with pytest.raises(RuntimeError, match="float32 and float64, got x of dtype Half"):
        mlp(x.half(), [w.half() for w in weights], [b.half() for b in biases], acts, slopes)
    with pytest.raises(ValueError, match="expected one activation per layer \\(2\\), got 3"):
        fusedmlp.mlp(x, weights, biases, activation=["relu"] * 3)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        fusedmlp.mlp(x, weights, biases, activation="swish")
    # the same messages with autograd recording
    x.requires_grad_()
    with pytest.raises(RuntimeError, match=r"weights\[1\] has in_features = 6"):
        mlp(x, [weights[0], torch.randn(3, 6)], biases, acts, slopes)


@requires_cuda
def test_cuda_runs_the_op_and_autocast():
    """GPU check: the op on CUDA (per-layer kernels inside) equals the per-layer model;
    under autocast it runs in float16."""
    weights, biases = make_layers([24, 16, 8], torch.float32)
    weights = [w.detach().cuda().requires_grad_() for w in weights]
    biases = [b.detach().cuda().requires_grad_() for b in biases]
    x = torch.randn(33, 24, device="cuda", requires_grad=True)
    check_against_per_layer_and_reference(x, weights, biases, ["gelu", "identity"])
    with torch.autocast("cuda"):
        y = fusedmlp.mlp(x, weights, biases)
    assert y.dtype == torch.float16


def test_fx_graph_calling_mlp_on_linear_parameters():
    """What fuse() builds for a chain of nn.Linear layers (the seed's Net): a graph node
    calling fusedmlp.mlp on the Linears' own parameters (get_attr), per-layer activations
    as a list. Same output as the layers, the same state_dict keys, compiles fullgraph."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 4))
    graph = torch.fx.Graph()
    flat = graph.call_function(torch.flatten, (graph.placeholder("x"), 1))
    weights = [graph.get_attr(f"{i}.weight") for i in (1, 3)]
    biases = [graph.get_attr(f"{i}.bias") for i in (1, 3)]
    graph.output(graph.call_function(fusedmlp.mlp, (flat, weights, biases),
                                     {"activation": ["relu", "identity"]}))
    fused = torch.fx.GraphModule(net, graph)
    assert list(fused.state_dict()) == list(net.state_dict())
    x = torch.randn(5, 4, 5)
    torch.testing.assert_close(fused(x), net(x))
    assert "mlp" in fusedmlp_ops_run(fused, x)
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(fused, fullgraph=True, backend="aot_eager")(x), net(x))
    traced = torch.fx.symbolic_trace(fused)  # fx traces the function down to the op
    assert "torch.ops.fusedmlp.mlp.default" in traced.code
