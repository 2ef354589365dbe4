"""timm's Swin Transformer family (``timm.models.swin_transformer.SwinTransformer``: Swin-T/S/B/L).

Stages of different widths (each patch merging doubles it), windowed attention with a fused qkv, no class
token, and a classifier (``head.fc``) on the average-pooled last stage. Blocks are mapped as
``layers.{stage}.blocks.{j}``, numbered across stages, each with its own width.

Only blocks with timm's pre-norm ``SwinTransformerBlock.forward`` are accepted (X1 = X + drop_path1(attn
over windows of norm1(X)), X2 = X1 + drop_path2(mlp(norm2(X1)))); Swin V2's post-norm blocks are another
class and are not matched. The attention runs over windows of the token grid, so prompt tokens (VPT) have
no place in it: the map says so and those methods refuse.
"""

from __future__ import annotations

from torch import nn

from ..errors import BackboneError
from .base import BackboneFamily, ModelPlaces, register_family
from .timm_blocks import timm_block_places

NO_PROMPTS = (
    "Swin's attention runs inside windows of the patch grid (and patch merging regroups that grid), so extra "
    "prompt tokens have no position in any window; VPT's prompts apply to global-attention ViTs only"
)


def _is_timm_swin(model: nn.Module) -> bool:
    try:
        from timm.models.swin_transformer import SwinTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(model, SwinTransformer)


def _places(model: nn.Module) -> ModelPlaces:
    from timm.models.swin_transformer import SwinTransformerBlock

    blocks = []
    for s, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            path = f"layers.{s}.blocks.{j}"
            blocks.append(timm_block_places(block, path, len(blocks), SwinTransformerBlock, "timm Swin"))
    if not blocks:
        raise BackboneError("this Swin Transformer has no blocks to adapt")
    fc = getattr(model.head, "fc", None)
    heads = ("head.fc",) if isinstance(fc, nn.Module) else ()
    embed = model.patch_embed
    proj = getattr(embed, "proj", None)
    first_blocks = [stage.blocks[0] for stage in model.layers if len(stage.blocks)]
    shapes = {
        "depths": [len(stage.blocks) for stage in model.layers],
        "widths": [b.attn.qkv.in_features for b in first_blocks],
        "num_heads": [b.attn.num_heads for b in first_blocks],
        "window_size": [list(b.window_size) for b in first_blocks],
        "mlp_hidden": [b.mlp.fc1.out_features for b in first_blocks],
        "patch_size": list(embed.patch_size),
        "img_size": list(embed.img_size) if getattr(embed, "img_size", None) is not None else None,
    }
    final_norm = getattr(model, "norm", None)
    return ModelPlaces(
        family="timm_swin",
        blocks=tuple(blocks),
        heads=heads,
        embed_dim=blocks[0].width,
        num_prefix_tokens=0,
        patch_embed="patch_embed",
        final_norms=("norm",) if isinstance(final_norm, nn.Module) and not isinstance(final_norm, nn.Identity) else (),
        patch_proj="patch_embed.proj" if isinstance(proj, nn.Conv2d) else "",
        patch_size=tuple(embed.patch_size),
        in_chans=proj.in_channels if isinstance(proj, nn.Conv2d) else 3,
        patch_shift_target=None,  # a LayerNorm follows the projection: no parameter can absorb a shift
        shapes=shapes,
        no_prompts=NO_PROMPTS,
    )


def _merged_model_args(model: nn.Module) -> dict:
    """timm's ``qkv_bias=True`` when a merge gave a bias-less Swin's qkv layers a bias."""
    qkvs = [block.attn.qkv for stage in model.layers for block in stage.blocks]
    return {"qkv_bias": True} if qkvs and all(q.bias is not None for q in qkvs) else {}


TIMM_SWIN = register_family(
    BackboneFamily(name="timm_swin", matches=_is_timm_swin, places=_places, merged_model_args=_merged_model_args)
)
