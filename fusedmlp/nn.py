"""Modules: ``FusedLinearReLU``, a drop-in for ``nn.Linear`` followed by ``nn.ReLU``."""
import torch
from torch import nn

from .ops import linear_relu

__all__ = ["FusedLinearReLU"]


class FusedLinearReLU(nn.Module):
    """``relu(nn.Linear(in_features, out_features, bias)(x))`` in one fused kernel.

    Parameters have exactly ``nn.Linear``'s names, shapes and default initialisation (the
    same RNG draws), so ``state_dict`` s load both ways.
    """

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_relu(x, self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "FusedLinearReLU":
        """The fused layer computing ``relu(linear(x))``. It shares ``linear``'s Parameter
        objects (no copy), so optimizers holding them keep working."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        # Built on the meta device: no memory and no RNG draws for parameters we replace.
        fused = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device="meta", dtype=linear.weight.dtype)
        fused.weight = linear.weight
        fused.bias = linear.bias
        return fused
