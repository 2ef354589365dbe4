"""The PHM layer of Compacter (Karimi Mahabadi et al., NeurIPS 2021): y = x W + b, W = sum_i kron(S_i, U_i).

The n x n "rules" S_i are one tensor shared by every PHM layer (:func:`phm_rules`); the rank-r factors
U_i = left_i @ right_i and the bias are per layer. Training never builds W: with x cut into n blocks of in/n
features, x W = sum_i (sum_a S_i[a, b] (x_a . u_i)) v_i, which costs about n*in + n^3 + n*out per token
instead of in*out.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import SharedTensors


def phm_rules(n: int, learn: bool = True, device=None, dtype=None) -> SharedTensors:
    """The rule matrices ``rules`` (n, n, n), uniform in (-1, 1): parameters, or frozen buffers with `learn` off."""
    rules = torch.empty(n, n, n, device=device, dtype=dtype).uniform_(-1.0, 1.0)
    return SharedTensors({"rules": rules}, trainable=learn)


class PHMLinear(nn.Module):
    """y = x W + b with W = sum_i kron(S_i, U_i), U_i = left_i @ right_i of rank `rank`.

    Args:
        in_features: input width, divisible by n.
        out_features: output width, divisible by n.
        rules: the shared holder of the rules S (see :func:`phm_rules`); n is their size.
        rank: rank of each U_i.
    """

    def __init__(self, in_features: int, out_features: int, rules: SharedTensors, rank: int = 1,
                 device=None, dtype=None):
        super().__init__()
        n = rules["rules"].shape[0]
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
        return sum(torch.kron(s, u) for s, u in zip(self._rules["rules"], factors))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # PEViT: glorot-uniform with gain sqrt(2) on each factor matrix, zero bias.
        for factor in (*self.left, *self.right):
            nn.init.xavier_uniform_(factor, gain=math.sqrt(2))
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, (self.n, -1))  # (..., a, in/n)
        t = torch.einsum("...ap,ipr->...iar", blocks, self.left)  # x_a . u_i
        z = torch.einsum("...iar,iab->...ibr", t, self._rules["rules"].to(x.dtype))  # mix blocks by S_i
        y = torch.einsum("...ibr,irq->...bq", z, self.right)  # spread over v_i
        return y.flatten(-2) + self.bias
