"""LoRA (Hu et al., 2022): a low-rank update added to a linear layer's weight, W' = W + (alpha/r) B A.

Default placement: the q and v parts of timm's fused qkv in every block, rank 8 (the NOAH/VTAB baseline);
where q and v are linears of their own (Hugging Face's models), each gets its update, with the same parameters.
The whole ``qkv`` role is one update over q, k and v together, as on a fused qkv (separate linears are joined
for it). The layer and its merge rule live in ``layers/lora.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..backbones.targets import linear_targets
from ..layers.lora import LoRALinear
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class LoRAConfig(MethodConfig):
    r: int = option(8, "rank of the update")
    alpha: float = option(8.0, "the update is scaled by alpha / r")
    dropout: float = option(0.0, "dropout on the input of the low-rank branch (training only)")
    targets: tuple[str, ...] = option(
        ("q", "v"), "roles adapted in every block: q, k, v (parts of the fused qkv, or their own linears), qkv, "
        "proj, fc1, fc2"
    )
    pattern: str | None = option(
        None, "regular expression over module names; when set, every matching nn.Linear except the head "
        "is adapted instead of `targets`"
    )

    def __post_init__(self):
        self.require(self.r > 0, "r", f"must be positive, got {self.r}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@register_method
class LoRA(Method):
    name = "lora"
    Config = LoRAConfig

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        for path, parts in linear_targets(model, places, cfg.targets, cfg.pattern, join=True).items():
            base = model.get_submodule(path)
            replace_module(model, path, LoRALinear(base, cfg.r, cfg.alpha, cfg.dropout, parts))
