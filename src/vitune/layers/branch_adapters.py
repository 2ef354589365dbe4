"""Adapters added at the end of a block's residual branch, where the official codes put them.

In the pre-norm layout every backbone family guarantees (``backbones.base.BlockPlaces``),

    X1 = X + attn_branch(...)      X2 = X1 + mlp_branch(ls2(mlp(norm2(X1))))

the branch end (timm's ``drop_path1`` / ``drop_path2``) returns what joins the residual stream. Wrapping it
places an adapter output exactly there, outside the branch's layer scale and drop path, without copying the
block's forward:

- :class:`SequentialAdapters`: H + sum_k a_k(H), H the branch output (Pfeiffer's and Houlsby's adapter,
  Compacter, AdaptFormer's sequential option).
- :class:`ParallelAdapters` with an :class:`InputTap` on ``norm2``: H + sum_k a_k(X1), X1 the residual stream
  the tap saw entering norm2 earlier in the same block call (AdaptFormer's parallel adapter).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import VituneModule


class BranchAdapters(VituneModule):
    """The end of a residual branch plus adapters whose outputs are added to what it returns.

    Args:
        branch_end: the backbone's last module of the branch (a drop path or an identity).
        adapters: modules mapping a (..., D) tensor to (..., D).
    """

    wrapped = ("branch_end",)

    def __init__(self, branch_end: nn.Module, adapters: list[nn.Module]):
        super().__init__()
        self.branch_end = branch_end
        self.adapters = nn.ModuleList(adapters)

    def adapter_input(self, h: torch.Tensor) -> torch.Tensor:
        """What the adapters read, given the branch output `h`."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.branch_end(x)
        if self.adapter_disabled:
            return h
        z = self.adapter_input(h)
        out = h
        for adapter in self.adapters:
            out = out + adapter(z)
        return out


class SequentialAdapters(BranchAdapters):
    """H + sum_k a_k(H): each adapter reads the branch output H (after layer scale and drop path)."""

    def adapter_input(self, h: torch.Tensor) -> torch.Tensor:
        return h


class InputTap(VituneModule):
    """Runs `module` unchanged and keeps its input for a :class:`ParallelAdapters` later in the same forward.

    Args:
        module: the backbone module whose input is wanted (a block's norm2: its input is X1).
    """

    wrapped = ("module",)

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.adapter_disabled:
            self.seen = x
        return self.module(x)

    def take(self) -> torch.Tensor:
        """The input seen last, released so it is not kept alive after the forward."""
        seen, self.seen = self.seen, None
        if seen is None:
            raise RuntimeError("the input tap has not run in this forward: the block no longer calls its norm2")
        return seen

    def merged(self) -> nn.Module:
        return self.module


class ParallelAdapters(BranchAdapters):
    """H + sum_k a_k(X1): the adapters read the tapped input (X1), not the branch output.

    Args:
        branch_end: the backbone's last module of the branch.
        adapters: modules mapping (..., D) to (..., D).
        tap: the :class:`InputTap` whose input the adapters read; it must run before this module.
    """

    def __init__(self, branch_end: nn.Module, adapters: list[nn.Module], tap: InputTap):
        super().__init__(branch_end, adapters)
        object.__setattr__(self, "_tap", tap)  # not registered: the tap is a child of the block already

    def adapter_input(self, h: torch.Tensor) -> torch.Tensor:
        return self._tap.take()
