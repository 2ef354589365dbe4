"""LoRA (Hu et al., 2022): a low-rank update added to a linear layer's weight, W' = W + (alpha/r) B A.

Default placement: the q and v parts of timm's fused qkv in every block, rank 8 (the NOAH/VTAB baseline).
Training computes the factored branch, (x A^T) B^T, never the dense update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.targets import linear_targets
from ..layers import WrappedLinear
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


def lora_delta_weight(lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """The update for each output part: (k, out_part, in) from A (k*r, in) and B (k, out_part, r)."""
    k, _, r = lora_b.shape
    return scale * torch.bmm(lora_b, lora_a.reshape(k, r, -1))


@dataclass
class LoRAConfig(MethodConfig):
    r: int = option(8, "rank of the update")
    alpha: float = option(8.0, "the update is scaled by alpha / r")
    dropout: float = option(0.0, "dropout on the input of the low-rank branch (training only)")
    targets: tuple[str, ...] = option(
        ("q", "v"), "roles adapted in every block: q, k, v (parts of the fused qkv), qkv, proj, fc1, fc2"
    )
    pattern: str | None = option(
        None, "regular expression over module names; when set, every matching nn.Linear except the head "
        "is adapted instead of `targets`"
    )

    def __post_init__(self):
        self.require(self.r > 0, "r", f"must be positive, got {self.r}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


class LoRALinear(WrappedLinear):
    """A linear layer plus a low-rank branch on the whole output or on equal-width parts of it."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float,
                 parts: tuple[slice, ...] | None = None):
        super().__init__(base_layer)
        self.parts = parts
        k = len(parts) if parts else 1
        width = (parts[0].stop - parts[0].start) if parts else base_layer.out_features
        if parts and any(p.stop - p.start != width for p in parts):
            raise ValueError("LoRA parts of one layer must have equal widths")
        self.r, self.scale = r, alpha / r
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(k * r, base_layer.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(k, width, r, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each part's A as nn.Linear(in, r) would be initialised; B = 0 so the branch starts at zero.
        for a in self.lora_A.data.split(self.r):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        hidden = F.linear(self.dropout(x), self.lora_A)  # (..., k*r): one matmul for all parts
        for j, h in enumerate(hidden.split(self.r, dim=-1)):
            delta = F.linear(h, self.lora_B[j]) * self.scale
            if self.parts is None:
                out = out + delta
            else:
                # In place on the linear's fresh output: its backward needs only the input and weight.
                out[..., self.parts[j]] += delta
        return out

    def merged(self) -> nn.Linear:
        w, b = self.base_weight64()
        delta = lora_delta_weight(self.lora_A.double(), self.lora_B.double(), self.scale)
        for j, part in enumerate(self.parts or (slice(None),)):
            w[part] += delta[j]
        return self.fold(w, b)


@register_method
class LoRA(Method):
    name = "lora"
    Config = LoRAConfig

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        for path, parts in linear_targets(model, places, cfg.targets, cfg.pattern).items():
            base = model.get_submodule(path)
            replace_module(model, path, LoRALinear(base, cfg.r, cfg.alpha, cfg.dropout, parts))
