"""Modules: ``FusedLinearReLU`` (a drop-in for ``nn.Linear`` followed by ``nn.ReLU``),
``FusedLinear`` (``nn.Linear`` on fusedmlp's kernels, with an optional fused activation)
and ``FusedMLP`` built from them."""
from collections import OrderedDict
from typing import List, Optional, Sequence

import torch
from torch import nn

from ._torch_activations import DEFAULT_NEGATIVE_SLOPE, module_activation
from .ops import check_activation, linear, linear_relu
from .ops import mlp_output

__all__ = ["FusedLinearReLU", "FusedLinear", "FusedMLP"]


class _LinearParameters(nn.Module):
    """``nn.Linear``'s parameters (names, shapes, default initialisation, repr), so that
    ``state_dict`` s load both ways; subclasses define ``forward``."""

    __constants__ = ["in_features", "out_features"]

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    # nn.Linear's own initialisation, so both layers draw the same numbers from the RNG.
    reset_parameters = nn.Linear.reset_parameters
    extra_repr = nn.Linear.extra_repr

    @classmethod
    def from_linear(cls, linear: nn.Linear):
        """This layer over ``linear``'s parameters. It shares the Parameter objects (no
        copy), so optimizers holding them keep working."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        # Built on the meta device: no memory and no RNG draws for parameters we replace.
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device="meta", dtype=linear.weight.dtype)
        layer.weight = linear.weight
        layer.bias = linear.bias
        return layer.train(linear.training)

    def to_linear(self) -> nn.Linear:
        """The ``nn.Linear`` over this layer's parameters (shared, not copied); for
        ``FusedLinearReLU`` the ReLU is not part of it."""
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device="meta", dtype=self.weight.dtype)
        layer.weight = self.weight
        layer.bias = self.bias
        return layer.train(self.training)


class FusedLinearReLU(_LinearParameters):
    """``relu(nn.Linear(in_features, out_features, bias)(x))`` in one fused kernel.

    Parameters have exactly ``nn.Linear``'s names, shapes and default initialisation (the
    same RNG draws), so ``state_dict`` s load both ways. ``from_linear(linear)`` builds it
    over an existing ``nn.Linear``'s parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_relu(x, self.weight, self.bias)


class FusedLinear(_LinearParameters):
    """``act(nn.Linear(in_features, out_features, bias)(x))`` on fusedmlp's kernels, the
    activation fused into the GEMM (``activation``: see :func:`fusedmlp.linear`; None, the
    default, is plain ``nn.Linear``: an MLP's last layer). Same parameters, initialisation
    and ``from_linear`` as ``FusedLinearReLU``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: Optional[str] = None, negative_slope: float = 0.01,
                 device=None, dtype=None) -> None:
        self.activation = check_activation(activation, "FusedLinear")
        self.negative_slope = float(negative_slope)
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, activation: Optional[str] = None,
                    negative_slope: float = 0.01) -> "FusedLinear":
        """This layer (with ``activation``) over ``linear``'s parameters, shared (no copy)."""
        layer = super().from_linear(linear)
        layer.activation = check_activation(activation, "FusedLinear")
        layer.negative_slope = float(negative_slope)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.activation, self.negative_slope)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.activation != "identity":
            text += f", activation={self.activation}"
            if self.activation == "leaky_relu":
                text += f", negative_slope={self.negative_slope}"
        return text


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"FusedMLP: {name} must be a positive int, got {value!r}")


# The torch module of each activation (relu_squared has none).
_MODULES = {
    "identity": lambda slope: nn.Identity(),
    "relu": lambda slope: nn.ReLU(),
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "gelu": lambda slope: nn.GELU(),
    "gelu_tanh": lambda slope: nn.GELU(approximate="tanh"),
    "silu": lambda slope: nn.SiLU(),
    "sigmoid": lambda slope: nn.Sigmoid(),
    "tanh": lambda slope: nn.Tanh(),
}


def _activation_of(module: nn.Module):
    """(name, negative_slope) of an activation module FusedMLP can run, else None."""
    if type(module) is nn.Identity:
        return "identity", DEFAULT_NEGATIVE_SLOPE
    call = module_activation(module)
    if call is None or call.activation is None:  # not an activation, or GELU(approximate="?")
        return None
    return call.activation.name, call.activation.negative_slope


class FusedMLP(nn.Sequential):
    """``Linear -> activation`` for each entry of ``hidden_features``, then a final
    ``Linear`` without activation, all on fusedmlp's kernels: the same function (and, from
    the same seed, the same initial weights) as
    ``nn.Sequential(nn.Linear(in, h0), nn.ReLU(), ..., nn.Linear(h_last, out))`` (ReLU or
    the module of ``activation``: see :func:`fusedmlp.linear` for the names).

    It is that Sequential's layout: the fused layer at each Linear's index
    (``FusedLinearReLU`` for ReLU, else ``FusedLinear`` with ``activation``), then
    ``nn.Identity`` at each activation's index (it runs inside the layer before it), then
    ``FusedLinear``; just what ``fusedmlp.fuse`` makes of the plain Sequential. So its
    ``state_dict`` keys are the plain model's (``0.weight``, ``2.weight``, ...): each loads
    the other's directly. ``layers`` lists the layers with weights; ``to_sequential()`` /
    ``from_sequential(seq)`` convert to and from the plain Sequential, sharing Parameters.

    Its forward runs the whole stack as one op (:func:`fusedmlp.mlp`: one C++ call each
    way, one autograd node) while the modules are that plain chain; once a slot holds
    another module, or a hook must see the layers' calls, the layers run one by one.
    """

    def __init__(self, in_features: int, hidden_features: Sequence[int], out_features: int,
                 bias: bool = True, activation: str = "relu", negative_slope: float = 0.01,
                 device=None, dtype=None) -> None:
        if activation is None:
            raise ValueError('FusedMLP: activation must be a name ("relu", "gelu", ...); '
                             'use "identity" for none')
        activation = check_activation(activation, "FusedMLP")
        _check_positive_int("in_features", in_features)
        _check_positive_int("out_features", out_features)
        if not isinstance(hidden_features, (list, tuple)):
            raise TypeError("FusedMLP: hidden_features must be a list of ints (e.g. [128]), "
                            f"got {type(hidden_features).__name__}")
        for i, width in enumerate(hidden_features):
            _check_positive_int(f"hidden_features[{i}]", width)
        sizes = [in_features, *hidden_features, out_features]
        # Created in nn.Sequential's order, so the RNG draws match the plain model's.
        factory_kwargs = {"bias": bias, "device": device, "dtype": dtype}
        modules: List[nn.Module] = []
        for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
            if activation == "relu":
                layer = FusedLinearReLU(n_in, n_out, **factory_kwargs)
            else:
                layer = FusedLinear(n_in, n_out, activation=activation,
                                    negative_slope=negative_slope, **factory_kwargs)
            modules += [layer, nn.Identity()]
        modules.append(FusedLinear(sizes[-2], sizes[-1], **factory_kwargs))
        super().__init__(*modules)
        self.activation = activation
        self.negative_slope = float(negative_slope)
        self.in_features = in_features
        self.hidden_features: List[int] = list(hidden_features)
        self.out_features = out_features
        self.register_load_state_dict_pre_hook(_load_layers_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The whole stack as one op (one C++ call each way, one autograd node) while the
        # modules are the plain chain; per layer (nn.Sequential) once a slot holds
        # something else or a hook must see the layers' calls.
        chain = self._plain_chain()
        if chain is None:
            return super().forward(x)
        return mlp_output(x, *chain)

    def _plain_chain(self):
        """(weights, biases, activations, negative_slopes) of the ``mlp`` op when the
        modules are fused layers (exactly FusedLinearReLU / FusedLinear) with
        ``nn.Identity`` between them and no hooks on any of them (nor global module hooks),
        else None. Runs on every call (~2 us), so it reads ``_parameters`` directly
        (``module.weight`` goes through ``Module.__getattr__``)."""
        if _global_module_hooks():
            return None
        weights, biases, activations, slopes = [], [], [], []
        identity_slot = False  # layers at even indices, Identity at odd ones
        for module in self._modules.values():
            if module_has_hooks(module):
                return None
            kind = type(module)
            if identity_slot:
                if kind is not nn.Identity:
                    return None
            else:
                # FusedMLP's layers are fused ones: a plain nn.Linear in a slot runs as is.
                activation = None if kind is nn.Linear else mlp_layer_activation(module)
                if activation is None:
                    return None
                activations.append(activation[0])
                slopes.append(activation[1])
                params = module._parameters
                weights.append(params["weight"])
                biases.append(params["bias"])
            identity_slot = not identity_slot
        if not identity_slot:  # empty, or ends with an Identity
            return None
        return weights, biases, activations, slopes

    @property
    def layers(self) -> List[nn.Module]:
        """The layers with weights: one fused layer per hidden layer, then ``FusedLinear``."""
        return list(self)[::2]

    def __getitem__(self, index):
        # nn.Sequential would build a slice through our constructor, which takes sizes.
        if isinstance(index, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[index]))
        return super().__getitem__(index)

    def extra_repr(self) -> str:
        text = (f"in_features={self.in_features}, hidden_features={self.hidden_features}, "
                f"out_features={self.out_features}")
        if self.activation != "relu":
            text += f", activation={self.activation}"
        return text

    def to_sequential(self) -> nn.Sequential:
        """The equivalent ``nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)`` (the
        activation's module in place of ReLU). It shares this module's Parameter objects
        (``copy.deepcopy`` it for an independent model)."""
        if self.activation not in _MODULES:
            raise ValueError(f"to_sequential: torch has no module for {self.activation!r}")
        modules: List[nn.Module] = []
        for layer in self.layers[:-1]:
            modules += [layer.to_linear(), _MODULES[self.activation](self.negative_slope)]
        modules.append(self.layers[-1].to_linear())
        return nn.Sequential(*modules).train(self.training)

    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> "FusedMLP":
        """The ``FusedMLP`` computing ``seq``, which must be
        ``nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)``. It shares ``seq``'s Parameter
        objects (no copy), so optimizers holding them keep working."""
        linears, (activation, slope) = _mlp_linears(seq)
        # Built on the meta device (no memory, no RNG draws), then given seq's parameters.
        mlp = cls(linears[0].in_features, [layer.out_features for layer in linears[:-1]],
                  linears[-1].out_features, activation=activation, negative_slope=slope,
                  device="meta")
        for i, layer in enumerate(linears[:-1]):
            mlp[2 * i] = (FusedLinearReLU.from_linear(layer) if activation == "relu"
                          else FusedLinear.from_linear(layer, activation, slope))
        mlp[len(mlp) - 1] = FusedLinear.from_linear(linears[-1])
        return mlp.train(seq.training)


def mlp_layer_activation(layer: nn.Module):
    """(activation, negative_slope) that the ``mlp`` op takes for ``layer``: a fused layer
    (exactly FusedLinearReLU or FusedLinear, its activation as it is now) or a plain
    nn.Linear (no activation); None for any other module."""
    kind = type(layer)
    if kind is FusedLinearReLU:
        return "relu", DEFAULT_NEGATIVE_SLOPE
    if kind is FusedLinear:
        return layer.activation, layer.negative_slope
    if kind is nn.Linear:
        return "identity", DEFAULT_NEGATIVE_SLOPE
    return None


def module_has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward, forward-pre or backward hooks of its own: they must see
    its call, so a fused path that would skip it is not taken."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _global_module_hooks() -> bool:
    """Whether any global module hook (nn.modules.module.register_module_forward_hook, ...)
    is registered: it must see each layer's call."""
    module = nn.modules.module
    return bool(module._global_forward_hooks or module._global_forward_pre_hooks
                or module._global_backward_hooks or module._global_backward_pre_hooks)


def _load_layers_keys(module, state_dict, prefix, *args) -> None:
    """Checkpoints of FusedMLP before it took nn.Sequential's layout kept layer i under
    ``layers.{i}.``; it is now at index 2 * i."""
    old = prefix + "layers."
    for key in [key for key in state_dict if key.startswith(old)]:
        index, _, rest = key[len(old):].partition(".")
        if index.isdigit():
            state_dict[f"{prefix}{2 * int(index)}.{rest}"] = state_dict.pop(key)


def _mlp_linears(seq):
    """The Linear layers of ``nn.Sequential(Linear, ReLU, ..., Linear)`` (or another
    activation module, the same one throughout), checked, and (activation, slope)."""
    expected = "nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)"
    if not isinstance(seq, nn.Sequential):
        raise TypeError(f"from_sequential: seq must be an {expected}, got {type(seq).__name__}")
    modules = list(seq)
    if len(modules) % 2 == 0:
        raise ValueError(f"from_sequential: seq must be an {expected} (an odd number of "
                         f"modules), got {len(modules)} modules")
    activations = {_activation_of(module) for module in modules[1::2]}
    for i, module in enumerate(modules):
        if i % 2 == 0 and type(module) is not nn.Linear:
            raise ValueError(f"from_sequential: seq[{i}] must be an nn.Linear "
                             f"(expected {expected}), got {type(module).__name__}")
        if i % 2 == 1 and _activation_of(module) is None:
            raise ValueError(f"from_sequential: seq[{i}] must be an activation module (nn.ReLU, "
                             "nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh or "
                             f"nn.Identity; expected {expected}), got {type(module).__name__}")
    if len(activations) > 1:
        raise ValueError("from_sequential: every hidden activation must be the same module "
                         f"(FusedMLP has one activation), got {sorted(activations)}")
    linears = modules[::2]
    for i, (a, b) in enumerate(zip(linears, linears[1:])):
        if a.out_features != b.in_features:
            raise ValueError(f"from_sequential: seq[{2 * i}] has out_features={a.out_features} "
                             f"but seq[{2 * i + 2}] has in_features={b.in_features}")
    return linears, (activations.pop() if activations else ("relu", 0.01))
