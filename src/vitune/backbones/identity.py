"""A backbone's identity: what an adapter records about the model it was trained on, to refuse another.

An adapter trained on one set of pretrained weights computes nonsense on another set of the same shapes, and
nothing in the tensors shows it. So an adapter records the architecture (timm's name and pretrained tag when
known; a Hugging Face config's model type), the numbers that define the shapes, and a fingerprint of the frozen
weights.

The fingerprint hashes a fixed sample of every backbone tensor (head excluded): 64 evenly spaced values per
tensor, rounded to bfloat16, with the tensor's name and shape. That costs well under a millisecond per tensor
on a ViT-B (no pass over its 86M values), tells apart any two different pretrained weight sets (they differ
nearly everywhere), and reads the same for the same weights in float32, bfloat16 or on another device.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .base import ModelPlaces

SAMPLES_PER_TENSOR = 64


def weights_fingerprint(model: nn.Module, places: ModelPlaces) -> str | None:
    """``sha256:<hex>`` of a sample of every non-head tensor; None for a model without data (meta device)."""
    digest = hashlib.sha256()
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        if places.in_head(name):
            continue
        if tensor.is_meta:
            return None
        flat = tensor.detach().reshape(-1)
        count = min(flat.numel(), SAMPLES_PER_TENSOR)
        index = torch.linspace(0, flat.numel() - 1, count, device=flat.device).round().long()
        sample = flat[index].to(device="cpu", dtype=torch.bfloat16).float()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def backbone_identity(model: nn.Module, places: ModelPlaces) -> dict:
    """What an adapter records about its backbone (JSON-ready); taken before the method changes the model."""
    cfg = getattr(model, "pretrained_cfg", None) or {}  # timm's
    config = getattr(model, "config", None)  # a Hugging Face model's (its Hub name or folder is no identity)
    return {
        **places.describe(),
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "architecture": cfg.get("architecture") or getattr(config, "model_type", None),
        "pretrained_tag": cfg.get("tag") or None,
        "num_classes": places.num_classes(model),
        "fingerprint": weights_fingerprint(model, places),
    }


# What must agree for an adapter to load; `fingerprint` and the names are skipped when either side lacks them.
IDENTITY_KEYS = ("family", "class", "architecture", "pretrained_tag", "fingerprint")
# Recorded but free to differ: the head is checked on its own (with a hint), the input size may change
# (timm resizes position embeddings), and `source` says how the caller built the model.
NOT_COMPARED = ("num_classes", "img_size", "source")


def identity_mismatch(saved: dict, here: dict) -> str | None:
    """A sentence naming what differs between a saved identity and this model's, or None when they agree.

    Names and shapes are compared first, the fingerprint last: the first difference is the telling one."""
    names = [k for k in IDENTITY_KEYS if k != "fingerprint"]
    shapes = [k for k in saved if k not in IDENTITY_KEYS and k not in NOT_COMPARED]
    for key in (*names, *shapes, "fingerprint"):
        if saved.get(key) is not None and here.get(key) is not None and saved[key] != here[key]:
            if key == "fingerprint":
                return "the frozen weights differ (another pretrained checkpoint, or another random init)"
            return f"{key}={saved[key]!r} (saved), this model has {key}={here[key]!r}"
    return None
