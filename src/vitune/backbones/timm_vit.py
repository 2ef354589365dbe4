"""timm's VisionTransformer family: ViT, DeiT (also distilled), DINOv2 (layer scale, register tokens), CLIP's
pre-norm ViTs (no patch-embedding bias), ViTs without qkv biases.

Only blocks with timm's pre-norm ``Block.forward`` are accepted (``timm_blocks.py``): the post-norm
``ResPostBlock`` and the parallel blocks compute their branches differently.
"""

from __future__ import annotations

from torch import nn

from .base import BackboneFamily, ModelPlaces, register_family
from .timm_blocks import timm_block_places


def _is_timm_vit(model: nn.Module) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(model, VisionTransformer)


def _patch_shift_target(model: nn.Module) -> tuple[str, int] | None:
    """The position embedding can absorb a constant shift of the patch tokens when nothing but a flatten
    lies between the patch projection and the position-embedding add, and every patch position is learnt."""
    embed = model.patch_embed
    if getattr(model, "pos_embed", None) is None or not isinstance(getattr(embed, "norm", nn.Identity()), nn.Identity):
        return None
    start = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    return "pos_embed", start


def _places(model: nn.Module) -> ModelPlaces:
    from timm.models.vision_transformer import Block

    blocks = [
        timm_block_places(block, f"blocks.{i}", i, Block, "timm ViT") for i, block in enumerate(model.blocks)
    ]
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
    embed = model.patch_embed
    proj = getattr(embed, "proj", None)
    first = model.blocks[0] if len(model.blocks) else None
    shapes = {
        "num_heads": getattr(first.attn, "num_heads", None) if first is not None else None,
        "mlp_hidden": first.mlp.fc1.out_features if first is not None else None,
        "num_prefix_tokens": model.num_prefix_tokens,
        "patch_size": list(embed.patch_size),
        "img_size": list(embed.img_size) if getattr(embed, "img_size", None) is not None else None,
    }
    return ModelPlaces(
        family="timm_vit",
        blocks=tuple(blocks),
        heads=heads,
        embed_dim=model.embed_dim,
        num_prefix_tokens=model.num_prefix_tokens,
        patch_embed="patch_embed",
        final_norms=final_norms,
        patch_proj="patch_embed.proj" if isinstance(proj, nn.Conv2d) else "",
        patch_size=tuple(embed.patch_size),
        in_chans=proj.in_channels if isinstance(proj, nn.Conv2d) else 3,
        patch_shift_target=_patch_shift_target(model),
        shapes=shapes,
    )


def _merged_model_args(model: nn.Module) -> dict:
    """timm's constructor flags for biases a merge may have added to layers the stock model builds without."""
    attns = [block.attn for block in model.blocks]
    args = {}
    if attns and all(a.qkv.bias is not None for a in attns):
        args["qkv_bias"] = True
    if attns and all(a.proj.bias is not None for a in attns):
        args["proj_bias"] = True
    return args


TIMM_VIT = register_family(
    BackboneFamily(name="timm_vit", matches=_is_timm_vit, places=_places, merged_model_args=_merged_model_args)
)
