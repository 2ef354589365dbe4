"""ARC, Adapter Re-Composing (Dong et al., NeurIPS 2023): f(x) = x + Dropout(x P diag(c)) P^T + beta.

The down-projection P (D x rank) is shared by every block of one width -- one for the attention position,
one for the MLP position, held once on the model root (``arc_shared``; ``arc_shared_<width>`` per stage on a
Swin, as ARC's Swin code shares P per stage) -- and its transpose is the up-projection; each
block has its own re-scaling c and bias beta. ``arc`` puts the adapter on the inputs of ``attn.qkv`` and
``mlp.fc1``; ``arc_att`` on the input of ``attn.qkv`` only (one adapter before separate q, k and v linears,
which are joined for it). The adapter, its init and its merge rule (W' = W (I + P diag(c) P^T),
b' = b + W beta) live in ``layers/arc.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..backbones.targets import joint_linear
from ..layers.arc import ARCAdapter, ARCLinear, arc_projections
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method

# Position -> the block's linear whose input the adapter transforms.
POSITIONS = {"attn": "qkv", "mlp": "fc1"}


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
        first = model.get_submodule(places.blocks[0].fc1)
        factory = {"device": first.weight.device, "dtype": first.weight.dtype}
        # One set of projections per width: all blocks of a ViT, each stage of a Swin (ARC's Swin code).
        shared = {width: arc_projections(width, cfg.rank, positions, **factory) for width in places.widths}
        for block in places.blocks:
            for position in positions:
                path, _ = joint_linear(model, block, (POSITIONS[position],))
                base = model.get_submodule(path)
                adapter = ARCAdapter(
                    shared[places.width(block)], position, base.in_features, cfg.rank, cfg.dropout, **factory
                )
                replace_module(model, path, ARCLinear(base, adapter))
        for width, projections in shared.items():
            model.add_module(places.shared_name("arc_shared", width), projections)


@register_method
class ARCAtt(ARC):
    """ARC_att: the adapter before qkv only."""

    name = "arc_att"
    Config = ARCAttConfig
