"""The functional API: ``linear`` (any activation), ``linear_relu``,
``LinearReLUFunction`` and ``mlp`` (a whole MLP in one op), over the ops that fusedmlp._C registers (schemas in
csrc/fusedmlp.cpp), plus their fake kernels so that torch.compile and torch.export can
trace them."""
from typing import List, Optional, Sequence, Tuple, Union

import torch

from . import _C  # noqa: F401  (loading the library registers the fusedmlp ops)

__all__ = ["linear_relu", "linear", "LinearReLUFunction", "mlp", "ACTIVATIONS"]

# The activations of csrc/activation.h, by the names the ops take.
ACTIVATIONS = tuple(_C.activation_names().split(", "))

_linear_relu = torch.ops.fusedmlp.linear_relu.default
_linear_relu_backward = torch.ops.fusedmlp.linear_relu_backward.default
_linear = torch.ops.fusedmlp.linear.default
_linear_act = torch.ops.fusedmlp.linear_act.default
_mlp = torch.ops.fusedmlp.mlp.default


def check_activation(activation: Optional[str], where: str = "fusedmlp.linear") -> str:
    """The activation's name ("identity" for None); a clear error for anything else."""
    if activation is None:
        return "identity"
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {activation!r}; expected None or one of "
                         f"{', '.join(ACTIVATIONS)}")
    return activation


def linear_relu(x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``relu(x @ weight.T + bias)`` in one fused kernel, with the conventions of
    ``F.linear``: ``x`` is ``(..., in_features)``, ``weight`` ``(out_features, in_features)``,
    ``bias`` ``(out_features,)`` or None. Differentiable (autograd is registered in C++)."""
    if _is_compiling():
        return _linear_relu(x, weight, bias)
    return _entry(x, weight, bias, "relu", 0.01)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: Optional[str] = None, negative_slope: float = 0.01) -> torch.Tensor:
    """``act(x @ weight.T + bias)`` in one fused kernel, with the conventions of ``F.linear``.

    ``activation``: None (no activation, ``F.linear``: an MLP's last layer), "relu",
    "leaky_relu" (with ``negative_slope``, as ``F.leaky_relu``), "gelu" (erf, as
    ``F.gelu``), "gelu_tanh" (``F.gelu(approximate="tanh")``), "silu", "sigmoid", "tanh"
    or "relu_squared" (``F.relu(z) ** 2``). Differentiable to second order (autograd is
    registered in C++)."""
    if _is_compiling():
        return _linear_via_ops(x, weight, bias, activation, negative_slope)
    return _entry(x, weight, bias, activation, negative_slope)


def _linear_via_ops(x, weight, bias, activation, negative_slope):
    """``linear`` through the ops' Python objects (torch.ops.fusedmlp.*): what torch.compile
    traces, and where ``_C.linear_entry`` sends every call it does not take itself
    (subclasses and FakeTensors, an active TorchFunctionMode, keyword arguments, a
    negative_slope that is not a float, an unknown activation)."""
    activation = check_activation(activation)
    if activation == "identity":
        return _linear(x, weight, bias)
    if activation == "relu":
        return _linear_relu(x, weight, bias)
    return _linear_act(x, weight, bias, activation, float(negative_slope))


def _mlp_via_ops(x, weights, biases, activations, negative_slopes):
    """The mlp op's output y through its OpOverload: what torch.compile traces, and where
    ``_C.mlp_entry`` sends every call it does not take itself."""
    return _mlp(x, weights, biases, activations, negative_slopes)[0]


def mlp_output(x: torch.Tensor, weights: Sequence[torch.Tensor],
               biases: Sequence[Optional[torch.Tensor]], activations: Sequence[str],
               negative_slopes: Sequence[float]) -> torch.Tensor:
    """The ``fusedmlp::mlp`` op's output for its exact arguments (one entry per layer in
    every list; FusedMLP and fuse()'s chains call it on every forward)."""
    if _is_compiling():
        return _mlp_via_ops(x, weights, biases, activations, negative_slopes)
    return _mlp_entry(x, weights, biases, activations, negative_slopes)


# The direct entries (csrc/python_entry.cpp): plain tensors straight to the ops, ~0.7 us
# less per layer call than the OpOverload and ~3 us less per mlp call (benchmarks/NOTES.md);
# every other call to the _via_ops functions.
_entry = _C.linear_entry
_mlp_entry = _C.mlp_entry
_C.set_entry_fallbacks(torch.nn.Parameter, _linear_via_ops, _mlp_via_ops)
_is_compiling = torch.compiler.is_compiling


class LinearReLUFunction(torch.autograd.Function):
    """``LinearReLUFunction.apply(x, weight, bias=None)``: the same op as
    :func:`linear_relu` as a ``torch.autograd.Function``; its backward calls the same C++
    backward op (``fusedmlp::linear_relu_backward``)."""

    @staticmethod
    def forward(x, weight, bias=None):
        return _linear_relu(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        ctx.save_for_backward(x, weight, output)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, y = ctx.saved_tensors
        needs = ctx.needs_input_grad
        mask = [needs[0], needs[1], ctx.has_bias and needs[2]]
        grad_x, grad_w, grad_b = _linear_relu_backward(grad_y, x, weight, y, mask)
        return grad_x, grad_w, grad_b


def mlp_layer_activations(layer_count: int, activation, negative_slope,
                          last_activation: Optional[str] = None,
                          where: str = "fusedmlp.mlp") -> Tuple[List[str], List[float]]:
    """The per-layer (activations, negative_slopes) lists the ``mlp`` op takes.

    ``activation``: one name (or None) for every layer but the last, which gets
    ``last_activation`` (None: no activation, an MLP's output layer); or a list of one name
    per layer, last included (then ``last_activation`` must be None). ``negative_slope``:
    one float, or one per layer."""
    if isinstance(activation, (list, tuple)):
        if last_activation is not None:
            raise ValueError(f"{where}: give last_activation only with a single activation "
                             "name; a list of activations already names the last layer's")
        if len(activation) != layer_count:
            raise ValueError(f"{where}: expected one activation per layer ({layer_count}), "
                             f"got {len(activation)}")
        names = [check_activation(a, where) for a in activation]
    else:
        names = ([check_activation(activation, where)] * (layer_count - 1)
                 + [check_activation(last_activation, where)])
    if isinstance(negative_slope, (list, tuple)):
        if len(negative_slope) != layer_count:
            raise ValueError(f"{where}: expected one negative_slope per layer ({layer_count}), "
                             f"got {len(negative_slope)}")
        slopes = [float(s) for s in negative_slope]
    else:
        slopes = [float(negative_slope)] * layer_count
    return names, slopes


def mlp(x: torch.Tensor, weights: Sequence[torch.Tensor],
        biases: Optional[Sequence[Optional[torch.Tensor]]] = None,
        activation: Union[Optional[str], Sequence[Optional[str]]] = "relu",
        negative_slope: Union[float, Sequence[float]] = 0.01,
        last_activation: Optional[str] = None) -> torch.Tensor:
    """A whole MLP in one op: ``h = x``, then for each layer
    ``h = act(h @ weights[i].T + biases[i])``; returns the last ``h``.

    ``weights[i]`` is ``(out_i, in_i)`` with ``in_0 = x.shape[-1]`` and ``in_i = out_{i-1}``;
    ``biases`` (None: no biases) holds one tensor or None per layer. ``activation`` (any
    name of :func:`fusedmlp.linear`) applies to every layer but the last, which gets
    ``last_activation`` (default None: plain linear); or pass a list of one activation per
    layer. ``negative_slope``: leaky_relu's, one float or one per layer.

    Forward and backward are one C++ call each with one autograd node for the stack (on
    the CPU the batch streams through all layers in cache-sized row blocks); it keeps for
    backward what per-layer autograd keeps. Differentiable to second order. The same
    function as ``FusedMLP`` runs."""
    weights = list(weights)
    biases = [None] * len(weights) if biases is None else list(biases)
    names, slopes = mlp_layer_activations(len(weights), activation, negative_slope,
                                          last_activation)
    return mlp_output(x, weights, biases, names, slopes)


def _saves_pre_activation(activation: str, negative_slope: float) -> bool:
    """Whether backward of this activation reads z (csrc/activation.h's saved_for)."""
    if activation == "leaky_relu":
        return not negative_slope >= 0
    return activation in ("gelu", "gelu_tanh", "silu", "relu_squared")


def _forward_fake(x, weight, bias=None):
    torch._check(x.dim() >= 1 and weight.dim() == 2,
                 lambda: "fusedmlp: expected x (..., in_features) and a 2-D weight")
    torch._check(x.shape[-1] == weight.shape[1],
                 lambda: f"fusedmlp: expected x of shape (..., {weight.shape[1]}), "
                         f"got {tuple(x.shape)}")
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _backward_fake(x, weight, output_mask):
    grad_x = x.new_empty(x.shape) if output_mask[0] else None
    grad_w = weight.new_empty(weight.shape) if output_mask[1] else None
    grad_b = weight.new_empty((weight.shape[0],)) if output_mask[2] else None
    return grad_x, grad_w, grad_b


torch.library.register_fake("fusedmlp::linear_relu", _forward_fake)
torch.library.register_fake("fusedmlp::linear", _forward_fake)
torch.library.register_fake(
    "fusedmlp::linear_act",
    lambda x, weight, bias=None, activation="identity", negative_slope=0.01:
        _forward_fake(x, weight, bias))


@torch.library.register_fake("fusedmlp::linear_act_pre")
def _linear_act_pre_fake(x, weight, bias, activation, negative_slope):
    y = _forward_fake(x, weight, bias)
    return y, torch.empty_like(y)


torch.library.register_fake(
    "fusedmlp::linear_act_backward",
    lambda grad_y, x, weight, saved, activation, negative_slope, output_mask:
        _backward_fake(x, weight, output_mask))
torch.library.register_fake(
    "fusedmlp::activation_grad",
    lambda grad, saved, activation, negative_slope, order: torch.empty_like(grad))
torch.library.register_fake(
    "fusedmlp::linear_relu_backward",
    lambda grad_y, x, weight, y, output_mask: _backward_fake(x, weight, output_mask))
torch.library.register_fake(
    "fusedmlp::linear_backward",
    lambda grad_y, x, weight, output_mask: _backward_fake(x, weight, output_mask))


@torch.library.register_fake("fusedmlp::mlp")
def _mlp_fake(x, weights, biases, activations, negative_slopes):
    torch._check(len(weights) >= 1, lambda: "fusedmlp.mlp: expected at least one layer")
    torch._check(len(biases) == len(weights) and len(activations) == len(weights)
                 and len(negative_slopes) == len(weights),
                 lambda: "fusedmlp.mlp: expected one bias, activation and negative_slope "
                         "per weight")
    h, hidden, pre = x, [], []
    for i, (weight, activation, slope) in enumerate(zip(weights, activations, negative_slopes)):
        h = _forward_fake(h, weight)
        if _saves_pre_activation(activation, slope):
            pre.append(torch.empty_like(h))
        if i + 1 < len(weights):
            hidden.append(h)
    return h, hidden, pre


@torch.library.register_fake("fusedmlp::mlp_backward")
def _mlp_backward_fake(grad_y, x, weights, y, hidden, pre, activations, negative_slopes,
                       output_mask):
    count = len(weights)
    grad_x = x.new_empty(x.shape) if output_mask[0] else None
    grad_w = [w.new_empty(w.shape) for w, m in zip(weights, output_mask[1:1 + count]) if m]
    grad_b = [w.new_empty((w.shape[0],)) for w, m in zip(weights, output_mask[1 + count:]) if m]
    return grad_x, grad_w, grad_b
