"""Consolidator's drop-in linear layer, as its README uses it.

    m = Consolidator(768, 768, fc_groups=(384,), rep_drop=0.5, with_channel_shuffle=True)
    weight, bias = m.get_actual_params()      # m.eval()(x) == F.linear(x, weight, bias)

The constructor takes the official arguments. The frozen ``fc_origin`` of the original is an ``nn.Linear``
here (``base_layer``), initialised like the original's 1x1 Conv1d; the branches are vitune's grouped layers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers.consolidator import ConsolidatorLinear


class Consolidator(ConsolidatorLinear):
    """A linear layer ``in_features -> out_features`` with Consolidator's grouped, mergeable branches."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rep_drop: float = 0.0,
        with_channel_shuffle: bool = False,
        fc_groups: Sequence[int] = (384,),
        drop_type: str = "droppath",
        rep_bias: bool = True,
        bias: bool = True,
    ):
        if drop_type != "droppath":
            raise NotImplementedError(f"drop_type {drop_type!r}: only 'droppath' exists (as in the original)")
        for g in fc_groups:
            if in_features % g or out_features % g:
                raise ValueError(f"fc_groups: {g} groups do not divide {in_features} -> {out_features}")
        super().__init__(nn.Linear(in_features, out_features, bias=bias), tuple(fc_groups), rep_drop,
                         with_channel_shuffle, rep_bias)

    def get_actual_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the single linear layer this module equals in eval mode."""
        with torch.no_grad():
            weight, bias = self.merged_weight_and_bias()
        dtype = self.base_layer.weight.dtype
        return weight.to(dtype), bias.to(dtype)
