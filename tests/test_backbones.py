"""The timm ViT family's map of places."""

import timm
import pytest

import vitune
from vitune.backbones import find_places
from helpers import make_backbone, perturb_trainable


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


@pytest.mark.parametrize(
    "name,block",
    [("vit_base_patch16_rpn_224", "ResPostBlock"), ("vit_small_patch16_18x2_224", "ParallelThingsBlock")],
)
def test_blocks_of_another_layout_are_refused(name, block):
    """Post-norm and parallel blocks are not the pre-norm layout the methods place adapters around."""
    kwargs = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=2, num_classes=5)
    model = timm.create_model(name, pretrained=False, depth=2, **kwargs)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(vitune.BackboneError, match=rf"blocks\.0 is a .*{block}, whose forward is not timm's pre-norm"):
        vitune.apply(model, "adaptformer")
    assert vitune.applied_method(model) is None and model.state_dict().keys() == before.keys()


def test_places_carry_the_backbone_knowledge_methods_need():
    vit = find_places(make_backbone("vit"))
    assert (vit.patch_proj, vit.patch_size, vit.in_chans) == ("patch_embed.proj", (8, 8), 3)
    assert vit.patch_shift_target == ("pos_embed", 1)  # patch positions follow the class token's
    assert (vit.blocks[0].attn_branch, vit.blocks[0].mlp_branch) == ("blocks.0.drop_path1", "blocks.0.drop_path2")
    assert vit.num_classes(make_backbone("vit")) == 5
    assert vit.head_parameter_names(make_backbone("vit")) == ["head.weight", "head.bias"]
    assert find_places(make_backbone("dinov2_reg")).patch_shift_target == ("pos_embed", 0)  # no_embed_class
    clip = make_backbone("clip")
    assert clip.patch_embed.proj.bias is None and find_places(clip).patch_shift_target == ("pos_embed", 1)


def test_merged_model_args_name_the_biases_a_merge_added():
    model = vitune.apply(make_backbone("noqkvbias"), "repadapter")
    perturb_trainable(model)  # non-zero adapter biases: the merged qkv needs a bias
    vitune.merge(model)
    assert model.blocks[0].attn.qkv.bias is not None
    assert vitune.merged_model_args(model)["qkv_bias"] is True
