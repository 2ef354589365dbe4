"""Products through a narrow hidden width (a rank r much smaller than the tokens and the features), in the
layouts whose gradients are fast.

Autograd computes a weight's gradient in the weight's own layout. For a (features, r) weight stored
row-major that is a (features x tokens) @ (tokens x r) product, which the CPU's BLAS runs about ten times
slower than the same numbers as (r x tokens) @ (tokens x features) (ViT-S/16, batch 16: 11.7 ms against
1.2 ms on 2 threads, ``benchmarks/low_rank_layouts.py``). So the hidden is kept as (r, tokens) and every
weight as (r, features): each product autograd forms then has the narrow width as its rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def down_project(tokens: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(tokens, in) @ weight^T, returned transposed: the (r, tokens) hidden, from a (r, in) weight."""
    return weight @ tokens.t()


def add_up_projection(out: torch.Tensor, hidden_t: torch.Tensor, weight_t: torch.Tensor,
                      scale: float = 1.0) -> torch.Tensor:
    """out + scale * hidden_t^T @ weight_t: (tokens, features) from the (r, tokens) hidden and a row-major
    (r, features) weight, in one product added to `out` (its gradient passes to `out` unchanged)."""
    return torch.addmm(out, hidden_t.t(), weight_t, alpha=scale)


def spread_columns(blocks: list[torch.Tensor], parts: tuple[slice, ...], width: int) -> torch.Tensor:
    """Each (rows, part width) block laid into its part's columns of a zero (rows, `width`) matrix, the blocks
    stacked: one up-projection over a whole output that adds exactly 0 outside the parts."""
    return torch.cat([F.pad(block, (part.start, width - part.stop)) for block, part in zip(blocks, parts)])
