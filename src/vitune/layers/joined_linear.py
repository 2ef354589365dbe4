"""Separate linear layers that read one input (Hugging Face's q, k and v projections), joined into one layer.

Methods written for a fused qkv -- a RepAdapter or ARC adapter before it, KAdaptation's updates on its q and v
slices, LoRA or Consolidator on the whole layer -- then wrap the joined layer unchanged: the same parameters, the
same function and the same merge as on timm's fused qkv. Each original layer's place holds a
:class:`JoinedSlice` returning its slice of the joined output. The first of them holds the joined layer (its
child ``joined``, which the method wraps) and runs it once per input: the others, called with the same input
tensor in the same forward (q, k and v all read the attention's input), take their slices of that output, so
an adapter before the joined layer runs once, with one dropout mask, as before a fused qkv.

Merging (after the method's layer has merged into the joined one) splits it back into plain ``nn.Linear``
layers of the original shapes; a bias the merge gave the joined layer goes to every one of them, as it would
to every output of a fused qkv.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import NotMergeableError
from .base import VituneModule


class JoinedSlice(VituneModule):
    """Stands in for one of several linear layers joined into one; returns its slice of the joined output.

    Args:
        index: which of the joined layers this one stands for.
        slices: every joined layer's slice of the joined output, in order.
        had_bias: whether each joined layer had a bias of its own.
        joined: the joined layer (given to the first stand-in only, which holds it).
        first: the stand-in holding the joined layer (given to the others).
    """

    wrapped = ("joined",)

    def __init__(self, index: int, slices: tuple[slice, ...], had_bias: tuple[bool, ...],
                 joined: nn.Linear | None = None, first: JoinedSlice | None = None):
        super().__init__()
        self.index, self.slices, self.had_bias = index, slices, had_bias
        if joined is not None:
            self.joined = joined
        # Not registered: the first stand-in is a sibling in the model, registered there.
        object.__setattr__(self, "_first", first if first is not None else self)
        self._pending: tuple[torch.Tensor, torch.Tensor, frozenset[int]] | None = None
        self._split: list[nn.Linear] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._first.joined_output(x, self.index)

    def joined_output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Slice `index` of joined(x); the joined layer runs once for the calls of all slices on the same x."""
        pending = self._pending
        if pending is None or pending[0] is not x or index in pending[2]:
            pending = (x, self.joined(x), frozenset())
        served = pending[2] | {index}
        # Released once every slice has been served, so no activation outlives the forward.
        self._pending = None if len(served) == len(self.slices) else (pending[0], pending[1], served)
        return pending[1][..., self.slices[index]]

    def split(self) -> list[nn.Linear]:
        """The joined layer cut back into one plain linear per joined layer (computed once)."""
        if self._split is None:
            joined = self.joined
            if isinstance(joined, VituneModule):
                raise NotMergeableError(
                    f"the joined linear still holds a {type(joined).__name__}: merge it before splitting the join"
                )
            self._split = [self._part(joined, k) for k in range(len(self.slices))]
        return self._split

    def _part(self, joined: nn.Linear, k: int) -> nn.Linear:
        part = self.slices[k]
        bias = joined.bias[part].detach() if joined.bias is not None else None
        # A layer that had no bias gets one when the merge gave the joined layer a bias none of them had, or
        # put a non-zero one in its slice.
        if bias is not None and not self.had_bias[k] and any(self.had_bias) and not bool(bias.ne(0).any()):
            bias = None
        weight = joined.weight[part].detach()
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        layer.requires_grad_(joined.weight.requires_grad)
        return layer

    def merged(self) -> nn.Linear:
        return self._first.split()[self.index]

    def extra_repr(self) -> str:
        part = self.slices[self.index]
        return f"outputs {part.start}:{part.stop} of the joined linear"


def join_linears(linears: Sequence[nn.Linear]) -> list[JoinedSlice]:
    """Stand-ins for `linears` (one input width, one dtype and device), the first holding the joined layer.

    The joined layer's weight is the row-wise concatenation of theirs; its bias the concatenation of their
    biases (zeros for a layer without one), or none when none has a bias.
    """
    first = linears[0]
    widths = [layer.out_features for layer in linears]
    starts = [sum(widths[:k]) for k in range(len(widths))]
    slices = tuple(slice(s, s + w) for s, w in zip(starts, widths))
    had_bias = tuple(layer.bias is not None for layer in linears)
    joined = nn.Linear(first.in_features, sum(widths), bias=any(had_bias),
                       device=first.weight.device, dtype=first.weight.dtype)
    with torch.no_grad():
        joined.weight.copy_(torch.cat([layer.weight for layer in linears]))
        if joined.bias is not None:
            joined.bias.copy_(torch.cat([
                layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
                for layer in linears
            ]))
    joined.requires_grad_(first.weight.requires_grad)
    leader = JoinedSlice(0, slices, had_bias, joined=joined)
    return [leader] + [JoinedSlice(k, slices, had_bias, first=leader) for k in range(1, len(linears))]
