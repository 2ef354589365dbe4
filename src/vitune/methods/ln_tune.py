"""LN-tune: train the affine weight and bias of every LayerNorm of the backbone, nothing else.

The trained parameters are the backbone's own, so merging changes nothing.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from .base import Method
from .registry import register_method


@register_method
class LNTune(Method):
    name = "ln_tune"

    def claimed_parameters(self, model: nn.Module) -> Iterable[str]:
        names = []
        for path, module in model.named_modules():
            if isinstance(module, nn.LayerNorm):
                names += [f"{path}.{n}" for n, _ in module.named_parameters(recurse=False)]
        return [n for n in names if self.places.trainable_in_backbone(n)]
