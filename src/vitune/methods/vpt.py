"""VPT (Jia et al., ECCV 2022): learnable prompt tokens prepended to the patch tokens of a frozen ViT.

- ``vpt_shallow``: one set of prompts, inserted before the first block and dropped after the last.
- ``vpt_deep``: new prompts before every block, dropped after it (the previous block's prompt outputs are
  discarded, as in VPT).

Prompts sit after the prefix tokens (class and register tokens), so the head reads the same token, or
pools the same patch tokens, as without prompts. Init: VPT's uniform(-v, v), v = sqrt(6 / (3 * patch_area + D)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..errors import BackboneError
from ..layers.prompts import PromptedBlock, vpt_init_bound
from ..surgery import replace_module
from .base import Method
from .config import MethodConfig, option
from .registry import register_method


@dataclass
class VPTConfig(MethodConfig):
    num_tokens: int = option(10, "prompt length: prompt tokens per prompted layer")
    dropout: float = option(0.0, "dropout on the prompt tokens (training only); VPT's default is 0.0")

    def __post_init__(self):
        self.require(self.num_tokens > 0, "num_tokens", f"must be positive, got {self.num_tokens}")
        self.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


class _VPT(Method):
    Config = VPTConfig
    deep: ClassVar[bool]
    mergeable = False
    not_mergeable_reason = (
        "prompts are extra input tokens that every later attention layer attends to; no change of the "
        "backbone's weights reproduces them, so they cannot be folded in and they add tokens (inference cost)"
    )

    def inject(self, model: nn.Module, places) -> None:
        cfg = self.config
        if places.no_prompts:
            raise BackboneError(f"{self.name} does not apply to the {places.family} family: {places.no_prompts}")
        length, dim = cfg.num_tokens, places.embed_dim
        bound = vpt_init_bound(places.patch_size, places.in_chans, dim)
        ref = model.get_submodule(places.blocks[0].fc1).weight
        last = places.depth - 1
        for block in places.blocks:
            i = block.index
            if self.deep:
                insert = remove = length
            else:
                insert = length if i == 0 else 0
                remove = length if i == last else 0
                if not (insert or remove):
                    continue
            wrapper = PromptedBlock(
                model.get_submodule(block.block), num_prefix_tokens=places.num_prefix_tokens, dim=dim,
                insert=insert, remove=remove, bound=bound, dropout=cfg.dropout,
                device=ref.device, dtype=ref.dtype,
            )
            replace_module(model, block.block, wrapper)


@register_method
class VPTShallow(_VPT):
    name = "vpt_shallow"
    deep = False


@register_method
class VPTDeep(_VPT):
    name = "vpt_deep"
    deep = True
