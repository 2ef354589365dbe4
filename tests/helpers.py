"""Tiny backbones and shared helpers for the test suite (random init, no download)."""

from __future__ import annotations

import timm
import torch
from torch import nn

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=5)
# Two stages of widths 32 and 64 (patch merging between them), 4x4 windows on an 8x8 grid: shifted windows in
# stage 0, one window in stage 1.
TINY_SWIN = dict(
    img_size=32, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), num_classes=5,
    drop_path_rate=0.0,
)

# The backbone variants every method is tested on.
BACKBONES = {
    # plain ViT: class token, token pooling
    "vit": lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY),
    # DINOv2 with layer scale and 4 register tokens (5 prefix tokens)
    "dinov2_reg": lambda: timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=28, patch_size=14, depth=2,
        embed_dim=64, num_heads=2, num_classes=5, init_values=0.5,
    ),
    # no class token, average pooling over the patch tokens
    "avgpool": lambda: timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, class_token=False, global_pool="avg", **TINY
    ),
    # qkv without biases: merges that add a qkv bias need qkv_bias=True to rebuild the model
    "noqkvbias": lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, qkv_bias=False, **TINY),
    # CLIP's ViT: pre-norm after the embeddings, a patch embedding without bias, QuickGELU
    "clip": lambda: timm.create_model("vit_base_patch16_clip_224", pretrained=False, **TINY),
    # Swin: stages of different widths, windowed attention, no class token, pooled head.fc
    "swin": lambda: timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, **TINY_SWIN),
}


def make_backbone(kind: str = "vit", seed: int = 0, **kwargs) -> nn.Module:
    """The same weights for the same (kind, seed): a fresh copy of the backbone an adapter was saved from.

    `kwargs` go to ``timm.create_model`` (a merged model may need ``qkv_bias=True``, say)."""
    torch.manual_seed(seed)
    if kwargs:
        factory = BACKBONE_FACTORIES[kind]
        return timm.create_model(factory[0], pretrained=False, **{**factory[1], **kwargs}).eval()
    return BACKBONES[kind]().eval()


# The same backbones as (timm name, arguments), for rebuilding one with extra arguments.
BACKBONE_FACTORIES = {
    "vit": ("vit_tiny_patch16_224", TINY),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", dict(
        img_size=28, patch_size=14, depth=2, embed_dim=64, num_heads=2, num_classes=5, init_values=0.5)),
    "avgpool": ("vit_tiny_patch16_224", dict(TINY, class_token=False, global_pool="avg")),
    "noqkvbias": ("vit_tiny_patch16_224", dict(TINY, qkv_bias=False)),
    "clip": ("vit_base_patch16_clip_224", TINY),
    "swin": ("swin_tiny_patch4_window7_224", TINY_SWIN),
}


def image_batch(model: nn.Module, n: int = 4, seed: int = 1) -> torch.Tensor:
    size = model.patch_embed.img_size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=g)


def vit_b16(meta: bool = True, **kwargs) -> nn.Module:
    """ViT-B/16 built without weights, for parameter counts. On the meta device by default: shapes only,
    no memory, built in a tenth of the time; ``meta=False`` for real (random) tensors."""
    if not meta:
        return timm.create_model("vit_base_patch16_224", pretrained=False, **kwargs)
    with torch.device("meta"):
        return timm.create_model("vit_base_patch16_224", pretrained=False, **kwargs)


@torch.no_grad()
def perturb_trainable(model: nn.Module, std: float = 0.1, seed: int = 2) -> None:
    """Give every trainable tensor a non-identity value, so merge and save/load tests can fail."""
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.add_(torch.randn(p.shape, generator=g) * std)
