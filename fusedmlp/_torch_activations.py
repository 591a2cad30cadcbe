"""Torch's own activation modules, functions and Tensor methods that fusedmlp's kernels
compute, and how to read which activation (and arguments) one of them applies: what
``fuse()`` folds into the Linear before it and ``FusedMLP.from_sequential`` accepts."""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_NEGATIVE_SLOPE = 0.01  # F.leaky_relu's and nn.LeakyReLU's


@dataclass(frozen=True)
class Activation:
    """An activation as ``fusedmlp.linear`` takes it."""

    name: str  # "relu", "gelu", "gelu_tanh", "silu", "leaky_relu", "sigmoid" or "tanh"
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE  # leaky_relu's; ignored by the others

    def __str__(self) -> str:
        if self.name == "leaky_relu":
            return f"leaky_relu(negative_slope={self.negative_slope:g})"
        return self.name


@dataclass(frozen=True)
class ActivationCall:
    """What one module call, function call or method call of an activation does."""

    kind: str  # its display name: "ReLU", "GELU", ... (for messages)
    activation: Optional[Activation]  # None when its arguments cannot be honoured
    in_place: bool  # whether it overwrites its input
    unsupported: str = ""  # why activation is None


@dataclass(frozen=True)
class _Form:
    """How a call passes its arguments after the input tensor: ``positional`` may come by
    position (in this order) or by keyword, ``keyword_only`` by keyword only. For modules,
    ``positional`` names the attributes that hold the arguments."""

    kind: str  # the display name
    activation: str  # the fused activation's name (gelu's approximate may change it)
    positional: Tuple[str, ...] = ()
    keyword_only: Tuple[str, ...] = ()
    in_place: bool = False  # a trailing-underscore form


def _form(kind, activation, *positional, keyword_only=(), in_place=False) -> _Form:
    return _Form(kind, activation, tuple(positional), tuple(keyword_only), in_place)


_RELU, _GELU, _SILU, _LEAKY = ("ReLU", "relu"), ("GELU", "gelu"), ("SiLU", "silu"), \
    ("LeakyReLU", "leaky_relu")
_SIGMOID, _TANH = ("Sigmoid", "sigmoid"), ("Tanh", "tanh")

# torch.fx call_function targets and call_method names. F.relu_ is torch.relu_; F.gelu is a
# builtin whose approximate is keyword-only; F.sigmoid and F.tanh call the Tensor methods,
# so fx records them as the methods.
CALL_FORMS: Dict[object, _Form] = {
    torch.relu: _form(*_RELU), torch.relu_: _form(*_RELU, in_place=True),
    F.relu: _form(*_RELU, "inplace"),
    "relu": _form(*_RELU), "relu_": _form(*_RELU, in_place=True),
    F.gelu: _form(*_GELU, keyword_only=("approximate",)),
    F.silu: _form(*_SILU, "inplace"),
    F.leaky_relu: _form(*_LEAKY, "negative_slope", "inplace"),
    F.leaky_relu_: _form(*_LEAKY, "negative_slope", in_place=True),
    torch.sigmoid: _form(*_SIGMOID), torch.sigmoid_: _form(*_SIGMOID, in_place=True),
    torch.special.expit: _form(*_SIGMOID),
    "sigmoid": _form(*_SIGMOID), "sigmoid_": _form(*_SIGMOID, in_place=True),
    torch.tanh: _form(*_TANH), torch.tanh_: _form(*_TANH, in_place=True),
    "tanh": _form(*_TANH), "tanh_": _form(*_TANH, in_place=True),
}
# Module types (exactly these: a subclass may change forward) and the attributes holding
# their arguments.
MODULE_FORMS: Dict[type, _Form] = {
    nn.ReLU: _form(*_RELU, "inplace"),
    nn.GELU: _form(*_GELU, "approximate"),
    nn.SiLU: _form(*_SILU, "inplace"),
    nn.LeakyReLU: _form(*_LEAKY, "negative_slope", "inplace"),
    nn.Sigmoid: _form(*_SIGMOID),
    nn.Tanh: _form(*_TANH),
}
_GELU_APPROXIMATIONS = {"none": "gelu", "tanh": "gelu_tanh"}


def call_activation(target, args: tuple, kwargs: dict) -> Optional[ActivationCall]:
    """The activation a call of ``target`` (a function, or a Tensor method's name) with
    ``args`` after its input and ``kwargs`` applies; None if ``target`` is none of ours."""
    form = CALL_FORMS.get(target)
    if form is None:
        return None
    if len(args) > len(form.positional):
        return _unsupported(form, f"passes {len(args)} arguments after the input, more than "
                                  f"the {len(form.positional)} fuse() knows")
    arguments = dict(zip(form.positional, args))
    for key, value in kwargs.items():
        if key not in form.positional + form.keyword_only:
            return _unsupported(form, f"passes {key}=, which the fused layer cannot honour")
        arguments[key] = value
    return _read(form, arguments)


def module_activation(module: nn.Module) -> Optional[ActivationCall]:
    """The activation ``module`` applies, or None if it is not one of ``MODULE_FORMS``."""
    form = MODULE_FORMS.get(type(module))
    if form is None:
        return None
    return _read(form, {name: getattr(module, name) for name in form.positional})


def _read(form: _Form, arguments: dict) -> ActivationCall:
    name, slope, in_place = form.activation, DEFAULT_NEGATIVE_SLOPE, form.in_place
    for key, value in arguments.items():
        if not isinstance(value, (bool, int, float, str)):
            return _unsupported(form, f"takes a {key} computed in forward, not a constant")
        if key == "inplace" and isinstance(value, bool):
            in_place = in_place or value
        elif key == "approximate" and value in _GELU_APPROXIMATIONS:
            name = _GELU_APPROXIMATIONS[value]
        elif (key == "negative_slope" and isinstance(value, (int, float))
              and not isinstance(value, bool)):
            slope = float(value)
        else:
            return _unsupported(form, f"takes {key}={value!r}, for which fusedmlp has no kernel"
                                + (" (it has 'none' and 'tanh')" if key == "approximate" else ""))
    return ActivationCall(form.kind, Activation(name, slope), in_place)


def _unsupported(form: _Form, why: str) -> ActivationCall:
    return ActivationCall(form.kind, None, form.in_place, f"its {form.kind} {why}")
