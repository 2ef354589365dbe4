"""Backbone families: where each method attaches in each architecture (one file per family)."""

from . import hf_clip, hf_dinov2, hf_vit, timm_swin, timm_vit  # noqa: F401  (register the families)
from .base import LINEAR_ROLES, WHOLE_LINEAR_ROLES, BlockPlaces, ModelPlaces, find_family, find_places, register_family

__all__ = [
    "LINEAR_ROLES", "WHOLE_LINEAR_ROLES", "BlockPlaces", "ModelPlaces", "find_family", "find_places", "register_family",
]
