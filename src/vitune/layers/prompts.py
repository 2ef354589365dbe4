"""Prompt tokens around a transformer block: insert learnable tokens before it, drop tokens after it.

Prompts go right after the prefix tokens (class token and register tokens) and in front of the patch
tokens, so the prefix tokens keep their positions, and dropping the prompts afterwards restores exactly
the token layout the backbone's norm and pooling expect: prompts never change which token the head reads.
Inside a block the token order has no effect (no position-dependent operation), so this placement computes
the same as VPT's (after the class token) and AdaptFormer's (in front of the class token).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import VituneError
from .base import VituneModule


def vpt_init_bound(patch_size: tuple[int, int], in_chans: int, dim: int) -> float:
    """VPT's prompt init range: xavier-uniform with the patch embedding's fan-in (channels x patch area)
    and the token width as fan-out, sqrt(6 / (3 * patch_area + D)) for RGB input."""
    ph, pw = patch_size
    return math.sqrt(6.0 / (in_chans * ph * pw + dim))


class PromptedBlock(VituneModule):
    """A block with `insert` new prompt tokens put in before it and `remove` prompt tokens dropped after it.

    Deep prompts: insert = remove = L in every block. Shallow prompts: the first block inserts L, the last
    block removes them, the blocks between see them as ordinary tokens.

    Args:
        block: the backbone's block.
        num_prefix_tokens: class + register tokens in front of the patch tokens (prompts go after them).
        dim: token width.
        insert: number of prompts this block inserts (its own trained tokens; 0 for none).
        remove: number of prompt tokens dropped from the block's output.
        bound: prompts start uniform in (-bound, bound).
        dropout: dropout on the prompts (training only).
    """

    wrapped = ("block",)

    def __init__(self, block: nn.Module, *, num_prefix_tokens: int, dim: int, insert: int, remove: int,
                 bound: float, dropout: float = 0.0, device=None, dtype=None):
        super().__init__()
        self.block = block
        self.num_prefix_tokens = num_prefix_tokens
        self.remove = remove
        if insert:
            self.prompts = nn.Parameter(torch.empty(insert, dim, device=device, dtype=dtype))
            nn.init.uniform_(self.prompts, -bound, bound)
        else:
            self.register_parameter("prompts", None)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def no_weight_decay(self) -> set[str]:
        """timm's convention: tokens, like the class token and position embedding, train without weight decay."""
        return {"prompts"}

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.adapter_disabled:
            return self.block(x, *args, **kwargs)
        if (args and args[0] is not None) or kwargs.get("attn_mask") is not None:
            raise VituneError(
                "prompt tokens change the sequence length, so an attention mask made for the backbone's "
                "tokens does not fit; run prompted models without attn_mask"
            )
        p = self.num_prefix_tokens
        if self.prompts is not None:
            prompts = self.dropout(self.prompts).to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :p], prompts, x[:, p:]], dim=1)
        x = self.block(x, *args, **kwargs)
        if self.remove:
            x = torch.cat([x[:, :p], x[:, p + self.remove:]], dim=1)
        return x
