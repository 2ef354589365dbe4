"""RepAdapter's adapter (Luo et al., 2023): f(x) = x + s * B(Dropout(A(x))), a linear map with a skip.

A is dense (r x D, with bias); B is grouped: output channels [j*D/g, (j+1)*D/g) read only hidden channels
[j*r/g, (j+1)*r/g) (with bias). The scale s multiplies all of B's output, its bias included. There is no
nonlinearity, so at eval f(x) = x (I + s W_B W_A)^T + s (W_B b_A + b_B), with W_B the block-diagonal
expansion of the grouped weight; the adapter then folds into the linear layer it feeds.

Tensors (official Conv1d names in brackets, for converting their checkpoints):
``weight_A`` (r, D) [conv_A.weight (r, D, 1)], ``bias_A`` (r,) [conv_A.bias],
``weight_B`` (D, r/g) [conv_B.weight (D, r/g, 1)], ``bias_B`` (D,) [conv_B.bias].
"""

from __future__ import annotations

import torch
from torch import nn

from .grouped_linear import grouped_dense_weight
from .input_adapted_linear import InputAdaptedLinear
from .low_rank import add_up_projection, down_project


class RepAdapter(nn.Module):
    """The adapter alone, acting on the last dimension of its input.

    Args:
        dim: width D of the input (and output).
        r: hidden width (``hidden_dim`` in the official code).
        groups: groups g of the second projection; r and D must be multiples of g.
        dropout: dropout on the r-wide hidden (training only).
        scale: s, multiplying the whole second projection (bias included).
    """

    def __init__(self, dim: int, r: int = 8, groups: int = 2, dropout: float = 0.1, scale: float = 1.0,
                 device=None, dtype=None):
        super().__init__()
        if r % groups or dim % groups:
            raise ValueError(f"RepAdapter: r={r} and width {dim} must both be multiples of groups={groups}")
        factory = {"device": device, "dtype": dtype}
        self.dim, self.r, self.groups, self.scale = dim, r, groups, scale
        self.weight_A = nn.Parameter(torch.empty(r, dim, **factory))
        self.bias_A = nn.Parameter(torch.empty(r, **factory))
        self.weight_B = nn.Parameter(torch.empty(dim, r // groups, **factory))
        self.bias_B = nn.Parameter(torch.empty(dim, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier A, zero B: the adapter starts as the identity and B learns first.
        nn.init.xavier_uniform_(self.weight_A)
        nn.init.zeros_(self.bias_A)
        nn.init.zeros_(self.weight_B)
        nn.init.zeros_(self.bias_B)

    def grouped_weight_B(self) -> torch.Tensor:
        """weight_B as (g, D/g, r/g) group weights: output group j reads hidden group j."""
        return self.weight_B.view(self.groups, self.dim // self.groups, self.r // self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, self.dim)
        # The r-wide hidden as (r, tokens), and B as its dense (r, D) transpose, block-structured and tiny
        # (layers/low_rank.py): the layouts whose gradients are fast; s rides on B, not on the output.
        hidden_t = self.dropout(down_project(tokens, self.weight_A) + self.bias_A[:, None])
        up = (self.scale * grouped_dense_weight(self.grouped_weight_B())).t().contiguous()
        out = add_up_projection(tokens, hidden_t, up) + self.scale * self.bias_B
        return out.view(x.shape)

    def affine64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with f(x) = x M^T + c at eval, in float64."""
        w_a, b_a = self.weight_A.detach().double(), self.bias_A.detach().double()
        w_b = grouped_dense_weight(self.grouped_weight_B().detach().double())
        eye = torch.eye(self.dim, dtype=torch.float64, device=w_a.device)
        return eye + self.scale * (w_b @ w_a), self.scale * (w_b @ b_a + self.bias_B.detach().double())

    def extra_repr(self) -> str:
        return f"dim={self.dim}, r={self.r}, groups={self.groups}, scale={self.scale}"


class RepAdapterLinear(InputAdaptedLinear):
    """An ``nn.Linear`` with a RepAdapter on its input: y = Lin(f(x)).

    Merges into ``W' = W (I + s W_B W_A)``, ``b' = b + s W (W_B b_A + b_B)``.
    """

    # Parameter names read ``<linear>.repadapter.weight_A``: the seed README's freeze-by-name snippet
    # (``'repadapter' in name``) then selects exactly the adapter tensors.
    adapter_name = "repadapter"

    def __init__(self, base_layer: nn.Linear, r: int = 8, groups: int = 2, dropout: float = 0.1,
                 scale: float = 1.0):
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"RepAdapterLinear wraps an nn.Linear, got {type(base_layer).__name__}")
        adapter = RepAdapter(
            base_layer.in_features, r, groups, dropout, scale,
            device=base_layer.weight.device, dtype=base_layer.weight.dtype,
        )
        super().__init__(base_layer, adapter)


def wrap_linear(linear: nn.Linear, **config) -> RepAdapterLinear:
    """``RepAdapterLinear(linear, **config)``: the adapter-wrapped layer, for code outside the registry."""
    return RepAdapterLinear(linear, **config)
