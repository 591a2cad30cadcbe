"""The autograd node of a layer (csrc/autograd.cpp's LayerBackward, a plain Node like ATen's
generated ones): what autograd users rely on besides the gradients themselves, which the
other test files check. Saved tensors are checked for in-place changes and freed after
backward, saved-tensor hooks see them, compiled autograd traces the node, and a missing
bias has no gradient edge."""
import pytest
import torch

import fusedmlp
from torch._dynamo import compiled_autograd

ACTIVATIONS = ["relu", "gelu", "sigmoid", None]


def layer(activation, bias=True, dtype=torch.float64):
    torch.manual_seed(0)
    return fusedmlp.FusedLinear(16, 8, bias=bias, activation=activation, dtype=dtype)


def inputs(dtype=torch.float64):
    return torch.randn(4, 16, dtype=dtype, requires_grad=True)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_node_edges_name_and_gradients(activation, bias):
    m, x = layer(activation, bias), inputs()
    y = m(x)
    node = y.grad_fn
    assert node.name() == "fusedmlp::LayerBackward"
    # x, weight, bias: a missing bias has an empty edge (None), the others their leaves'
    edges = node.next_functions
    assert len(edges) == 3
    assert edges[0][0].variable is x and edges[1][0].variable is m.weight
    if bias:
        assert edges[2][0].variable is m.bias
    else:
        assert edges[2] == (None, 0)
    grads = torch.autograd.grad(y.square().sum(), [x] + list(m.parameters()))
    z = torch.nn.functional.linear(x, m.weight, m.bias)
    act = {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "sigmoid": torch.sigmoid,
           None: lambda t: t}[activation]
    expected = torch.autograd.grad(act(z).square().sum(), [x] + list(m.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_only_the_wanted_gradients_are_computed(activation):
    m, x = layer(activation), inputs()
    m.weight.requires_grad_(False)
    (grad_x, grad_b) = torch.autograd.grad(m(x).sum(), [x, m.bias])
    assert m.weight.grad is None
    assert grad_x.shape == x.shape and grad_b.shape == m.bias.shape


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_saved_tensors_are_freed_after_backward(activation):
    m, x = layer(activation), inputs()
    y = m(x)
    y.sum().backward(retain_graph=True)
    y.sum().backward()  # retained: a second pass works and accumulates
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()


@pytest.mark.parametrize("activation", ["relu", "gelu", None])
def test_in_place_change_of_a_saved_tensor_is_an_error(activation):
    m, x = layer(activation), inputs()
    x2 = x * 1.0  # a non-leaf input that the node saves
    y = m(x2)
    x2.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_in_place_change_of_the_saved_output_is_an_error():
    m, x = layer("relu"), inputs()
    y = m(x)  # relu saves y itself
    y.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("activation,saved", [("relu", 3), ("gelu", 3), (None, 2)])
def test_saved_tensor_hooks_see_what_the_node_saves(activation, saved):
    m, x = layer(activation), inputs()
    packed, unpacked = [], []

    def pack(t):
        packed.append(t.shape)
        return t

    def unpack(t):
        unpacked.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        y = m(x)
    # x, weight, and y (relu) or z (gelu); identity saves no third tensor
    assert len(packed) == saved
    y.sum().backward()
    assert len(unpacked) == saved


def check_compiled_autograd(loss_fn, params):
    """loss_fn().backward() under compiled autograd gives the eager gradients of params,
    and the backward graph it compiles calls our backward op."""
    expected = torch.autograd.grad(loss_fn(), params)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    with compiled_autograd._enable(torch.compile(backend=backend, fullgraph=True)):
        loss_fn().backward()
    for p, want in zip(params, expected):
        torch.testing.assert_close(p.grad, want)
    code = "\n".join(gm.code for gm in graphs)
    assert "fusedmlp" in code, code


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_compiled_autograd_traces_the_node(activation, bias):
    m, x = layer(activation, bias), inputs()
    check_compiled_autograd(lambda: m(x).square().sum(), [x] + list(m.parameters()))


def test_anomaly_mode_names_the_node():
    m, x = layer("relu"), inputs()
    with torch.autograd.detect_anomaly(check_nan=True):
        y = m(x)
        grad = torch.full_like(y, float("nan"))
        with pytest.raises(RuntimeError, match="LayerBackward"):
            y.backward(grad)


def mlp_parameters(bias, dtype=torch.float64):
    torch.manual_seed(0)
    sizes = [16, 12, 8, 4]
    weights = [torch.randn(o, i, dtype=dtype, requires_grad=True)
               for i, o in zip(sizes, sizes[1:])]
    biases = [torch.randn(o, dtype=dtype, requires_grad=True) if bias else None
              for o in sizes[1:]]
    return weights, biases


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_mlp_node_edges_and_compiled_autograd(activation, bias):
    weights, biases = mlp_parameters(bias)
    x = inputs()
    y = fusedmlp.mlp(x, weights, biases, activation=activation)
    assert y.grad_fn.name() == "fusedmlp::MlpBackward"
    # x, each weight, each bias (an empty edge where a layer has none)
    edges = y.grad_fn.next_functions
    assert len(edges) == 1 + 2 * len(weights)
    assert edges[0][0].variable is x
    for edge, b in zip(edges[1 + len(weights):], biases):
        assert (edge == (None, 0)) if b is None else (edge[0].variable is b)
    check_compiled_autograd(
        lambda: fusedmlp.mlp(x, weights, biases, activation=activation).square().sum(),
        [x] + weights + [b for b in biases if b is not None])


def test_mlp_node_saved_tensors_are_checked_and_freed():
    weights, biases = mlp_parameters(True)
    x = inputs()
    y = fusedmlp.mlp(x, weights, biases, activation="relu")
    y.sum().backward(retain_graph=True)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.sum().backward()
    y = fusedmlp.mlp(x, weights, biases, activation="relu")
    with torch.no_grad():
        weights[1].add_(1.0)  # saved by the node: backward must refuse
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
