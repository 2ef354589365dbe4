"""SSF, Scale and Shift Features (Lian et al., NeurIPS 2022): y = gamma * op(x) + beta, per channel.

Placement as in SSF's ViT: after the patch-embedding projection, after norm1, qkv, proj, norm2, fc1 and
fc2 of every block, and after the final norm. gamma starts at N(1, 0.02) and beta at N(0, 0.02).

Every op followed by a scale and shift has an affine output per channel (linear, convolution, LayerNorm
affine), so merging folds the pair into it: W' = diag(gamma) W, b' = gamma * b + beta
(``layers/scale_shift.py``). At the LayerNorms the pair also trains inside the norm's affine, so those sites
save no activation of their own.
A patch projection without bias (CLIP's ViTs) has no room for beta: it goes into the position embedding's
patch positions when the backbone has one right after the projection, and merging is refused otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import BackboneError
from ..layers.scale_shift import FOLDABLE, ScaleShift
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class SSFConfig(MethodConfig):
    init_std: float = option(0.02, "scales start at N(1, init_std), shifts at N(0, init_std)")

    def __post_init__(self):
        self.require(self.init_std >= 0, "init_std", f"must be non-negative, got {self.init_std}")


@register_method
class SSF(Method):
    name = "ssf"
    Config = SSFConfig

    def _paths(self, places) -> list[str]:
        if not places.patch_proj:
            raise BackboneError(f"SSF scales the patch projection, and this backbone's {places.patch_embed} has none")
        paths = [places.patch_proj]
        for block in places.blocks:
            paths += [block.norm1, *block.linears("qkv"), block.proj, block.norm2, block.fc1, block.fc2]
        return paths + list(places.final_norms)

    def _patch_shift_target(self, model: nn.Module, places) -> tuple[nn.Parameter, int] | None:
        """Where the patch projection's shift goes when merging, if the projection has no bias of its own.

        Without such a place the method is marked not mergeable (merging would add a bias the stock model
        lacks, so the merged weights would not load into it)."""
        if model.get_submodule(places.patch_proj).bias is not None:
            return None
        if places.patch_shift_target is None:
            self.mergeable = False
            self.not_mergeable_reason = (
                f"the patch projection {places.patch_proj} has no bias, and no position embedding follows it "
                "that could hold SSF's shift; merging would add a bias the stock model lacks"
            )
            return None
        name, start = places.patch_shift_target
        target = model.get_parameter(name)
        return (target if target.dim() == 3 else target.unsqueeze(0)), start  # a (tokens, C) table: a view

    def inject(self, model: nn.Module, places) -> None:
        paths = self._paths(places)
        for path in paths:  # check every place before the first replacement
            op = model.get_submodule(path)
            if not isinstance(op, FOLDABLE):
                raise BackboneError(
                    f"SSF cannot scale {path}: it is a {type(op).__name__}, not a Linear, Conv2d or LayerNorm"
                )
        shift_target = self._patch_shift_target(model, places)
        for path in paths:
            target = shift_target if path == places.patch_proj else None
            replace_module(model, path, ScaleShift(model.get_submodule(path), self.config.init_std, target))
