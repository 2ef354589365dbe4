"""Consolidator's layer (Hao et al., ICLR 2023): a linear layer plus parallel grouped branches.

    y = W0 x + b0 + sum_g DropPath(GroupFC_g(Shuffle_g(x)))

with GroupFC_g a grouped linear (g diagonal blocks, bias) and Shuffle_g an optional channel shuffle. The
branches are linear, so they merge into one dense matrix: W = W0 + sum_g W_eff,g and b = b0 + sum_g b_g.

Training computes that merged matrix too, whenever no DropPath acts (rep_drop 0, or eval): one dense linear
costs what the backbone's linear alone costs, forward and input gradient, where a separate grouped branch
reads the input and writes, adds and differentiates a whole extra output. Each grouped weight then gets only
its own blocks of the weight gradient (``layers/folded_linear.py``). With DropPath each sample keeps or drops the
branches, so the branches are computed apart and dropped per sample, as written above.
"""

from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import DropPath
from torch import nn

from .folded_linear import FoldedLinear
from .grouped_linear import GroupedLinear, grouped_dense_weight
from .wrapped_linear import WrappedLinear


class ConsolidatorLinear(WrappedLinear):
    """A linear layer plus parallel grouped branches, each followed by per-sample DropPath.

    Built around a backbone linear by the method, or around a fresh ``nn.Linear`` to use on its own;
    :meth:`merged_weight_and_bias` gives the dense (weight, bias) it equals in eval mode.

    Args:
        base_layer: the linear layer the branches run beside.
        fc_groups: group count of each branch (one branch per entry); each divides both widths.
        rep_drop: DropPath rate on each branch output (training only).
        with_channel_shuffle: shuffle the input channels before each branch.
        rep_bias: give each branch its own bias.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        fc_groups: Sequence[int] = (384,),
        rep_drop: float = 0.0,
        with_channel_shuffle: bool = False,
        rep_bias: bool = True,
    ):
        super().__init__(base_layer)
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.branches = nn.ModuleList(
            GroupedLinear(
                base_layer.in_features, base_layer.out_features, g, bias=rep_bias,
                shuffle=with_channel_shuffle, init_range=1e-3, **factory,
            )
            for g in fc_groups
        )
        # DropPath draws a fresh per-sample mask on every call, so one module serves all branches.
        self.drop_path = DropPath(rep_drop) if rep_drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_disabled:
            return self.base_layer(x)
        if self.training and not isinstance(self.drop_path, nn.Identity):  # per-sample drops: branches apart
            out = self.base_layer(x)
            for branch in self.branches:
                out = out + self.drop_path(branch(x))
            return out
        updates = tuple(("grouped", branch.shuffle) for branch in self.branches)
        tensors = [t for branch in self.branches for t in (branch.weight, branch.bias)]
        return FoldedLinear.apply(x, self.base_layer.weight, self.base_layer.bias, updates, *tensors)

    @torch.no_grad()
    def merged_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W0 + sum of the branches' dense (shuffled block-diagonal) matrices, b0 + their biases; float64."""
        w, b = self.base_weight64()
        for branch in self.branches:
            w += grouped_dense_weight(branch.weight.double(), branch.shuffle)
            if branch.bias is not None:
                b += branch.bias.double()
        return w, b

    def merged(self) -> nn.Linear:
        return self.fold(*self.merged_weight_and_bias())
