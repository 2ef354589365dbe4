"""ARC's adapter (Dong et al., NeurIPS 2023): f(x) = x + Dropout(x P diag(c)) P^T + beta, on a linear's input.

The down-projection P (D x rank) is shared by every block of one position (attention or MLP) and its
transpose is the up-projection; each block has its own re-scaling c (rank) and bias beta (D). At eval
f(x) = x M + beta with M = I + P diag(c) P^T (symmetric), which folds into the following linear:
W' = W M, b' = b + W beta.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SharedTensors
from .input_adapted_linear import InputAdaptedLinear
from .low_rank import add_up_projection, down_project


def arc_projections(dim: int, rank: int, positions: tuple[str, ...], device=None, dtype=None) -> SharedTensors:
    """The shared projections ``P_<position>`` (dim x rank, xavier-uniform), one per position."""
    return SharedTensors({
        f"P_{position}": nn.init.xavier_uniform_(torch.empty(dim, rank, device=device, dtype=dtype))
        for position in positions
    })


class ARCAdapter(nn.Module):
    """One block's adapter at one position: its own c and beta, the shared P read at every call.

    Args:
        shared: the holder of the shared projections (see :func:`arc_projections`).
        position: "attn" or "mlp": which shared projection this adapter reads, and its init.
        dim: input width D.
        rank: width of P.
        dropout: dropout on the rank-wide hidden (training only).
    """

    def __init__(self, shared: SharedTensors, position: str, dim: int, rank: int, dropout: float,
                 device=None, dtype=None):
        super().__init__()
        # Not registered: the shared tensor must appear once in the state_dict (on the model root).
        object.__setattr__(self, "_shared", shared)
        self.position = position
        self.scale = nn.Parameter(torch.empty(rank, device=device, dtype=dtype))  # c
        self.bias = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))  # beta
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As released: the attention adapter starts as the identity, the MLP one does not (xavier c).
        if self.position == "attn":
            nn.init.zeros_(self.scale)
        else:
            nn.init.xavier_uniform_(self.scale.data.view(1, -1))
        nn.init.zeros_(self.bias)

    @property
    def projection(self) -> torch.Tensor:
        return self._shared[f"P_{self.position}"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.projection
        tokens = x.reshape(-1, p.shape[0])
        # (rank, tokens) hidden and (rank, D) row-major weights: the layouts of layers/low_rank.py.
        hidden_t = self.dropout(down_project(tokens, (p * self.scale).t().contiguous()))  # (x P diag(c))^T
        out = add_up_projection(tokens, hidden_t, p.t().contiguous()) + self.bias  # x + ... P^T + beta
        return out.view(x.shape)

    def affine64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, beta) with f(x) = x M^T + beta at eval; M = I + P diag(c) P^T, in float64."""
        p, c = self.projection.detach().double(), self.scale.detach().double()
        eye = torch.eye(p.shape[0], dtype=torch.float64, device=p.device)
        return eye + (p * c) @ p.t(), self.bias.detach().double()

    def extra_repr(self) -> str:
        return f"position={self.position!r}, rank={self.scale.numel()}"


class ARCLinear(InputAdaptedLinear):
    """A block's qkv or fc1 with the ARC adapter on its input."""
