"""KAdaptation's layer (He et al., AAAI 2023): Kronecker-sum updates on the q and v slices of a fused qkv.

For each of q and v, H = sum_{i=1..n} A_i kron B_i (D x D) with rank-one factors: A_i = a_i b_i^T (n x n,
"slow", shared by every block: :func:`kadaptation_rules`) and B_i = u_i v_i^T (D/n x D/n, "fast", per block).
Since kron(a b^T, u v^T) = (a kron u)(b kron v)^T, H = L R^T with L, R of shape (D, n): without dropout the
update is computed as ((x L) R^T), never forming H. Dropout acts on the matrix H itself (the paper's and
official code's semantics), so a training forward with dropout > 0 forms each block's H densely.
Merge: W_q' = W_q + kappa * H_q^T, b_q' = b_q + bias (same for v).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError
from .base import SharedTensors
from .wrapped_linear import WrappedLinear

ROLES = ("q", "v")


def kron_columns(slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    """The (n*m, n) matrix whose column i is kron(slow[i], fast[i]), from slow (n, n) and fast (n, m)."""
    n, m = fast.shape
    return torch.einsum("ip,iq->pqi", slow, fast).reshape(slow.shape[1] * m, n)


def kadaptation_rules(n: int, device=None, dtype=None) -> SharedTensors:
    """The slow weights A_i = a_i b_i^T shared by all blocks: ``rule_{q,v}_{left,right}`` (n x n, row i of
    left is a_i, of right is b_i), uniform in +-0.01."""
    return SharedTensors({
        f"rule_{role}_{side}": nn.init.uniform_(torch.empty(n, n, device=device, dtype=dtype), -0.01, 0.01)
        for role in ROLES
        for side in ("left", "right")
    })


class KAdaptationLinear(WrappedLinear):
    """A fused qkv linear plus the Kronecker updates on its q and v output slices.

    Args:
        base_layer: the backbone's fused qkv linear.
        rules: the shared slow weights (see :func:`kadaptation_rules`).
        q, v: the q and v slices of the layer's output (each as wide as its input).
        n: number of Kronecker terms.
        scale: kappa, multiplying the update.
        dropout: dropout on the update matrix H (training only).
    """

    def __init__(self, base_layer: nn.Linear, rules: SharedTensors, q: slice, v: slice, n: int,
                 scale: float, dropout: float):
        super().__init__(base_layer)
        dim = base_layer.in_features
        for part in (q, v):
            if part.stop - part.start != dim:
                raise BackboneError(
                    f"KAdaptation needs square q and v projections; got a slice of width "
                    f"{part.stop - part.start} on {dim} inputs"
                )
        # Not registered: the shared rules must appear once in the state_dict (on the model root).
        object.__setattr__(self, "_rules", rules)
        self.parts = {"q": q, "v": v}
        self.n, self.scale = n, scale
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        for role in ROLES:
            for side in ("left", "right"):  # row i of left is u_i, of right is v_i
                self.register_parameter(
                    f"fast_{role}_{side}", nn.Parameter(torch.empty(n, dim // n, **factory))
                )
        self.bias_update = nn.Parameter(torch.empty(dim, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # One factor of each B_i non-zero, the other zero (LoRA-style): the update starts at 0, and after
        # the first step every factor has a gradient. (Zeroing both, as released, would freeze them at 0.)
        for role in ROLES:
            left = getattr(self, f"fast_{role}_left")
            bound = math.sqrt(6.0 / (left.shape[1] + 1))  # glorot-uniform on each (D/n, 1) column u_i
            nn.init.uniform_(left, -bound, bound)
            nn.init.zeros_(getattr(self, f"fast_{role}_right"))
        nn.init.zeros_(self.bias_update)

    def factors(self, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(L, R), each (D, n), with H = L R^T for `role` (q or v)."""
        rule_left, rule_right = self._rules[f"rule_{role}_left"], self._rules[f"rule_{role}_right"]
        return (
            kron_columns(rule_left, getattr(self, f"fast_{role}_left")),
            kron_columns(rule_right, getattr(self, f"fast_{role}_right")),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.adapter_disabled:
            return out
        (lq, rq), (lv, rv) = self.factors("q"), self.factors("v")
        if self.dropout is not None and self.training:
            # Dropout on the matrix H: the faithful form needs H itself, one (D, D) matrix per role.
            dq = x @ self.dropout(lq @ rq.t())
            dv = x @ self.dropout(lv @ rv.t())
        else:
            hidden = F.linear(x, torch.cat([lq, lv], dim=1).t())  # (..., 2n): x L_q and x L_v at once
            dq = F.linear(hidden[..., : self.n], rq)
            dv = F.linear(hidden[..., self.n :], rv)
        # In place on the linear's fresh output: its backward needs only the input and weight.
        out[..., self.parts["q"]] += self.scale * dq + self.bias_update
        out[..., self.parts["v"]] += self.scale * dv + self.bias_update
        return out

    def merged(self) -> nn.Linear:
        w, b = self.base_weight64()
        for role in ROLES:
            left, right = (t.detach().double() for t in self.factors(role))
            part = self.parts[role]
            w[part] += self.scale * (left @ right.t()).t()
            b[part] += self.bias_update.detach().double()
        return self.fold(w, b)

    def extra_repr(self) -> str:
        return f"n={self.n}, scale={self.scale}, q={self.parts['q']}, v={self.parts['v']}"
