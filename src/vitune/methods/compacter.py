"""Compacter (Karimi Mahabadi et al., NeurIPS 2021): a sequential adapter whose projections are PHM layers.

    H' = H + up(gelu(down(LN(H))))      after each block's MLP output H
    PHM layer: y = x W + b,  W = sum_{i=1..n} kron(S_i, u_i v_i^T)   (W is in x out)

The n x n "rules" S_i are one tensor shared by every PHM layer of every block (PEViT's layout); the rank-1
factors u_i (in/n) and v_i (out/n) and the bias are per layer. Defaults follow PEViT's Compacter baseline:
n = 4, bottleneck 64, LayerNorm before the down projection, tanh-approximated GELU, factors glorot-uniform
with gain sqrt(2), biases zero, rules U(-1, 1). PEViT never trains its rules (their name misses its
trainable filter); here they train unless ``learn_rules=False``.

Training never builds W: with x cut into n blocks of in/n features, x W = sum_i (sum_a S_i[a, b] (x_a . u_i)) v_i,
which costs about n*in + n^3 + n*out per token instead of in*out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.bottleneck import Activation, Bottleneck, SequentialAdapters
from ..surgery import replace_module
from .base import Method, VituneModule
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


class PHMRules(VituneModule):
    """The rule matrices S (n, n, n) shared by every PHM layer; lives once on the model root."""

    def __init__(self, n: int, learn: bool, device=None, dtype=None):
        super().__init__()
        rules = torch.empty(n, n, n, device=device, dtype=dtype).uniform_(-1.0, 1.0)
        if learn:
            self.rules = nn.Parameter(rules)
        else:
            self.register_buffer("rules", rules)

    def merged(self) -> None:
        return None


class PHMLinear(nn.Module):
    """y = x W + b with W = sum_i kron(S_i, U_i), U_i = left_i @ right_i of rank `rank`."""

    def __init__(self, in_features: int, out_features: int, rules: PHMRules, rank: int = 1,
                 device=None, dtype=None):
        super().__init__()
        n = rules.rules.shape[0]
        if in_features % n or out_features % n:
            raise ValueError(f"PHM layer {in_features}->{out_features}: both widths must be divisible by n={n}")
        self.in_features, self.out_features, self.n = in_features, out_features, n
        object.__setattr__(self, "_rules", rules)  # shared: not registered here, so stored once
        factory = {"device": device, "dtype": dtype}
        self.left = nn.Parameter(torch.empty(n, in_features // n, rank, **factory))
        self.right = nn.Parameter(torch.empty(n, rank, out_features // n, **factory))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory))
        self.reset_parameters()

    @property
    def weight(self) -> torch.Tensor:
        """The dense (in x out) matrix: for inspection and tests only, never used by forward."""
        factors = torch.bmm(self.left, self.right)
        return sum(torch.kron(s, u) for s, u in zip(self._rules.rules, factors))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # PEViT: glorot-uniform with gain sqrt(2) on each factor matrix, zero bias.
        for factor in (*self.left, *self.right):
            nn.init.xavier_uniform_(factor, gain=math.sqrt(2))
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, (self.n, -1))  # (..., a, in/n)
        t = torch.einsum("...ap,ipr->...iar", blocks, self.left)  # x_a . u_i
        z = torch.einsum("...iar,iab->...ibr", t, self._rules.rules.to(x.dtype))  # mix blocks by S_i
        y = torch.einsum("...ibr,irq->...bq", z, self.right)  # spread over v_i
        return y.flatten(-2) + self.bias


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
        dim = places.embed_dim
        ref = model.get_submodule(places.blocks[0].fc1).weight
        factory = {"device": ref.device, "dtype": ref.dtype}
        rules = PHMRules(cfg.n, cfg.learn_rules, **factory)
        model.add_module("compacter_shared", rules)
        for block in places.blocks:
            adapter = Bottleneck(
                PHMLinear(dim, cfg.bottleneck, rules, cfg.rank, **factory),
                PHMLinear(cfg.bottleneck, dim, rules, cfg.rank, **factory),
                act=cfg.act, dropout=cfg.dropout, layernorm="in" if cfg.layernorm else "none",
            )
            replace_module(model, block.mlp, SequentialAdapters(model.get_submodule(block.mlp), [adapter]))
