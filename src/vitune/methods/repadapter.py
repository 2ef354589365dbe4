"""RepAdapter (Luo et al., 2023): a linear adapter on the input of a linear layer, merged away after training.

``repadapter`` is the paper's "repblock": one adapter before ``attn.qkv`` (reading LN1's output) and one
before ``mlp.fc1`` (reading LN2's output) in every block. ``repadapter_attn`` ("repattn") keeps only the
first. With ``pattern``, every matching ``nn.Linear`` but the head gets one (the README's
``set_repadapter(model, pattern)``). Where q, k and v are linears of their own (Hugging Face's models), the
adapter before ``qkv`` is one adapter before the three, joined for it, with the parameters and the merge of
the fused case. The adapter itself lives in ``layers/repadapter.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..backbones import WHOLE_LINEAR_ROLES
from ..backbones.targets import linear_targets
from ..errors import ConfigError
from ..layers.repadapter import RepAdapterLinear
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class RepAdapterConfig(MethodConfig):
    r: int = option(8, "hidden width of the adapter (`hidden_dim` / `--dim` in the official code)")
    groups: int = option(2, "groups of the second projection (block-diagonal); r and the width must divide by it")
    dropout: float = option(0.1, "dropout on the adapter's hidden (training only)")
    scale: float = option(
        1.0, "s, multiplying the adapter's output; the official recipes pick it per dataset from "
        "{0.1, 0.5, 1, 5, 10}"
    )
    targets: tuple[str, ...] = option(
        ("qkv", "fc1"), "roles whose INPUT gets an adapter in every block: qkv, proj, fc1, fc2"
    )
    pattern: str | None = option(
        None, "regular expression over module names; when set, every matching nn.Linear except the head "
        "gets an adapter on its input instead of `targets`"
    )

    def __post_init__(self):
        self.require(self.r > 0, "r", f"must be positive, got {self.r}")
        self.require(self.groups > 0, "groups", f"must be positive, got {self.groups}")
        self.require(self.r % self.groups == 0, "r", f"must be a multiple of groups={self.groups}, got {self.r}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        self.require(self.scale != 0.0, "scale", "must not be 0 (the adapter would do nothing and never learn)")
        parts = [t for t in self.targets if t not in WHOLE_LINEAR_ROLES]
        self.require(
            not parts, "targets",
            f"{parts[0] if parts else ''!r} is not a whole linear layer: RepAdapter adapts a layer's input, "
            f"so targets are among {list(WHOLE_LINEAR_ROLES)} (q, k and v share qkv's input; use 'qkv')",
        )


@dataclass
class RepAdapterAttnConfig(RepAdapterConfig):
    targets: tuple[str, ...] = option(
        ("qkv",), "roles whose INPUT gets an adapter in every block: qkv, proj, fc1, fc2"
    )


@register_method
class RepAdapterMethod(Method):
    name = "repadapter"
    Config = RepAdapterConfig

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        paths = list(linear_targets(model, places, cfg.targets, cfg.pattern, join=True))
        for path in paths:  # check every target before the first replacement
            width = model.get_submodule(path).in_features
            if width % cfg.groups:
                raise ConfigError(f"{self.name}: {path} has {width} inputs, not a multiple of groups={cfg.groups}")
        for path in paths:
            base = model.get_submodule(path)
            replace_module(model, path, RepAdapterLinear(base, cfg.r, cfg.groups, cfg.dropout, cfg.scale))


@register_method
class RepAdapterAttnMethod(RepAdapterMethod):
    """RepAdapter_attn ("repattn"): the adapter before qkv only."""

    name = "repadapter_attn"
    Config = RepAdapterAttnConfig
