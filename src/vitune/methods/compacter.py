"""Compacter (Karimi Mahabadi et al., NeurIPS 2021): a sequential adapter whose projections are PHM layers.

    H' = H + up(gelu(down(LN(H))))      H the MLP branch's output, where it joins the residual stream
    PHM layer: y = x W + b,  W = sum_{i=1..n} kron(S_i, u_i v_i^T)   (W is in x out; ``layers/phm.py``)

The n x n "rules" S_i are one tensor shared by every PHM layer of every block (PEViT's layout; one per width,
``compacter_shared_<width>``, on a Swin whose stages differ); the rank-1
factors u_i (in/n) and v_i (out/n) and the bias are per layer. Defaults follow PEViT's Compacter baseline:
n = 4, bottleneck 64, LayerNorm before the down projection, tanh-approximated GELU, factors glorot-uniform
with gain sqrt(2), biases zero, rules U(-1, 1). PEViT never trains its rules (their name misses its
trainable filter); here they train unless ``learn_rules=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers.bottleneck import Activation, Bottleneck
from ..layers.branch_adapters import SequentialAdapters
from ..layers.phm import PHMLinear, phm_rules
from ..surgery import replace_module
from .base import Method, rename_sublayer_adapters, require_branch_ends
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class CompacterConfig(MethodConfig):
    bottleneck: int = option(64, "hidden width of each adapter (PEViT: 64)")
    n: int = option(4, "PHM dimension: number of Kronecker terms and size of each rule matrix")
    rank: int = option(1, "rank of each per-layer factor U_i = u_i v_i^T")
    layernorm: bool = option(True, "a LayerNorm on the adapter input, before the down projection (PEViT)")
    act: Activation = option("gelu_tanh", "activation between the projections (PEViT forces gelu_new = gelu_tanh)")
    learn_rules: bool = option(
        True, "train the shared rule matrices S_i; false keeps them at their random init, as PEViT's code "
        "does by accident (they are then saved as buffers)"
    )
    dropout: float = option(0.0, "dropout on the bottleneck activations (training only)")

    def __post_init__(self):
        for key in ("bottleneck", "n", "rank"):
            self.require(getattr(self, key) > 0, key, f"must be positive, got {getattr(self, key)}")
        self.require(self.bottleneck % self.n == 0, "bottleneck",
                     f"must be divisible by n={self.n}, got {self.bottleneck}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@register_method
class Compacter(Method):
    name = "compacter"
    Config = CompacterConfig
    mergeable = False
    not_mergeable_reason = (
        "its bottleneck has a GELU between the down and up PHM projections, so the branch is not linear in "
        "the input and cannot be folded into the backbone's weights; it adds inference cost"
    )

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        ref = model.get_submodule(places.blocks[0].fc1).weight
        factory = {"device": ref.device, "dtype": ref.dtype}
        require_branch_ends(places, ("mlp_branch",), self.name)
        # One set of rules per width (per stage on a Swin), like ARC's per-stage projections.
        shared = {width: phm_rules(cfg.n, cfg.learn_rules, **factory) for width in places.widths}
        for width, rules in shared.items():
            model.add_module(places.shared_name("compacter_shared", width), rules)
        for block in places.blocks:
            dim, rules = places.width(block), shared[places.width(block)]
            adapter = Bottleneck(
                PHMLinear(dim, cfg.bottleneck, rules, cfg.rank, **factory),
                PHMLinear(cfg.bottleneck, dim, rules, cfg.rank, **factory),
                act=cfg.act, dropout=cfg.dropout, layernorm="in" if cfg.layernorm else "none",
            )
            end = model.get_submodule(block.mlp_branch)
            replace_module(model, block.mlp_branch, SequentialAdapters(end, [adapter]))

    def from_storage(self, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Files saved when the adapters wrapped the sublayer name them there; same tensors, new place.
        return rename_sublayer_adapters(state, self.places)
