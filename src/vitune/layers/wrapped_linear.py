"""Base classes for methods that compute around one backbone module and merge into its weight and bias."""

from __future__ import annotations

import torch
from torch import nn

from .base import VituneModule


class WrappedModule(VituneModule):
    """Holds a backbone module with ``weight`` and ``bias`` (Linear, Conv2d, LayerNorm) as ``base_layer``.

    ``weight``/``bias`` read through to the base layer, so code that inspects the layer (or calls
    ``F.linear(layer.weight, ...)``) keeps working.
    """

    wrapped = ("base_layer",)

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer

    @property
    def weight(self) -> nn.Parameter:
        return self.base_layer.weight

    @property
    def bias(self) -> nn.Parameter | None:
        return self.base_layer.bias

    def fold(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
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
        w = self.base_layer.weight.detach().double()
        bias = self.base_layer.bias
        b = bias.detach().double() if bias is not None else w.new_zeros(w.shape[0])
        return w, b


class WrappedLinear(WrappedModule):
    """A wrapped backbone ``nn.Linear``; subclasses add their branch and merge rule."""

    def __init__(self, base_layer: nn.Linear):
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"{type(self).__name__} wraps an nn.Linear, got {type(base_layer).__name__}")
        super().__init__(base_layer)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features
