"""What a backbone family tells the methods: where each place of each block is.

Methods never hard-code module names; they ask for roles (``qkv``, ``fc1``, ``q`` ...) and get dotted
paths. Each family (timm ViT, later Swin and Hugging Face models) writes its knowledge in one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import nn

from ..errors import BackboneError

# Roles every block of a pre-norm transformer offers. q/k/v may be slices of a fused qkv linear.
LINEAR_ROLES = ("q", "k", "v", "qkv", "proj", "fc1", "fc2")


@dataclass(frozen=True)
class BlockPlaces:
    """Dotted paths (from the model root) of one transformer block's parts."""

    index: int
    block: str
    norm1: str
    attn: str
    qkv: str
    proj: str
    norm2: str
    mlp: str
    fc1: str
    fc2: str
    # q, k, v -> (path of the linear that computes it, slice of that linear's output or None)
    qkv_parts: Mapping[str, tuple[str, slice | None]] = field(default_factory=dict)

    def linear(self, role: str) -> tuple[str, slice | None]:
        """The linear layer that computes `role`, and the slice of its output that is `role`."""
        if role in ("q", "k", "v"):
            return self.qkv_parts[role]
        if role not in LINEAR_ROLES:
            raise BackboneError(f"unknown linear role {role!r}; roles are {list(LINEAR_ROLES)}")
        return getattr(self, role), None


@dataclass(frozen=True)
class ModelPlaces:
    """Everything a method needs to know about where to attach in one model."""

    family: str
    blocks: tuple[BlockPlaces, ...]
    heads: tuple[str, ...]  # classifier module paths (a distilled DeiT has two)
    embed_dim: int
    num_prefix_tokens: int  # class token + register tokens, in front of the patch tokens
    patch_embed: str
    final_norms: tuple[str, ...]

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def describe(self) -> dict:
        """A small fingerprint recorded with saved adapters, checked when they are loaded."""
        return {"family": self.family, "depth": self.depth, "embed_dim": self.embed_dim}


@dataclass(frozen=True)
class BackboneFamily:
    name: str
    matches: Callable[[nn.Module], bool]
    places: Callable[[nn.Module], ModelPlaces]


_FAMILIES: list[BackboneFamily] = []


def register_family(family: BackboneFamily) -> BackboneFamily:
    _FAMILIES.append(family)
    return family


def find_places(model: nn.Module) -> ModelPlaces:
    """The place map of `model`, from the first family that recognises it."""
    for family in _FAMILIES:
        if family.matches(model):
            return family.places(model)
    known = ", ".join(f.name for f in _FAMILIES)
    raise BackboneError(
        f"vitune does not know where to attach in a {type(model).__module__}.{type(model).__name__}; "
        f"supported backbone families: {known}"
    )
