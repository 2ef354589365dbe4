"""timm's VisionTransformer family: ViT, DeiT (also distilled), DINOv2 (layer scale, register tokens)."""

from __future__ import annotations

from torch import nn

from ..errors import BackboneError
from .base import BackboneFamily, BlockPlaces, ModelPlaces, register_family


def _is_timm_vit(model: nn.Module) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(model, VisionTransformer)


def _require(block: nn.Module, block_path: str, attr: str, kind: type) -> nn.Module:
    try:
        module = block.get_submodule(attr)
    except AttributeError:
        module = None
    if not isinstance(module, kind):
        found = type(module).__name__ if module is not None else "nothing"
        raise BackboneError(
            f"{block_path}.{attr} is {found}, expected {kind.__name__}: vitune's timm ViT map needs "
            f"blocks built from timm's Block (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2)"
        )
    return module


def _places(model: nn.Module) -> ModelPlaces:
    blocks = []
    for i, block in enumerate(model.blocks):
        path = f"blocks.{i}"
        qkv = _require(block, path, "attn.qkv", nn.Linear)
        for attr in ("attn.proj", "mlp.fc1", "mlp.fc2"):
            _require(block, path, attr, nn.Linear)
        if qkv.out_features % 3:
            raise BackboneError(f"{path}.attn.qkv has {qkv.out_features} outputs, not a fused q,k,v")
        width = qkv.out_features // 3
        parts = {
            role: (f"{path}.attn.qkv", slice(k * width, (k + 1) * width))
            for k, role in enumerate(("q", "k", "v"))
        }
        blocks.append(
            BlockPlaces(
                index=i,
                block=path,
                norm1=f"{path}.norm1",
                attn=f"{path}.attn",
                qkv=f"{path}.attn.qkv",
                proj=f"{path}.attn.proj",
                norm2=f"{path}.norm2",
                mlp=f"{path}.mlp",
                fc1=f"{path}.mlp.fc1",
                fc2=f"{path}.mlp.fc2",
                qkv_parts=parts,
            )
        )
    heads = tuple(
        name
        for name in ("head", "head_dist")
        if isinstance(getattr(model, name, None), nn.Module)
    )
    final_norms = tuple(
        name
        for name in ("norm", "fc_norm")
        if isinstance(getattr(model, name, None), nn.Module)
        and not isinstance(getattr(model, name), nn.Identity)
    )
    return ModelPlaces(
        family="timm_vit",
        blocks=tuple(blocks),
        heads=heads,
        embed_dim=model.embed_dim,
        num_prefix_tokens=model.num_prefix_tokens,
        patch_embed="patch_embed",
        final_norms=final_norms,
    )


TIMM_VIT = register_family(BackboneFamily(name="timm_vit", matches=_is_timm_vit, places=_places))
