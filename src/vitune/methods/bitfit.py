"""BitFit (Ben Zaken et al., 2022): train the bias terms of the backbone, nothing else.

Merging is trivial: the trained biases are the backbone's own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from torch import nn

from ..surgery import owner_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class BitFitConfig(MethodConfig):
    norms: bool = option(
        False,
        "also train LayerNorm biases. Off by default: the 'Bias' baseline of the VTAB tables (0.10% of "
        "ViT-B/16) matches the biases of the linear and patch-embedding layers only",
    )


@register_method
class BitFit(Method):
    name = "bitfit"
    Config = BitFitConfig

    def claimed_parameters(self, model: nn.Module) -> Iterable[str]:
        kinds = (nn.Linear, nn.Conv2d, nn.LayerNorm) if self.config.norms else (nn.Linear, nn.Conv2d)
        return [
            n
            for n, _ in model.named_parameters()
            if n.endswith(".bias")
            and self.places.trainable_in_backbone(n)
            and isinstance(owner_module(model, n), kinds)
        ]
