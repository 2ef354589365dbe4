"""Bottleneck adapter (Houlsby et al., 2019; Pfeiffer et al., 2021): the baseline of the VTAB tables.

    H' = H + s * up(act(down(H)))      after a block's sublayer output H, inside the sublayer's residual

- placement "pfeiffer" (default; NOAH's "Adapter" baseline): after the MLP only.
- placement "houlsby": also after the attention sublayer (the output of attn.proj).
Defaults: bottleneck 8, ReLU, no inner LayerNorm (PEViT's adapter has one: ``layernorm=True``), and the
up projection starts at zero so the adapted model starts as the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..layers.bottleneck import Activation, LinearInit, SequentialAdapters, linear_bottleneck
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class AdapterConfig(MethodConfig):
    bottleneck: int = option(8, "hidden width of each adapter")
    placement: Literal["pfeiffer", "houlsby"] = option(
        "pfeiffer", "pfeiffer: after the MLP only; houlsby: after the attention sublayer and after the MLP"
    )
    act: Activation = option("relu", "activation between the projections: relu, gelu, gelu_tanh, quick_gelu")
    layernorm: bool = option(False, "a LayerNorm on the adapter input, before the down projection (PEViT)")
    scale: float = option(1.0, "the adapter output is multiplied by this")
    dropout: float = option(0.0, "dropout on the bottleneck activations (training only)")
    init: LinearInit = option(
        "lora", "lora: down kaiming-uniform, up and biases zero (starts as the backbone); xavier: NOAH's "
        "(xavier weights, tiny random biases); bert: PEViT's (N(0, 0.02) weights, zero biases)"
    )

    def __post_init__(self):
        self.require(self.bottleneck > 0, "bottleneck", f"must be positive, got {self.bottleneck}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@register_method
class Adapter(Method):
    name = "adapter"
    Config = AdapterConfig
    mergeable = False
    not_mergeable_reason = (
        "its bottleneck has a nonlinearity between the down and up projections, so the branch is not linear "
        "in the input and cannot be folded into the backbone's weights; it adds inference cost"
    )

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        dim = places.embed_dim
        ref = model.get_submodule(places.blocks[0].fc1).weight
        sublayers = ("attn", "mlp") if cfg.placement == "houlsby" else ("mlp",)
        for block in places.blocks:
            for role in sublayers:
                path = getattr(block, role)
                adapter = linear_bottleneck(
                    dim, cfg.bottleneck, init=cfg.init, act=cfg.act, dropout=cfg.dropout, scale=cfg.scale,
                    layernorm="in" if cfg.layernorm else "none", device=ref.device, dtype=ref.dtype,
                )
                replace_module(model, path, SequentialAdapters(model.get_submodule(path), [adapter]))
