"""The timm ViT family's map of places."""

import timm
import pytest

import vitune
from vitune.backbones import find_places
from helpers import make_backbone


def test_vit_places():
    places = find_places(make_backbone("vit"))
    assert places.family == "timm_vit" and places.depth == 2 and places.embed_dim == 64
    block = places.blocks[1]
    assert (block.norm1, block.qkv, block.proj, block.norm2, block.mlp, block.fc1, block.fc2) == (
        "blocks.1.norm1", "blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.norm2", "blocks.1.mlp",
        "blocks.1.mlp.fc1", "blocks.1.mlp.fc2",
    )
    assert block.linear("q") == ("blocks.1.attn.qkv", slice(0, 64))
    assert block.linear("v") == ("blocks.1.attn.qkv", slice(128, 192))
    assert places.heads == ("head",) and places.num_prefix_tokens == 1


def test_dinov2_with_registers_and_layer_scale():
    model = make_backbone("dinov2_reg")
    places = find_places(model)
    assert places.num_prefix_tokens == 5
    assert type(model.blocks[0].ls1).__name__ == "LayerScale"


def test_distilled_deit_has_two_heads():
    model = timm.create_model("deit_tiny_distilled_patch16_224", img_size=32, patch_size=8, depth=2,
                              embed_dim=64, num_heads=2, num_classes=5)
    places = find_places(model)
    assert places.heads == ("head", "head_dist") and places.num_prefix_tokens == 2
    vitune.apply(model, "lora")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head_dist.weight"} <= trainable


def test_non_timm_block_is_named():
    model = make_backbone("vit")
    model.blocks[1].attn.qkv = timm.layers.Mlp(64, 64, 192)
    with pytest.raises(vitune.BackboneError, match=r"blocks\.1\.attn\.qkv is Mlp, expected Linear"):
        find_places(model)
