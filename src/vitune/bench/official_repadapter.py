"""A reference of the official RepAdapter formulation (`luogen1996/RepAdapter`, `repadapter.py`), written from its math:
Conv1d A (D -> r, bias), dropout, grouped Conv1d B (r -> D, groups g, bias), times a scale, plus the input.

It is a peer in ``vitune bench``: the same math as ``layers/repadapter.py`` in the official code's form
(channels-first 1x1 convolutions around a transpose), so the table shows what vitune's form costs against it.
It sits before ``attn.qkv`` and ``mlp.fc1`` of every block, as ``nn.Sequential(adapter, linear)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbones import find_places
from ..backbones.targets import linear_targets
from ..surgery import replace_module


class ConvRepAdapter(nn.Module):
    """f(x) = x + s * ConvB(Dropout(ConvA(x))) on (batch, tokens, D) inputs, with 1x1 Conv1d layers.

    Args:
        dim: width D.
        r: hidden width.
        groups: groups of ConvB.
        dropout: dropout on the hidden (training only).
        scale: s, multiplying ConvB's whole output, bias included.
    """

    def __init__(self, dim: int, r: int = 8, groups: int = 2, dropout: float = 0.1, scale: float = 1.0):
        super().__init__()
        self.conv_A = nn.Conv1d(dim, r, kernel_size=1, bias=True)
        self.conv_B = nn.Conv1d(r, dim, kernel_size=1, groups=groups, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.groups, self.scale = groups, scale
        nn.init.xavier_uniform_(self.conv_A.weight)  # identity at start: B and both biases are zero
        nn.init.zeros_(self.conv_A.bias)
        nn.init.zeros_(self.conv_B.weight)
        nn.init.zeros_(self.conv_B.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_first = x.transpose(1, 2)  # Conv1d reads (batch, channels, length)
        update = self.conv_B(self.dropout(self.conv_A(channels_first))) * self.scale
        return (channels_first + update).transpose(1, 2).contiguous()

    def affine64(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with f(x) = x M^T + c at eval (its structural re-parameterisation), in float64."""
        w_a = self.conv_A.weight.detach().double()[:, :, 0]  # (r, D)
        w_b_groups = self.conv_B.weight.detach().double()[:, :, 0]  # (D, r/g)
        dim, per_group = w_b_groups.shape
        w_b = torch.zeros(dim, per_group * self.groups, dtype=torch.float64, device=w_a.device)
        rows = dim // self.groups
        for j in range(self.groups):  # block diagonal: output group j reads hidden group j
            w_b[j * rows:(j + 1) * rows, j * per_group:(j + 1) * per_group] = w_b_groups[j * rows:(j + 1) * rows]
        eye = torch.eye(dim, dtype=torch.float64, device=w_a.device)
        bias = w_b @ self.conv_A.bias.detach().double() + self.conv_B.bias.detach().double()
        return eye + self.scale * (w_b @ w_a), self.scale * bias


def apply_official_repadapter(model: nn.Module, roles: tuple[str, ...] = ("qkv", "fc1"), **config) -> nn.Module:
    """Freeze `model`, put a :class:`ConvRepAdapter` before each targeted linear layer, keep the head
    trainable (what the official training script trains: adapters and head). Returns `model`."""
    places = find_places(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for path in linear_targets(model, places, roles):
        linear = model.get_submodule(path)
        adapter = ConvRepAdapter(linear.in_features, **config).to(linear.weight.device, linear.weight.dtype)
        replace_module(model, path, nn.Sequential(adapter, linear))
    for name in places.head_parameter_names(model):
        model.get_parameter(name).requires_grad_(True)
    return model


@torch.no_grad()
def merge_official_repadapter(model: nn.Module) -> nn.Module:
    """Fold every adapter into the linear layer after it: W' = W M, b' = b + W c. Returns `model`."""
    for path, module in list(model.named_modules()):
        if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], ConvRepAdapter):
            adapter, linear = module
            m, c = adapter.affine64()
            w = linear.weight.double()
            b = linear.bias.double() if linear.bias is not None else w.new_zeros(w.shape[0])
            linear.weight.copy_((w @ m).to(linear.weight.dtype))
            if linear.bias is None:
                linear.bias = nn.Parameter(torch.zeros_like(linear.weight[:, 0]), requires_grad=False)
            linear.bias.copy_((b + w @ c).to(linear.weight.dtype))
            replace_module(model, path, linear)
    return model
