"""The functional API: ``linear`` (any activation), ``linear_relu`` and
``LinearReLUFunction``, over the ops that fusedmlp._C registers (schemas in
csrc/fusedmlp.cpp), plus their fake kernels so that torch.compile and torch.export can
trace them."""
from typing import Optional

import torch

from . import _C  # noqa: F401  (loading the library registers the fusedmlp ops)

__all__ = ["linear_relu", "linear", "LinearReLUFunction", "ACTIVATIONS"]

# The activations of csrc/activation.h, by the names the ops take.
ACTIVATIONS = tuple(_C.activation_names().split(", "))

_linear_relu = torch.ops.fusedmlp.linear_relu.default
_linear_relu_backward = torch.ops.fusedmlp.linear_relu_backward.default
_linear = torch.ops.fusedmlp.linear.default
_linear_act = torch.ops.fusedmlp.linear_act.default


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
    return _linear_relu(x, weight, bias)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: Optional[str] = None, negative_slope: float = 0.01) -> torch.Tensor:
    """``act(x @ weight.T + bias)`` in one fused kernel, with the conventions of ``F.linear``.

    ``activation``: None (no activation, ``F.linear``: an MLP's last layer), "relu",
    "leaky_relu" (with ``negative_slope``, as ``F.leaky_relu``), "gelu" (erf, as
    ``F.gelu``), "gelu_tanh" (``F.gelu(approximate="tanh")``), "silu", "sigmoid", "tanh"
    or "relu_squared" (``F.relu(z) ** 2``). Differentiable to second order (autograd is
    registered in C++)."""
    activation = check_activation(activation)
    if activation == "identity":
        return _linear(x, weight, bias)
    if activation == "relu":
        return _linear_relu(x, weight, bias)
    return _linear_act(x, weight, bias, activation, float(negative_slope))


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
