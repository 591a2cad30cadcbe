"""The direct entries of fusedmlp.linear / linear_relu and of the whole-MLP op
(csrc/python_entry.cpp): plain tensors go straight to the op, everything else through the
OpOverloads (ops._linear_via_ops, ops._mlp_via_ops), and either way the caller gets the
same op: same values, same autograd, what __torch_function__ subclasses,
TorchFunctionModes, the profiler and torch.compile see."""
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

import fusedmlp
from fusedmlp import _C, ops
from fusedmlp.ops import ACTIVATIONS

OPS = {torch.ops.fusedmlp.linear_relu.default, torch.ops.fusedmlp.linear.default,
       torch.ops.fusedmlp.linear_act.default}


def spies(calls):
    def spy_on(fn):
        def spy(*args, **kwargs):
            calls.append((fn.__name__, args, kwargs))
            return fn(*args, **kwargs)
        return spy
    return spy_on(ops._linear_via_ops), spy_on(ops._mlp_via_ops)


@pytest.fixture
def fallback_calls():
    """The calls the entries hand to their fallbacks while the test runs."""
    calls = []
    _C.set_entry_fallbacks(torch.nn.Parameter, *spies(calls))
    try:
        yield calls
    finally:
        _C.set_entry_fallbacks(torch.nn.Parameter, ops._linear_via_ops, ops._mlp_via_ops)


def inputs(requires_grad=False):
    torch.manual_seed(0)
    x = torch.randn(3, 17, requires_grad=requires_grad)
    return x, torch.nn.Parameter(torch.randn(5, 17)), torch.nn.Parameter(torch.randn(5))


def via_ops(x, w, b, activation, slope=0.01):
    return ops._linear_via_ops(x, w, b, activation, slope)


@pytest.mark.parametrize("activation", [None, *ACTIVATIONS])
def test_plain_tensors_take_the_entry_with_the_ops_values(fallback_calls, activation):
    x, w, b = inputs()
    for bias in (b, None):
        y = fusedmlp.linear(x, w, bias, activation, 0.2)
        assert torch.equal(y, via_ops(x, w, bias, activation, 0.2))
    assert torch.equal(fusedmlp.linear_relu(x, w, b), via_ops(x, w, b, "relu"))
    assert fallback_calls == []


def test_entry_keeps_autograd_and_every_gradient(fallback_calls):
    x, w, b = inputs(requires_grad=True)
    y = fusedmlp.linear(x, w, b, "gelu")
    assert y.grad_fn is not None and y.grad_fn.name() == "fusedmlp::LayerBackward"
    grads = torch.autograd.grad(y.sum(), (x, w, b))
    expected = torch.autograd.grad(via_ops(x, w, b, "gelu").sum(), (x, w, b))
    for g, e in zip(grads, expected):
        assert torch.equal(g, e)
    assert fallback_calls == []


def test_entry_holds_no_reference_to_its_arguments(fallback_calls):
    x, w, b = inputs()
    before = [sys.getrefcount(t) for t in (x, w, b)]
    for _ in range(100):
        fusedmlp.linear_relu(x, w, b)
    assert [sys.getrefcount(t) for t in (x, w, b)] == before
    y = fusedmlp.linear_relu(x, w, b)
    assert sys.getrefcount(y) == 2  # y and getrefcount's argument: no extra reference


class LoggingTensor(torch.Tensor):
    """A subclass whose __torch_function__ records what it is called with."""
    seen = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_subclass_goes_to_the_ops_and_their_torch_function(fallback_calls):
    x, w, b = inputs()
    LoggingTensor.seen.clear()
    y = fusedmlp.linear_relu(x.as_subclass(LoggingTensor), w, b)
    assert torch.ops.fusedmlp.linear_relu.default in LoggingTensor.seen
    assert type(y) is LoggingTensor
    assert torch.equal(y.as_subclass(torch.Tensor), via_ops(x, w, b, "relu"))
    assert len(fallback_calls) == 1


def test_torch_function_mode_sees_the_op(fallback_calls):
    seen = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))
    x, w, b = inputs()
    with Recorder():
        fusedmlp.linear(x, w, b)
        fusedmlp.linear(x, w, b, "silu")
    assert [f for f in seen if f in OPS] == [torch.ops.fusedmlp.linear.default,
                                             torch.ops.fusedmlp.linear_act.default]
    assert len(fallback_calls) == 2


def test_device_context_reaches_the_ops(fallback_calls):
    """torch.device("meta") as a context manager is a TorchFunctionMode: the call goes to
    the OpOverloads and returns a meta tensor of the right shape."""
    with torch.device("meta"):
        x, w = torch.empty(4, 9), torch.empty(6, 9)
        y = fusedmlp.linear_relu(x, w)
    assert y.device.type == "meta" and y.shape == (4, 6)
    assert len(fallback_calls) == 1


def test_other_arguments_go_to_the_fallback(fallback_calls):
    x, w, b = inputs()
    # An int slope and an activation name the entry does not know are the fallback's.
    y = fusedmlp.linear(x, w, b, "leaky_relu", 0)
    assert torch.equal(y, via_ops(x, w, b, "leaky_relu", 0.0))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        fusedmlp.linear(x, w, b, "swish")
    with pytest.raises(ValueError, match="unknown activation 3"):
        fusedmlp.linear(x, w, b, 3)
    assert len(fallback_calls) == 3
    # Keyword arguments to the entry itself.
    assert torch.equal(_C.linear_entry(x, w, b, activation="relu", negative_slope=0.01),
                       via_ops(x, w, b, "relu"))
    assert len(fallback_calls) == 4


def test_entry_errors_are_the_ops_errors(fallback_calls):
    x, w, b = inputs()
    with pytest.raises(RuntimeError, match="weight"):
        fusedmlp.linear_relu(x, w.t(), b)  # (17, 5): in_features do not match
    with pytest.raises(RuntimeError, match="bias"):
        fusedmlp.linear_relu(x, w, torch.randn(4))
    with pytest.raises(RuntimeError, match="dtype|float"):
        fusedmlp.linear_relu(x.double(), w, b)
    assert fallback_calls == []
    with pytest.raises((TypeError, RuntimeError)):
        fusedmlp.linear_relu([[1.0] * 17], w, b)  # not a tensor: the OpOverload's error
    assert len(fallback_calls) == 1


def test_profiler_records_the_op_from_the_entry(fallback_calls):
    x, w, b = inputs()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fusedmlp.linear_relu(x, w, b)
    assert "fusedmlp::linear_relu" in {e.name for e in prof.events()}
    assert fallback_calls == []


def test_compile_traces_the_ops_not_the_entry():
    torch._dynamo.reset()
    x, w, b = inputs()
    seen = []

    def backend(gm, example_inputs):
        seen.extend(n.target for n in gm.graph.nodes if n.op == "call_function")
        return gm
    fn = torch.compile(lambda x: fusedmlp.linear(fusedmlp.linear_relu(x, w, b), w[:, :5]),
                       backend=backend, fullgraph=True)
    assert torch.equal(fn(x), fusedmlp.linear(fusedmlp.linear_relu(x, w, b), w[:, :5]))
    assert torch.ops.fusedmlp.linear_relu.default in seen
    assert torch.ops.fusedmlp.linear.default in seen


def test_set_entry_fallbacks_checks_its_arguments():
    with pytest.raises(ValueError, match="type"):
        _C.set_entry_fallbacks(3, ops._linear_via_ops, ops._mlp_via_ops)
    with pytest.raises(ValueError, match="callable"):
        _C.set_entry_fallbacks(torch.nn.Parameter, 3, ops._mlp_via_ops)


# The whole-MLP op's entry: fusedmlp.mlp, FusedMLP and fuse()'s chains call it.
def mlp_args(requires_grad=False, biases=(True, False, True)):
    torch.manual_seed(0)
    sizes = [17, 9, 6, 4]
    weights = [torch.nn.Parameter(torch.randn(o, i)) for i, o in zip(sizes, sizes[1:])]
    bs = [torch.nn.Parameter(torch.randn(o)) if keep else None
          for o, keep in zip(sizes[1:], biases)]
    return (torch.randn(3, 17, requires_grad=requires_grad), weights, bs,
            ["relu", "gelu", "identity"], [0.01, 0.01, 0.01])


def test_mlp_plain_tensors_take_the_entry(fallback_calls):
    x, weights, biases, acts, slopes = mlp_args(requires_grad=True)
    y = ops.mlp_output(x, weights, biases, acts, slopes)
    assert y.grad_fn.name() == "fusedmlp::MlpBackward"
    y_ops = ops._mlp_via_ops(x, weights, biases, acts, slopes)
    assert torch.equal(y, y_ops)
    params = [x, *weights, *(b for b in biases if b is not None)]
    for g, e in zip(torch.autograd.grad(y.sum(), params),
                    torch.autograd.grad(y_ops.sum(), params)):
        assert torch.equal(g, e)
    # Tuples as well as lists; fusedmlp.mlp and FusedMLP through the entry.
    assert torch.equal(ops.mlp_output(x, tuple(weights), tuple(biases), tuple(acts),
                                      tuple(slopes)), y)
    assert torch.equal(fusedmlp.mlp(x, weights, biases, activation=["relu", "gelu", None]), y)
    model = fusedmlp.FusedMLP(17, [9], 4)
    layers = [m for m in model if hasattr(m, "weight")]
    expected = ops._mlp_via_ops(x, [m.weight for m in layers], [m.bias for m in layers],
                                ["relu", "identity"], [0.01, 0.01])
    assert torch.equal(model(x), expected)
    assert fallback_calls == []


def test_mlp_entry_holds_no_reference_to_its_arguments(fallback_calls):
    x, weights, biases, acts, slopes = mlp_args()
    every = [x, *weights, *biases, *acts]
    before = [sys.getrefcount(t) for t in every]
    for _ in range(100):
        ops.mlp_output(x, weights, biases, acts, slopes)
    assert [sys.getrefcount(t) for t in every] == before
    assert fallback_calls == []


def test_mlp_other_arguments_go_to_the_ops(fallback_calls):
    x, weights, biases, acts, slopes = mlp_args()
    expected = ops._mlp_via_ops(x, weights, biases, acts, slopes)
    LoggingTensor.seen.clear()
    y = ops.mlp_output(x.as_subclass(LoggingTensor), weights, biases, acts, slopes)
    assert torch.ops.fusedmlp.mlp.default in LoggingTensor.seen
    assert torch.equal(y.as_subclass(torch.Tensor), expected)
    weights_sub = [weights[0].detach().as_subclass(LoggingTensor), *weights[1:]]
    ops.mlp_output(x, weights_sub, biases, acts, slopes)
    assert torch.equal(ops.mlp_output(x, weights, biases, acts, [0.01, 0, 0.01]), expected)
    assert len(fallback_calls) == 3
    with pytest.raises(RuntimeError, match="activation"):
        ops.mlp_output(x, weights, biases, ["relu", "swish", "identity"], slopes)
    with pytest.raises(RuntimeError, match="one bias \\(or None\\) per weight"):
        ops.mlp_output(x, weights[:2], biases, acts, slopes)  # lengths differ: the op's check
    assert len(fallback_calls) == 3


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_jit_trace_records_the_op_from_the_entry(fallback_calls):
    """The JIT tracer is a dispatch key: the entry's call is recorded as the op."""
    layer = fusedmlp.FusedLinearReLU(8, 4)
    traced = torch.jit.trace(layer, torch.randn(2, 8))
    assert "fusedmlp::linear_relu" in [n.kind() for n in traced.graph.nodes()]
    x = torch.randn(3, 8)
    assert torch.equal(traced(x), layer(x))
    assert fallback_calls == []
