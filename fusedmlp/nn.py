"""Modules: ``FusedLinearReLU`` (a drop-in for ``nn.Linear`` followed by ``nn.ReLU``),
``FusedLinear`` (``nn.Linear`` on fusedmlp's kernels) and ``FusedMLP`` built from them."""
from collections import OrderedDict
from typing import List, Sequence

import torch
from torch import nn

from .ops import linear, linear_relu

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
    """``nn.Linear(in_features, out_features, bias)`` on fusedmlp's kernels (no activation):
    an MLP's last layer. Same parameters, initialisation and ``from_linear`` as
    ``FusedLinearReLU``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"FusedMLP: {name} must be a positive int, got {value!r}")


class FusedMLP(nn.Sequential):
    """``Linear -> ReLU`` for each entry of ``hidden_features``, then a final ``Linear``
    without activation, all on fusedmlp's kernels: the same function (and, from the same
    seed, the same initial weights) as
    ``nn.Sequential(nn.Linear(in, h0), nn.ReLU(), ..., nn.Linear(h_last, out))``.

    It is that Sequential's layout: ``FusedLinearReLU`` at each Linear's index, then
    ``nn.Identity`` at each ReLU's index (the ReLU runs inside the layer before it), then
    ``FusedLinear``; just what ``fusedmlp.fuse`` makes of the plain Sequential. So its
    ``state_dict`` keys are the plain model's (``0.weight``, ``2.weight``, ...): each loads
    the other's directly. ``layers`` lists the layers with weights; ``to_sequential()`` /
    ``from_sequential(seq)`` convert to and from the plain Sequential, sharing Parameters.
    """

    def __init__(self, in_features: int, hidden_features: Sequence[int], out_features: int,
                 bias: bool = True, device=None, dtype=None) -> None:
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
            modules += [FusedLinearReLU(n_in, n_out, **factory_kwargs), nn.Identity()]
        modules.append(FusedLinear(sizes[-2], sizes[-1], **factory_kwargs))
        super().__init__(*modules)
        self.in_features = in_features
        self.hidden_features: List[int] = list(hidden_features)
        self.out_features = out_features
        self.register_load_state_dict_pre_hook(_load_layers_keys)

    @property
    def layers(self) -> List[nn.Module]:
        """The layers with weights: ``FusedLinearReLU`` per hidden layer, then ``FusedLinear``."""
        return list(self)[::2]

    def __getitem__(self, index):
        # nn.Sequential would build a slice through our constructor, which takes sizes.
        if isinstance(index, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[index]))
        return super().__getitem__(index)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, hidden_features={self.hidden_features}, "
                f"out_features={self.out_features}")

    def to_sequential(self) -> nn.Sequential:
        """The equivalent ``nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)``. It shares
        this module's Parameter objects (``copy.deepcopy`` it for an independent model)."""
        modules: List[nn.Module] = []
        for layer in self.layers[:-1]:
            modules += [layer.to_linear(), nn.ReLU()]
        modules.append(self.layers[-1].to_linear())
        return nn.Sequential(*modules).train(self.training)

    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> "FusedMLP":
        """The ``FusedMLP`` computing ``seq``, which must be
        ``nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)``. It shares ``seq``'s Parameter
        objects (no copy), so optimizers holding them keep working."""
        linears = _mlp_linears(seq)
        # Built on the meta device (no memory, no RNG draws), then given seq's parameters.
        mlp = cls(linears[0].in_features, [layer.out_features for layer in linears[:-1]],
                  linears[-1].out_features, device="meta")
        for i, layer in enumerate(linears[:-1]):
            mlp[2 * i] = FusedLinearReLU.from_linear(layer)
        mlp[len(mlp) - 1] = FusedLinear.from_linear(linears[-1])
        return mlp.train(seq.training)


def _load_layers_keys(module, state_dict, prefix, *args) -> None:
    """Checkpoints of FusedMLP before it took nn.Sequential's layout kept layer i under
    ``layers.{i}.``; it is now at index 2 * i."""
    old = prefix + "layers."
    for key in [key for key in state_dict if key.startswith(old)]:
        index, _, rest = key[len(old):].partition(".")
        if index.isdigit():
            state_dict[f"{prefix}{2 * int(index)}.{rest}"] = state_dict.pop(key)


def _mlp_linears(seq) -> List[nn.Linear]:
    """The Linear layers of ``nn.Sequential(Linear, ReLU, ..., Linear)``, checked."""
    expected = "nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)"
    if not isinstance(seq, nn.Sequential):
        raise TypeError(f"from_sequential: seq must be an {expected}, got {type(seq).__name__}")
    modules = list(seq)
    if len(modules) % 2 == 0:
        raise ValueError(f"from_sequential: seq must be an {expected} (an odd number of "
                         f"modules), got {len(modules)} modules")
    for i, module in enumerate(modules):
        kind = nn.Linear if i % 2 == 0 else nn.ReLU
        if type(module) is not kind:
            raise ValueError(f"from_sequential: seq[{i}] must be an nn.{kind.__name__} "
                             f"(expected {expected}), got {type(module).__name__}")
    linears = modules[::2]
    for i, (a, b) in enumerate(zip(linears, linears[1:])):
        if a.out_features != b.in_features:
            raise ValueError(f"from_sequential: seq[{2 * i}] has out_features={a.out_features} "
                             f"but seq[{2 * i + 2}] has in_features={b.in_features}")
    return linears
