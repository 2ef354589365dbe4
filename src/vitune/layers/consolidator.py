"""Consolidator's layer (Hao et al., ICLR 2023): a linear layer plus parallel grouped branches.

    y = W0 x + b0 + sum_g DropPath(GroupFC_g(Shuffle_g(x)))

with GroupFC_g a grouped linear (g diagonal blocks, bias) and Shuffle_g an optional channel shuffle. The
branches are linear, so they merge into one dense matrix: W = W0 + sum_g W_eff,g and b = b0 + sum_g b_g.

Training computes that merged matrix too, whenever no DropPath acts (rep_drop 0, or eval): one dense linear
costs what the backbone's linear alone costs, forward and input gradient, where a separate grouped branch
reads the input and writes, adds and differentiates a whole extra output. Each grouped weight then gets only
its own blocks of the weight gradient (:class:`FoldedBranches`). With DropPath each sample keeps or drops the
branches, so the branches are computed apart and dropped per sample, as written above.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from .grouped_linear import GroupedLinear, channel_shuffle, grouped_dense_weight, grouped_weight_grad
from .wrapped_linear import WrappedLinear


def _folded(weight: torch.Tensor, bias: torch.Tensor | None, shuffles: tuple[bool, ...],
            branch_tensors: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """W0 + the branches' dense matrices, b0 + their biases (None when there is no bias at all)."""
    for shuffle, branch_weight, branch_bias in zip(shuffles, branch_tensors[::2], branch_tensors[1::2]):
        weight = weight + grouped_dense_weight(branch_weight, shuffle)
        if branch_bias is not None:
            bias = branch_bias if bias is None else bias + branch_bias
    return weight, bias


class FoldedBranches(torch.autograd.Function):
    """y = x (W0 + sum_k dense(G_k))^T + b0 + sum_k c_k: a linear and its grouped branches as one dense linear.

    The forward and the input's gradient are one product each, with the dense matrix (rebuilt in backward
    rather than kept: it is weight-sized, per layer). Each grouped weight G_k gets the blocks of
    grad^T x it covers (:func:`grouped_weight_grad`), each bias the sum of grad over the tokens.

    ``apply(x, weight, bias, shuffles, G_1, c_1, G_2, c_2, ...)``: shuffles holds one flag per branch; a
    branch's bias c_k may be None, and so may the layer's.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, shuffles, *branch_tensors):
        ctx.shuffles = shuffles
        ctx.save_for_backward(x, weight, bias, *branch_tensors)
        return F.linear(x, *_folded(weight, bias, shuffles, branch_tensors))

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, *branch_tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad2d = grad.reshape(-1, grad.shape[-1])
        x2d = x.reshape(-1, x.shape[-1])
        # Under autocast the output (and so grad) is in the low precision; each gradient takes its input's dtype.
        grad_x = grad_weight = grad_bias = None
        if needs[0]:
            dense, _ = _folded(weight, None, ctx.shuffles, tuple(branch_tensors))
            grad_x = (grad2d @ dense.to(grad.dtype)).view(x.shape).to(x.dtype)
        if needs[1]:
            grad_weight = (grad2d.t() @ x2d.to(grad.dtype)).to(weight.dtype)
        token_sum = grad2d.sum(0) if any(needs[2::2]) else None  # every bias's gradient
        if needs[2]:
            grad_bias = token_sum.to(bias.dtype)
        branch_grads = []
        for k, shuffle in enumerate(ctx.shuffles):
            branch_weight, branch_bias = branch_tensors[2 * k], branch_tensors[2 * k + 1]
            groups = branch_weight.shape[0]
            grad_w = grad_b = None
            if needs[4 + 2 * k]:
                inputs = channel_shuffle(x2d, groups) if shuffle else x2d
                grad_w = grouped_weight_grad(grad2d, inputs, groups).to(branch_weight.dtype)
            if needs[5 + 2 * k]:
                grad_b = token_sum.to(branch_bias.dtype)
            branch_grads += [grad_w, grad_b]
        return grad_x, grad_weight, grad_bias, None, *branch_grads


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
        shuffles = tuple(branch.shuffle for branch in self.branches)
        tensors = [t for branch in self.branches for t in (branch.weight, branch.bias)]
        return FoldedBranches.apply(x, self.base_layer.weight, self.base_layer.bias, shuffles, *tensors)

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
