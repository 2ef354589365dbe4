"""What ``vitune bench`` can measure: vitune's methods, the two baselines and the peers, by name.

- ``full``: full fine-tuning, the baseline of every ratio.
- ``floor``: every weight frozen, gradients flowing to the input -- the backprop floor any method that
  adapts the first block must pay (no optimizer step).
- any vitune method name (``vitune methods``) with its default config, and ``lora_qkv``: vitune's LoRA on
  the whole fused qkv (``targets=["qkv"]``), the pair of ``peft_lora_qkv``.
- ``peft_lora_qkv``: Hugging Face PEFT's LoRA on the same layers (skipped with a note when PEFT is missing).
- ``repadapter_official``: the official RepAdapter formulation (Conv1d layers), the pair of ``repadapter``.

A name ending in ``+ckpt`` is the same variant with timm's activation checkpointing on.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import save as safetensors_bytes
from torch import nn

from .. import api, io
from ..errors import VituneError
from ..methods import list_methods
from .official_repadapter import apply_official_repadapter, merge_official_repadapter
from .peft_lora import apply_peft_lora, merge_peft_lora, peft_available

CHECKPOINTING_SUFFIX = "+ckpt"
BASELINES = ("full", "floor")
PEERS = ("lora_qkv", "peft_lora_qkv", "repadapter", "repadapter_official")
# (vitune's variant, its peer): the same math on the same layers, compared round by round.
PAIRS = (("lora_qkv", "peft_lora_qkv"), ("repadapter", "repadapter_official"))
# Every seed method, LoRA's and RepAdapter's peers, SSF and VPT: ``--methods all``.
ALL_METHODS = ("linear", "lora", "lora_qkv", "peft_lora_qkv", "repadapter", "repadapter_official", "arc",
               "consolidator", "kadaptation", "adaptformer", "ssf", "vpt_deep")
# The default is quick (with full and floor, four variants: a few minutes on 2 cores); named sets expand.
DEFAULT_METHODS = ("lora", "repadapter")
METHOD_SETS = {"all": ALL_METHODS, "peers": PEERS}


def expand_methods(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` with each named set (``all``, ``peers``) replaced by its variants."""
    return [variant for name in names for variant in METHOD_SETS.get(name, (name,))]


@dataclass(frozen=True)
class Variant:
    """One row of the bench: how to adapt a fresh backbone, and whether activation checkpointing is on."""

    name: str
    kind: str  # "vitune", "floor", "peft" or "official"
    method: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    checkpointing: bool = False

    @property
    def base_name(self) -> str:
        """The name without ``+ckpt``: the variant this one is compared with."""
        return self.name.removesuffix(CHECKPOINTING_SUFFIX)


def parse_variant(name: str) -> Variant:
    """The variant a ``--methods`` entry names; a clear error for an unknown one."""
    checkpointing = name.endswith(CHECKPOINTING_SUFFIX)
    base = name.removesuffix(CHECKPOINTING_SUFFIX)
    if base == "floor":
        return Variant(name, "floor", checkpointing=checkpointing)
    if base == "lora_qkv":
        return Variant(name, "vitune", "lora", {"targets": ["qkv"]}, checkpointing)
    if base == "peft_lora_qkv":
        return Variant(name, "peft", checkpointing=checkpointing)
    if base == "repadapter_official":
        return Variant(name, "official", checkpointing=checkpointing)
    if base in list_methods():
        return Variant(name, "vitune", base, checkpointing=checkpointing)
    raise VituneError(
        f"bench: unknown method {name!r}; use a vitune method ({', '.join(list_methods())}), "
        f"floor, lora_qkv, peft_lora_qkv or repadapter_official, optionally with {CHECKPOINTING_SUFFIX}"
    )


def unavailable_reason(variant: Variant) -> str | None:
    """Why `variant` cannot run here (None: it can)."""
    if variant.kind == "peft" and not peft_available():
        return "Hugging Face PEFT is not installed (pip install peft)"
    return None


@dataclass
class Adapted:
    """A backbone adapted for one variant, and what the bench does with it."""

    model: nn.Module
    input_grad: bool  # the floor: gradients flow to the input, no weight trains
    merge: Callable[[nn.Module], nn.Module] | None  # None: the variant does not merge
    save: Callable[[nn.Module], int] | None  # bytes of what the variant stores per task; None: nothing


def adapt(variant: Variant, backbone: nn.Module) -> Adapted:
    """Adapt `backbone` (in place, or wrapped for PEFT) for `variant`; checkpointing is switched on here."""
    if variant.checkpointing:
        api.set_grad_checkpointing(backbone)
    if variant.kind == "floor":
        for p in backbone.parameters():
            p.requires_grad_(False)
        return Adapted(backbone, True, None, None)
    if variant.kind == "peft":
        return Adapted(apply_peft_lora(backbone), False, merge_peft_lora, _peft_bytes)
    if variant.kind == "official":
        model = apply_official_repadapter(backbone)
        return Adapted(model, False, merge_official_repadapter, _trainable_bytes)
    model = api.apply(backbone, variant.method, **variant.config)
    return Adapted(model, False, api.merge if api.is_mergeable(model) else None, _vitune_bytes)


def checkpoint_bytes(model: nn.Module) -> int:
    """Bytes of a full safetensors checkpoint of `model`: what full fine-tuning stores per task."""
    return len(safetensors_bytes({n: t.contiguous() for n, t in model.state_dict().items()}))


def _vitune_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return io.adapter_bytes(io.save_adapter(model, Path(folder) / "adapter"))


def _peft_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return sum(os.path.getsize(Path(root) / f) for root, _, files in os.walk(folder) for f in files)


def _trainable_bytes(model: nn.Module) -> int:
    return len(safetensors_bytes({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}))
