"""KAdaptation (He et al., AAAI 2023): a sum of Kronecker products added to the query and value weights.

For each of q and v, H = sum_{i=1..n} A_i kron B_i (D x D) with rank-one factors A_i = a_i b_i^T (n x n,
"slow" weights, shared by every block, one set for q and one for v) and B_i = u_i v_i^T (D/n x D/n,
"fast" weights, per block, separate for q and v). The update is

    q <- q + kappa * Dropout(H_q)(x) + bias,    v <- v + kappa * Dropout(H_v)(x) + bias,

with one zero-initialised bias per block shared by q and v, applied to the q and v slices of timm's
fused qkv output (before attention's 1/sqrt(d) scaling), so it is a true weight delta:
W_q' = W_q + kappa * H_q^T, b_q' = b_q + bias (same for v).

Since kron(a b^T, u v^T) = (a kron u)(b kron v)^T, H = L R^T with L, R of shape (D, n): without dropout
the update is computed as ((x L) R^T), never forming H. Dropout acts on the matrix H itself (the paper's
and official code's semantics), so a training forward with dropout > 0 forms each block's H densely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError, ConfigError
from ..layers import WrappedLinear
from ..surgery import replace_module
from .base import Method, VituneModule
from .config import MethodConfig, option
from .registry import register_method

ROLES = ("q", "v")


def kron_columns(slow: torch.Tensor, fast: torch.Tensor) -> torch.Tensor:
    """The (n*m, n) matrix whose column i is kron(slow[i], fast[i]), from slow (n, n) and fast (n, m)."""
    n, m = fast.shape
    return torch.einsum("ip,iq->pqi", slow, fast).reshape(slow.shape[1] * m, n)


class KAdaptationRules(VituneModule):
    """The slow weights A_i = a_i b_i^T shared by all blocks, held once on the model root."""

    def __init__(self, n: int, device=None, dtype=None):
        super().__init__()
        for role in ROLES:
            for side in ("left", "right"):  # row i of left is a_i, of right is b_i
                self.register_parameter(
                    f"rule_{role}_{side}", nn.Parameter(torch.empty(n, n, device=device, dtype=dtype))
                )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            nn.init.uniform_(p, -0.01, 0.01)

    def factors(self, role: str) -> tuple[nn.Parameter, nn.Parameter]:
        return getattr(self, f"rule_{role}_left"), getattr(self, f"rule_{role}_right")

    def merged(self) -> None:
        return None  # every block has folded its update into its qkv already


class KAdaptationLinear(WrappedLinear):
    """A fused qkv linear plus the Kronecker updates on its q and v output slices."""

    def __init__(self, base_layer: nn.Linear, rules: KAdaptationRules, q: slice, v: slice, n: int,
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
        rule_left, rule_right = self._rules.factors(role)
        return (
            kron_columns(rule_left, getattr(self, f"fast_{role}_left")),
            kron_columns(rule_right, getattr(self, f"fast_{role}_right")),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
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


@dataclass
class KAdaptationConfig(MethodConfig):
    n: int = option(32, "number of Kronecker terms and size of the shared A_i (n x n); the width must divide by n")
    scale: float = option(160.0, "kappa, multiplying the update (160 in the official code: 128 / 4 * 5)")
    dropout: float = option(0.5, "dropout on the update matrix H (training only)")

    def __post_init__(self):
        self.require(self.n > 0, "n", f"must be positive, got {self.n}")
        self.require(self.scale != 0.0, "scale", "must not be 0 (the update would do nothing and never learn)")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


@register_method
class KAdaptation(Method):
    name = "kadaptation"
    Config = KAdaptationConfig

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        if places.embed_dim % cfg.n:
            raise ConfigError(f"kadaptation.n: the width {places.embed_dim} is not a multiple of n={cfg.n}")
        first = model.get_submodule(places.blocks[0].qkv)
        rules = KAdaptationRules(cfg.n, device=first.weight.device, dtype=first.weight.dtype)
        for block in places.blocks:
            (q_path, q), (v_path, v) = block.linear("q"), block.linear("v")
            if q_path != v_path or q is None or v is None:
                raise BackboneError(
                    f"kadaptation: {block.block} computes q and v in separate layers ({q_path}, {v_path}); "
                    "this implementation adapts the q and v slices of one fused qkv linear"
                )
            base = model.get_submodule(q_path)
            replace_module(model, q_path, KAdaptationLinear(base, rules, q, v, cfg.n, cfg.scale, cfg.dropout))
        model.add_module("kadaptation_shared", rules)
