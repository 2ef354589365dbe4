"""LoRA's layer (Hu et al., 2022): a linear layer plus a low-rank branch, W' = W + (alpha/r) B A.

Training computes the factored branch, (x A^T) B^T, never the dense update; :func:`lora_delta_weight` gives
the dense update for merging. The branch runs in the layouts of ``layers/low_rank.py`` (the hidden as
(rank, tokens)), and its up-projection covers the whole output in one product: on a fused qkv with q and v
adapted, B is laid out block by block over the output columns, zero on k's, so the branch adds into the
linear's fresh output once instead of into slices of it (an in-place add into a slice makes autograd copy
the whole output gradient).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .low_rank import add_up_projection, down_project, spread_columns
from .wrapped_linear import WrappedLinear


def lora_delta_weight(lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """The update for each output part: (k, out_part, in) from A (k*r, in) and B (k, out_part, r)."""
    k, _, r = lora_b.shape
    return scale * torch.bmm(lora_b, lora_a.reshape(k, r, -1))


class LoRALinear(WrappedLinear):
    """A linear layer plus a low-rank branch on the whole output or on equal-width parts of it.

    Args:
        base_layer: the backbone's linear layer.
        r: rank of the update.
        alpha: the update is scaled by alpha / r.
        dropout: dropout on the branch's input (training only).
        parts: output slices adapted separately (timm's fused qkv: the q and v slices); None: the whole output.
    """

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float,
                 parts: tuple[slice, ...] | None = None):
        super().__init__(base_layer)
        self.parts = parts
        k = len(parts) if parts else 1
        width = (parts[0].stop - parts[0].start) if parts else base_layer.out_features
        if parts and any(p.stop - p.start != width for p in parts):
            raise ValueError("LoRA parts of one layer must have equal widths")
        self.r, self.scale = r, alpha / r
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(k * r, base_layer.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(k, width, r, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Each part's A as nn.Linear(in, r) would be initialised; B = 0 so the branch starts at zero.
        for a in self.lora_A.data.split(self.r):
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def up_weight(self) -> torch.Tensor:
        """B^T over the whole output, (k*r, out): rows j*r..(j+1)*r hold part j's B^T in its columns, zeros
        elsewhere (the branch adds exactly 0 outside the adapted parts)."""
        out_features = self.base_layer.out_features
        return spread_columns([b.t() for b in self.lora_B], self.parts or (slice(0, out_features),), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter_disabled:
            return self.base_layer(x)
        tokens = x.reshape(-1, self.in_features)
        hidden_t = down_project(self.dropout(tokens), self.lora_A)  # (k*r, tokens): every part's A at once
        out = add_up_projection(self.base_layer(tokens), hidden_t, self.up_weight(), self.scale)
        return out.view(*x.shape[:-1], self.out_features)

    def merged(self) -> nn.Linear:
        w, b = self.base_weight64()
        delta = lora_delta_weight(self.lora_A.double(), self.lora_B.double(), self.scale)
        for j, part in enumerate(self.parts or (slice(None),)):
            w[part] += delta[j]
        return self.fold(w, b)
