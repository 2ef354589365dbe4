"""Grouped linear maps: g independent (out/g x in/g) blocks on a block-diagonal, optionally after a shuffle.

One product (:func:`grouped_product`: Consolidator's branches apart, :class:`GroupedLinear`) and one dense
expansion (:func:`grouped_dense_weight`) serve every grouped weight. The weight is stored compactly as
(g, out/g, in/g); the dense (out x in) matrix is built for merging, for Consolidator's folded training form
(whose weight gradient is :func:`grouped_weight_grad`) and for RepAdapter's tiny second projection.
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


def grouped_dense_weight(weight: torch.Tensor, shuffle: bool = False) -> torch.Tensor:
    """The (out x in) matrix W with ``F.linear(x, W) == grouped_product(x, weight)``, or with the shuffle
    ``== grouped_product(channel_shuffle(x, g), weight)``.

    Block-diagonal from the (g, out/g, in/g) group weights; with the shuffle, column c of the result is
    column pos(c) of the block-diagonal matrix (the layer reads input c where the shuffle put it).
    """
    groups, out_per_group, in_per_group = weight.shape
    dense = weight.new_zeros(groups, out_per_group, groups, in_per_group)
    # The diagonal over the two group axes, (out/g, in/g, g): block j sits at rows and columns of group j.
    dense.diagonal(dim1=0, dim2=2).copy_(weight.permute(1, 2, 0))
    dense = dense.reshape(groups * out_per_group, groups * in_per_group)
    if shuffle:
        dense = dense[:, shuffle_positions(groups * in_per_group, groups).to(dense.device)]
    return dense


# Measured on the CPU (one thread, ViT-B/16 shapes, batch 8 x 197 tokens, forward + backward): a grouped conv1d
# over all tokens beats a batched matrix product only for many tiny groups that do not narrow (Consolidator's
# g=384 on qkv, proj, fc1: 2 -> 6, 2 -> 2, 2 -> 8); for few large groups (g=2, 4 -> 384) and for narrowing
# groups (fc2: 8 -> 2) the batched product is 1.5-2x faster. docs/methods/consolidator.md has figures.
_CONV_MIN_GROUPS = 64


def grouped_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = blockdiag(W_1, ..., W_g) x (+ bias) over the last dimension, group by group (never densified).

    Args:
        x: (..., in) input; output group j reads inputs [j*in/g, (j+1)*in/g).
        weight: (g, out/g, in/g) group weights.
        bias: optional (out,) bias.

    Returns:
        (..., out).
    """
    groups, out_per_group, in_per_group = weight.shape
    lead = x.shape[:-1]
    out_features = groups * out_per_group
    if groups >= _CONV_MIN_GROUPS and in_per_group <= out_per_group:
        tokens = x.reshape(1, -1, groups * in_per_group).transpose(1, 2)  # (1, in, tokens)
        kernel = weight.reshape(out_features, in_per_group, 1)
        y = F.conv1d(tokens, kernel, bias, groups=groups).transpose(1, 2)
    else:
        per_group = x.reshape(-1, groups, in_per_group).transpose(0, 1)  # (g, tokens, in/g)
        y = torch.bmm(per_group, weight.transpose(1, 2)).transpose(0, 1)  # (tokens, g, out/g)
        y = y.reshape(-1, out_features)
        if bias is not None:
            y = y + bias
    return y.reshape(*lead, out_features)


_SUMS_MAX_WIDTH = 8


def grouped_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, groups: int) -> torch.Tensor:
    """The gradient of a (g, out/g, in/g) grouped weight: per group, the sum over tokens of
    outer(grad_out's group, x's group) -- the blocks of grad_out^T x on the block-diagonal, never the rest.

    Args:
        grad_out: (tokens, out), the gradient reaching the grouped product's output.
        x: (tokens, in), its input.
        groups: g.
    """
    grad = grad_out.reshape(-1, groups, grad_out.shape[-1] // groups)  # (tokens, g, out/g)
    inputs = x.reshape(-1, groups, x.shape[-1] // groups)  # (tokens, g, in/g)
    narrow = min(grad.shape[-1], inputs.shape[-1])
    if narrow > _SUMS_MAX_WIDTH:
        return torch.bmm(grad.permute(1, 2, 0), inputs.permute(1, 0, 2))  # (g, out/g, tokens) @ (g, tokens, in/g)
    # Tiny groups (Consolidator's: out/g and in/g at most 8): one multiply-and-sum over the tokens per column
    # of the narrower side, 3-10x faster on the CPU than g batched tiny products (docs/benchmarks.md).
    if inputs.shape[-1] == narrow:
        return torch.stack([(grad * inputs[..., k:k + 1]).sum(0) for k in range(narrow)], dim=-1)
    return torch.stack([(inputs * grad[..., p:p + 1]).sum(0) for p in range(narrow)], dim=1)


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
        return grouped_product(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, "
            f"bias={self.bias is not None}, shuffle={self.shuffle}"
        )
