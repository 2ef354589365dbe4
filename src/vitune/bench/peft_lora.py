"""Hugging Face PEFT's LoRA as a peer in ``vitune bench``: on the same timm model and the same layers as
vitune's LoRA (the paths come from vitune's own place map), with the head trained as ``modules_to_save``.

PEFT is optional at run time (it is a test dependency of vitune): :func:`peft_available` says whether the
variant can run, and the harness skips it with a note when it cannot.
"""

from __future__ import annotations

import importlib.util

from torch import nn

from ..backbones import find_places
from ..backbones.targets import linear_targets


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def apply_peft_lora(model: nn.Module, roles: tuple[str, ...] = ("qkv",), r: int = 8, alpha: float = 8.0) -> nn.Module:
    """PEFT's ``get_peft_model`` with a LoRA on every block's `roles` (whole linear layers) and the head trained."""
    import peft

    places = find_places(model)
    targets = list(linear_targets(model, places, roles))  # exact paths: PEFT then adapts these layers only
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                             modules_to_save=list(places.heads))
    return peft.get_peft_model(model, config)


def merge_peft_lora(model: nn.Module) -> nn.Module:
    """PEFT's own merge: the base timm model with every LoRA folded in."""
    return model.merge_and_unload()
