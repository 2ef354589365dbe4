"""KAdaptation's layer (He et al., AAAI 2023): Kronecker-sum updates on the q and v slices of a fused qkv.

For each of q and v, H = sum_{i=1..n} A_i kron B_i (D x D) with rank-one factors: A_i = a_i b_i^T (n x n,
"slow", shared by every block: :func:`kadaptation_rules`) and B_i = u_i v_i^T (D/n x D/n, "fast", per block).
Since kron(a b^T, u v^T) = (a kron u)(b kron v)^T, H = L R^T with L, R of shape (D, n).

The same math takes one of two training forms:
- without dropout (dropout 0, or eval): x L R^T, never forming H, in the layouts of ``layers/low_rank.py``:
  x [L_q L_v] in one product, then, the layer running as one product per row range of its weight (q, k, v,
  concatenated), each role's R^T added onto its rows' product (no in-place adds into slices of one output).
- with dropout, which acts on the matrix H itself (the paper's and official code's semantics): a random mask
  on the D x D entries has no low-rank structure, so x Dropout(H) needs H densely, and its gradient the dense
  x^T g (D x D per role, from every token): those products are the method's own cost. Rather than adding
  x Dropout(H) to the output (a second product per role, forward and backward), the dropped update joins the
  role's rows of the weight, W_q + kappa Dropout(H_q)^T, and the layer runs as one dense linear whose only
  extra work is the weight gradient of those rows (``layers/folded_linear.py``).
Merge: W_q' = W_q + kappa * H_q^T, b_q' = b_q + bias (same for v).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BackboneError
from .base import SharedTensors
from .folded_linear import FoldedLinear
from .low_rank import add_up_projection, down_project
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
        # The output's row ranges in order, each with the role whose update it takes (None: left as it is).
        bounds = sorted({0, base_layer.out_features, q.start, q.stop, v.start, v.stop})
        roles = {(p.start, p.stop): role for role, p in self.parts.items()}
        self.segments = [(slice(a, b), roles.get((a, b))) for a, b in zip(bounds, bounds[1:])]
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
        if self.adapter_disabled:
            return self.base_layer(x)
        factors = {role: self.factors(role) for role in ROLES}
        weight, bias = self.base_layer.weight, self.base_layer.bias
        if self.dropout is not None and self.training:
            # Each role's dropped update joins its rows of the weight. Dropout(H)^T is dropout on H^T: a mask
            # drawn entry by entry, transposed.
            updates, tensors = [], []
            for role in ROLES:
                left, right = factors[role]
                part = self.parts[role]
                updates.append(("rows", part.start, part.stop))
                tensors += [self.scale * self.dropout(right @ left.t()), None]
                # The shared bias joins the layer's bias (a tensor passed twice would stop torch.compile).
                shift = F.pad(self.bias_update, (part.start, self.out_features - part.stop))
                bias = shift if bias is None else bias + shift
            return FoldedLinear.apply(x, weight, bias, tuple(updates), *tensors)
        tokens = x.reshape(-1, self.in_features)
        # (2n, tokens): x L_q and x L_v in one product
        hidden_t = down_project(tokens, torch.cat([factors[role][0] for role in ROLES], dim=1).t())
        pieces = []
        for rows, role in self.segments:  # each row range of the weight, one product each
            b = bias[rows] if bias is not None else None
            piece = F.linear(tokens, weight[rows], b)
            if role is not None:
                k = ROLES.index(role)
                up = factors[role][1].t().contiguous()  # R^T, (n, D) row-major (layers/low_rank.py)
                piece = add_up_projection(piece + self.bias_update, hidden_t[k * self.n:(k + 1) * self.n], up,
                                          self.scale)
            pieces.append(piece)
        return torch.cat(pieces, dim=-1).view(*x.shape[:-1], self.out_features)

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
