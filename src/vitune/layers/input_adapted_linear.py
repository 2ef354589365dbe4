"""A linear layer whose input first passes through an affine adapter: y = Lin(f(x)).

RepAdapter and ARC both put a linear map with an identity skip in front of a backbone linear (the
adapter before qkv reads LN1's output, the one before fc1 reads LN2's). Because f is affine at eval,
f(x) = x M^T + c, the pair folds into the linear: Lin(f(x)) = x (W M)^T + (b + W c).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import nn

from .wrapped_linear import WrappedLinear


class AffineAdapter(Protocol):
    """What an input adapter offers: its forward, and its eval-time map as (M, c) in float64."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def affine64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with f(x) = x M^T + c when dropout is off; M is (in, in), c is (in,)."""
        ...


class InputAdaptedLinear(WrappedLinear):
    """``base_layer(adapter(x))``; merges into ``W' = W M``, ``b' = b + W c``."""

    # The child's name, so parameter names read ``<linear>.<adapter_name>.<tensor>``.
    adapter_name: ClassVar[str] = "adapter"

    def __init__(self, base_layer: nn.Linear, adapter: nn.Module):
        super().__init__(base_layer)
        self.add_module(self.adapter_name, adapter)

    @property
    def adapter(self) -> nn.Module:
        try:
            return self._modules[self.adapter_name]
        except KeyError:  # AttributeError keeps hasattr() (used by add_module) working
            raise AttributeError("adapter") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_disabled:
            return self.base_layer(x)
        return self.base_layer(self.adapter(x))

    def merged(self) -> nn.Linear:
        w, b = self.base_weight64()
        matrix, shift = self.adapter.affine64()
        return self.fold(w @ matrix.to(w.device), b + w @ shift.to(w.device))
