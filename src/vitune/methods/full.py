"""Full fine-tuning: every backbone parameter trains (the baseline every PETL table compares with)."""

from __future__ import annotations

from typing import Iterable

from torch import nn

from .base import Method
from .registry import register_method


@register_method
class FullFineTuning(Method):
    name = "full"
    can_disable = False
    cannot_disable_reason = "it trains the backbone's own weights in place and keeps no copy of the originals"

    def claimed_parameters(self, model: nn.Module) -> Iterable[str]:
        return [n for n, _ in model.named_parameters() if self.places.trainable_in_backbone(n)]
