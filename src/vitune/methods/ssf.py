"""SSF, Scale and Shift Features (Lian et al., NeurIPS 2022): y = gamma * op(x) + beta, per channel.

Placement as in SSF's ViT: after the patch-embedding projection, after norm1, qkv, proj, norm2, fc1 and
fc2 of every block, and after the final norm. gamma starts at N(1, 0.02) and beta at N(0, 0.02).

Every op followed by a scale and shift has an affine output per channel (linear, convolution, LayerNorm
affine), so merging folds the pair into it: W' = diag(gamma) W, b' = gamma * b + beta.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import BackboneError
from ..surgery import replace_module
from ..layers import WrappedModule
from .base import Method
from .config import MethodConfig, option
from .registry import register_method

# The ops whose output channels SSF can scale and shift, and later fold into.
FOLDABLE = (nn.Linear, nn.Conv2d, nn.LayerNorm)


@dataclass
class SSFConfig(MethodConfig):
    init_std: float = option(0.02, "scales start at N(1, init_std), shifts at N(0, init_std)")

    def __post_init__(self):
        self.require(self.init_std >= 0, "init_std", f"must be non-negative, got {self.init_std}")


def _channels(op: nn.Module) -> int:
    if isinstance(op, nn.Linear):
        return op.out_features
    if isinstance(op, nn.Conv2d):
        return op.out_channels
    return op.weight.numel()  # LayerNorm over the last dimension


class ScaleShift(WrappedModule):
    """``gamma * op(x) + beta`` over the op's output channels (the last dimension, or dim 1 of a Conv2d)."""

    def __init__(self, base_layer: nn.Module, init_std: float = 0.02):
        if not isinstance(base_layer, FOLDABLE):
            raise BackboneError(
                f"SSF scales the output of a Linear, Conv2d or LayerNorm, got {type(base_layer).__name__}"
            )
        if isinstance(base_layer, nn.LayerNorm) and (
            base_layer.weight is None or len(base_layer.normalized_shape) != 1
        ):
            raise BackboneError("SSF folds into a LayerNorm's affine weight over one dimension; this one has none")
        super().__init__(base_layer)
        self.channel_dim = 1 if isinstance(base_layer, nn.Conv2d) else -1
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        channels = _channels(base_layer)
        self.init_std = init_std
        self.scale = nn.Parameter(torch.empty(channels, **factory))
        self.shift = nn.Parameter(torch.empty(channels, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scale, mean=1.0, std=self.init_std)
        nn.init.normal_(self.shift, mean=0.0, std=self.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        scale, shift = self.scale, self.shift
        if self.channel_dim == 1:  # (B, C, H, W)
            scale, shift = scale.view(-1, 1, 1), shift.view(-1, 1, 1)
        return torch.addcmul(shift, y, scale)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        weight, bias = self.base_weight64()
        scale, shift = self.scale.double(), self.shift.double()
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))  # row / output channel c times gamma_c
        return self.fold(weight, scale * bias + shift)  # an op without bias gains one: the shift needs it


@register_method
class SSF(Method):
    name = "ssf"
    Config = SSFConfig

    def _paths(self, model: nn.Module, places) -> list[str]:
        patch_embed = model.get_submodule(places.patch_embed)
        if not isinstance(getattr(patch_embed, "proj", None), nn.Conv2d):
            raise BackboneError(f"SSF needs the patch embedding's Conv2d at {places.patch_embed}.proj")
        paths = [f"{places.patch_embed}.proj"]
        for block in places.blocks:
            paths += [block.norm1, block.qkv, block.proj, block.norm2, block.fc1, block.fc2]
        return paths + list(places.final_norms)

    def inject(self, model: nn.Module, places) -> None:
        paths = self._paths(model, places)
        for path in paths:  # check every place before the first replacement
            op = model.get_submodule(path)
            if not isinstance(op, FOLDABLE):
                raise BackboneError(
                    f"SSF cannot scale {path}: it is a {type(op).__name__}, not a Linear, Conv2d or LayerNorm"
                )
        for path in paths:
            replace_module(model, path, ScaleShift(model.get_submodule(path), self.config.init_std))
