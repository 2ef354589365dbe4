"""The base class of every method that computes around a backbone ``nn.Linear`` and merges into it."""

from __future__ import annotations

import torch
from torch import nn

from ..methods.base import VituneModule


class WrappedLinear(VituneModule):
    """Holds the backbone's linear as ``base_layer``; subclasses add their branch and merge rule.

    ``weight``/``bias``/``in_features``/``out_features`` read through to the base layer, so code that
    inspects the layer (or calls ``F.linear(layer.weight, ...)``) keeps working.
    """

    wrapped = ("base_layer",)

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"{type(self).__name__} wraps an nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer

    @property
    def weight(self) -> nn.Parameter:
        return self.base_layer.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def fold(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
        """Write the merged weight and bias (any precision) into the base layer and return it.

        A base layer without bias gains one only when the merged bias is non-zero.
        """
        base = self.base_layer
        base.weight.data.copy_(weight.to(base.weight.dtype))
        if bias is not None:
            if base.bias is not None:
                base.bias.data.copy_(bias.to(base.bias.dtype))
            elif bool(bias.ne(0).any()):
                base.bias = nn.Parameter(
                    bias.to(device=base.weight.device, dtype=base.weight.dtype),
                    requires_grad=base.weight.requires_grad,
                )
        return base

    def base_weight64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The base weight and bias (zeros when absent) in float64, for exact merge arithmetic."""
        base = self.base_layer
        w = base.weight.detach().double()
        b = base.bias.detach().double() if base.bias is not None else w.new_zeros(base.out_features)
        return w, b
