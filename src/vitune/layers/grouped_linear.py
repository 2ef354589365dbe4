"""A grouped linear layer: g independent (out/g x in/g) blocks, optionally after a channel shuffle.

Used as the re-parameterisable branch of Consolidator. The weight is stored compactly as (g, out/g, in/g);
the dense (out x in) matrix it equals is built only by :func:`grouped_dense_weight`, for merging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle over the last dimension: channel i*(C/g) + k moves to position k*g + i."""
    *lead, channels = x.shape
    return x.reshape(*lead, groups, channels // groups).transpose(-1, -2).reshape(*lead, channels)


def shuffle_positions(channels: int, groups: int) -> torch.Tensor:
    """pos[c]: where :func:`channel_shuffle` moves input channel c (pos[i*(C/g) + k] = k*g + i)."""
    return torch.arange(channels).reshape(channels // groups, groups).t().reshape(-1)


def grouped_dense_weight(weight: torch.Tensor, shuffle: bool) -> torch.Tensor:
    """The (out x in) matrix W_eff with ``F.linear(x, W_eff) == GroupedLinear(x)`` (bias aside).

    Block-diagonal from the (g, out/g, in/g) group weights; with the shuffle, column c of the result is
    column pos(c) of the block-diagonal matrix (the layer reads input c where the shuffle put it).
    """
    groups, _, in_per_group = weight.shape
    dense = torch.block_diag(*weight.unbind(0))
    if shuffle:
        dense = dense[:, shuffle_positions(groups * in_per_group, groups).to(dense.device)]
    return dense


class GroupedLinear(nn.Module):
    """y = blockdiag(W_1, ..., W_g) shuffle(x) + b, computed group by group (never densified).

    Args:
        in_features: input width, divisible by `groups`.
        out_features: output width, divisible by `groups`.
        groups: number of diagonal blocks g; output group j reads (shuffled) inputs [j*in/g, (j+1)*in/g).
        bias: learn an output bias.
        shuffle: apply :func:`channel_shuffle` with `groups` groups to the input first.
        init_range: weights and bias start uniform in [-init_range, init_range] (Consolidator: 1e-3).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        groups: int,
        bias: bool = True,
        shuffle: bool = False,
        init_range: float = 1e-3,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if groups <= 0 or in_features % groups or out_features % groups:
            raise ValueError(
                f"groups={groups} must divide both in_features={in_features} and out_features={out_features}"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        self.shuffle, self.init_range = shuffle, init_range
        self.weight = nn.Parameter(torch.empty(groups, out_features // groups, in_features // groups, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -self.init_range, self.init_range)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -self.init_range, self.init_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle:
            x = channel_shuffle(x, self.groups)
        groups, out_per_group, in_per_group = self.weight.shape
        lead = x.shape[:-1]
        # Measured on CPU for ViT-B/16 shapes at g=384 (docs/methods/consolidator.md): a grouped conv over all
        # tokens is fastest when each group has at least as many outputs as inputs (qkv, proj, fc1); a
        # batched product over the groups is fastest otherwise (fc2: 8 inputs, 2 outputs per group).
        if in_per_group <= out_per_group:
            tokens = x.reshape(1, -1, self.in_features).transpose(1, 2)  # (1, in, tokens)
            kernel = self.weight.reshape(self.out_features, in_per_group, 1)
            y = F.conv1d(tokens, kernel, self.bias, groups=groups).transpose(1, 2)
        else:
            per_group = x.reshape(-1, groups, in_per_group).transpose(0, 1)  # (g, tokens, in/g)
            y = torch.bmm(per_group, self.weight.transpose(1, 2)).transpose(0, 1)  # (tokens, g, out/g)
            y = y.reshape(-1, self.out_features)
            if self.bias is not None:
                y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, "
            f"bias={self.bias is not None}, shuffle={self.shuffle}"
        )
