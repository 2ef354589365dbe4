"""Bottleneck adapters: a(z) = s * up(dropout(act(down(z)))); ``branch_adapters.py`` places them in a block.

The bottleneck is shared by AdaptFormer, the Houlsby/Pfeiffer adapter and Compacter; they differ in the
projections (dense or PHM), the activation, the optional LayerNorm, the scale and the initialisation.
The nonlinearity between the projections is what makes all of them impossible to merge into the
backbone's weights.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from timm.layers import QuickGELU
from torch import nn


Activation = Literal["relu", "gelu", "gelu_tanh", "quick_gelu"]
BottleneckNorm = Literal["none", "in", "out"]
LinearInit = Literal["lora", "xavier", "bert"]


def make_activation(name: str) -> nn.Module:
    """relu; gelu (exact); gelu_tanh (BERT's gelu_new, PEViT's Compacter); quick_gelu (CLIP's, NOAH's adapter)."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"unknown activation {name!r}")


@torch.no_grad()
def init_linear_pair(down: nn.Linear, up: nn.Linear, scheme: str) -> None:
    """Initialise a dense down/up pair.

    lora:   down as nn.Linear's default (kaiming-uniform, a=sqrt(5)); up and both biases zero, so the branch
            starts at exactly zero (AdaptFormer's "lora" option).
    xavier: xavier-uniform weights, biases N(0, 1e-6) (NOAH's adapter); the branch starts non-zero.
    bert:   weights N(0, 0.02), zero biases (PEViT's adapter); the branch starts non-zero.
    """
    if scheme == "lora":
        nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        for t in (up.weight, down.bias, up.bias):
            nn.init.zeros_(t)
    elif scheme == "xavier":
        for layer in (down, up):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.normal_(layer.bias, std=1e-6)
    elif scheme == "bert":
        for layer in (down, up):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
    else:
        raise ValueError(f"unknown init scheme {scheme!r}")


class Bottleneck(nn.Module):
    """a(z) = s * up(dropout(act(down(z)))).

    Args:
        down: projection dim -> hidden (an nn.Linear, or any module with in_features/out_features).
        up: projection hidden -> dim.
        act: activation name (see `make_activation`).
        dropout: dropout on the hidden activations (training only).
        scale: the factor s; with `learnable_scale` it is a trained scalar starting at this value.
        layernorm: "in" normalises z before `down`; "out" normalises the scaled output (AdaptFormer's
            options, one LayerNorm module either way); "none" has no LayerNorm.
    """

    def __init__(self, down: nn.Module, up: nn.Module, *, act: Activation = "relu", dropout: float = 0.0,
                 scale: float = 1.0, learnable_scale: bool = False, layernorm: BottleneckNorm = "none"):
        super().__init__()
        dim = down.in_features
        if up.out_features != dim or up.in_features != down.out_features:
            raise ValueError("a bottleneck's up projection must map the hidden width back to the input width")
        ref = next(down.parameters())
        factory = {"device": ref.device, "dtype": ref.dtype}
        self.layernorm = layernorm
        self.norm = nn.LayerNorm(dim, **factory) if layernorm in ("in", "out") else None
        self.down = down
        self.act = make_activation(act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = up
        if learnable_scale:
            self.scale = nn.Parameter(torch.full((1,), float(scale), **factory))
        else:
            self.scale = float(scale)

    def extra_repr(self) -> str:
        scale = "learnable" if isinstance(self.scale, nn.Parameter) else self.scale
        return f"scale={scale}, layernorm={self.layernorm!r}"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.layernorm == "in":
            z = self.norm(z)
        out = self.up(self.dropout(self.act(self.down(z)))) * self.scale
        if self.layernorm == "out":
            out = self.norm(out)
        return out


def linear_bottleneck(dim: int, hidden: int, *, init: str = "lora", device=None, dtype=None,
                      **kwargs) -> Bottleneck:
    """A bottleneck with dense projections dim -> hidden -> dim, initialised by `init_linear_pair`."""
    down = nn.Linear(dim, hidden, device=device, dtype=dtype)
    up = nn.Linear(hidden, dim, device=device, dtype=dtype)
    init_linear_pair(down, up, init)
    return Bottleneck(down, up, **kwargs)
