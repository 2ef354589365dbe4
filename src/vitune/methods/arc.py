"""ARC, Adapter Re-Composing (Dong et al., NeurIPS 2023): f(x) = x + Dropout(x P diag(c)) P^T + beta.

The down-projection P (D x rank) is shared by every block -- one for the attention position, one for the
MLP position -- and its transpose is the up-projection; each block has its own re-scaling c (rank) and
bias beta (D). ``arc`` puts the adapter on the inputs of ``attn.qkv`` and ``mlp.fc1``; ``arc_att`` on the
input of ``attn.qkv`` only. At eval f(x) = x M + beta with M = I + P diag(c) P^T (symmetric), which
folds into the following linear: W' = W M, b' = b + W beta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.input_adapted_linear import InputAdaptedLinear
from ..surgery import replace_module
from .base import Method, VituneModule
from .config import MethodConfig, option
from .registry import register_method

# Position -> the block's linear whose input the adapter transforms.
POSITIONS = {"attn": "qkv", "mlp": "fc1"}


class ARCProjections(VituneModule):
    """The projections shared by all blocks, held once on the model root (``model.arc_shared``)."""

    def __init__(self, dim: int, rank: int, positions: tuple[str, ...], device=None, dtype=None):
        super().__init__()
        for position in positions:
            self.register_parameter(f"P_{position}", nn.Parameter(torch.empty(dim, rank, device=device, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            nn.init.xavier_uniform_(p)

    def projection(self, position: str) -> nn.Parameter:
        return getattr(self, f"P_{position}")

    def merged(self) -> None:
        return None  # the blocks' adapters have folded P into their linears already


class ARCAdapter(nn.Module):
    """One block's adapter at one position: its own c and beta, the shared P read at every call."""

    def __init__(self, shared: ARCProjections, position: str, dim: int, rank: int, dropout: float,
                 device=None, dtype=None):
        super().__init__()
        # Not registered: the shared tensor must appear once in the state_dict (on the model root).
        object.__setattr__(self, "_shared", shared)
        self.position = position
        self.scale = nn.Parameter(torch.empty(rank, device=device, dtype=dtype))  # c
        self.bias = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))  # beta
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As released: the attention adapter starts as the identity, the MLP one does not (xavier c).
        if self.position == "attn":
            nn.init.zeros_(self.scale)
        else:
            nn.init.xavier_uniform_(self.scale.data.view(1, -1))
        nn.init.zeros_(self.bias)

    @property
    def projection(self) -> nn.Parameter:
        return self._shared.projection(self.position)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.projection
        hidden = self.dropout(F.linear(x, (p * self.scale).t()))  # x P diag(c): (..., rank)
        return x + F.linear(hidden, p) + self.bias  # ... P^T + beta

    def affine64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, beta) with f(x) = x M^T + beta at eval; M = I + P diag(c) P^T, in float64."""
        p, c = self.projection.detach().double(), self.scale.detach().double()
        eye = torch.eye(p.shape[0], dtype=torch.float64, device=p.device)
        return eye + (p * c) @ p.t(), self.bias.detach().double()

    def extra_repr(self) -> str:
        return f"position={self.position!r}, rank={self.scale.numel()}"


class ARCLinear(InputAdaptedLinear):
    """A block's qkv or fc1 with the ARC adapter on its input."""


@dataclass
class ARCConfig(MethodConfig):
    rank: int = option(50, "width of the shared projections P (`adapter_dim` in the official code)")
    dropout: float = option(0.1, "dropout on the rank-wide hidden (training only; `adapt_drop` officially)")
    positions: tuple[Literal["attn", "mlp"], ...] = option(
        ("attn", "mlp"), "where adapters go: attn (input of qkv), mlp (input of fc1)"
    )

    def __post_init__(self):
        self.require(self.rank > 0, "rank", f"must be positive, got {self.rank}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        self.require(len(self.positions) > 0, "positions", "name at least one of attn, mlp")
        self.require(
            set(self.positions) <= set(POSITIONS), "positions", f"must be among {list(POSITIONS)}, got {self.positions}"
        )
        self.require(len(set(self.positions)) == len(self.positions), "positions", "names a position twice")


@dataclass
class ARCAttConfig(ARCConfig):
    positions: tuple[Literal["attn", "mlp"], ...] = option(
        ("attn",), "where adapters go: attn (input of qkv), mlp (input of fc1)"
    )


@register_method
class ARC(Method):
    name = "arc"
    Config = ARCConfig

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        positions = tuple(p for p in POSITIONS if p in cfg.positions)  # attn before mlp, whatever the order
        first = model.get_submodule(places.blocks[0].qkv)
        factory = {"device": first.weight.device, "dtype": first.weight.dtype}
        shared = ARCProjections(places.embed_dim, cfg.rank, positions, **factory)
        for block in places.blocks:
            for position in positions:
                path = getattr(block, POSITIONS[position])
                base = model.get_submodule(path)
                adapter = ARCAdapter(shared, position, base.in_features, cfg.rank, cfg.dropout, **factory)
                replace_module(model, path, ARCLinear(base, adapter))
        model.add_module("arc_shared", shared)


@register_method
class ARCAtt(ARC):
    """ARC_att: the adapter before qkv only."""

    name = "arc_att"
    Config = ARCAttConfig
