"""Bottleneck adapter (Houlsby et al., 2019; Pfeiffer et al., 2021): the baseline of the VTAB tables.

    H' = H + s * up(act(down(H)))      H the output of a residual branch, where it joins the residual stream

- placement "pfeiffer" (default; NOAH's "Adapter" baseline): after the MLP branch only,
  X2 = X1 + H + a(H), H = DP(LS(MLP(LN2(X1)))) (NOAH's and PEViT's placement).
- placement "houlsby": also after the attention branch.
Defaults: bottleneck 8, ReLU, no inner LayerNorm (PEViT's adapter has one: ``layernorm=True``), and the
up projection starts at zero so the adapted model starts as the backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..layers.bottleneck import Activation, LinearInit, linear_bottleneck
from ..layers.branch_adapters import SequentialAdapters
from ..surgery import replace_module
from .base import Method, rename_sublayer_adapters, require_branch_ends
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class AdapterConfig(MethodConfig):
    bottleneck: int = option(8, "hidden width of each adapter")
    placement: Literal["pfeiffer", "houlsby"] = option(
        "pfeiffer", "pfeiffer: after the MLP branch only; houlsby: after the attention branch and the MLP branch"
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
        ref = model.get_submodule(places.blocks[0].fc1).weight
        branches = ("attn_branch", "mlp_branch") if cfg.placement == "houlsby" else ("mlp_branch",)
        require_branch_ends(places, branches, self.name)
        for block in places.blocks:
            for branch in branches:
                path = getattr(block, branch)
                adapter = linear_bottleneck(
                    places.width(block), cfg.bottleneck, init=cfg.init, act=cfg.act, dropout=cfg.dropout, scale=cfg.scale,
                    layernorm="in" if cfg.layernorm else "none", device=ref.device, dtype=ref.dtype,
                )
                replace_module(model, path, SequentialAdapters(model.get_submodule(path), [adapter]))

    def from_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Files saved when the adapters wrapped the sublayer name them there; same tensors, new place.
        return rename_sublayer_adapters(state, self.places)
