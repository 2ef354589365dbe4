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


# timm's constructor flags that give a group of linears, in every block, a bias (the MLP's follows proj_bias).
BIAS_FLAGS = {"qkv_bias": ("attn.qkv",), "proj_bias": ("attn.proj", "mlp.fc1", "mlp.fc2")}


def _bias_group(model: nn.Module, parts: tuple[str, ...]) -> list[nn.Linear]:
    return [block.get_submodule(part) for block in model.blocks for part in parts]


def _complete_merge(model: nn.Module) -> None:
    """A merge gives biases to the layers it folds into (RepAdapter: fc1 alone of proj, fc1 and fc2); a
    flag gives them to a whole group. Where the merge gave part of a group one, the rest of it gets a zero
    bias, so the flag rebuilds the merged model exactly (adding zero changes no output)."""
    for parts in BIAS_FLAGS.values():
        linears = _bias_group(model, parts)
        missing = [linear for linear in linears if linear.bias is None]
        if len(missing) == len(linears):  # no bias in the group: its flag stays off
            continue
        for linear in missing:
            zeros = linear.weight.new_zeros(linear.out_features)
            linear.bias = nn.Parameter(zeros, requires_grad=linear.weight.requires_grad)


def _merged_model_args(model: nn.Module) -> dict:
    """timm's constructor flags for biases a merge may have added to layers the stock model builds without."""
    return {flag: True for flag, parts in BIAS_FLAGS.items()
            if all(linear.bias is not None for linear in _bias_group(model, parts))}


TIMM_VIT = register_family(
    BackboneFamily(name="timm_vit", matches=_is_timm_vit, places=_places, merged_model_args=_merged_model_args,
                   complete_merge=_complete_merge)
)
