"""VPT shallow and deep: counts, init, where prompts go, and that the head reads the same tokens."""

from __future__ import annotations

import pytest
import timm
import torch

import vitune
from vitune.layers.prompts import PromptedBlock

from cases import NOT_ON_BACKBONE
from helpers import BACKBONES, TINY, image_batch, make_backbone, perturb_trainable, vit_b16


def adapted(method: str, kind: str, **config):
    model = vitune.apply(make_backbone(kind), method, **config)
    perturb_trainable(model, std=0.5)
    return model.eval()


def embedded_tokens(model, x: torch.Tensor) -> torch.Tensor:
    """The token sequence the first block receives, from the backbone's own embedding modules."""
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))


def prompted_forward_by_hand(plain, prompts: list[torch.Tensor | None], deep: bool, x: torch.Tensor):
    """Insert each block's prompts after the prefix tokens, drop them after the block (deep) or after
    the last block (shallow), then run the backbone's own norm, pooling and head."""
    p = plain.num_prefix_tokens
    h = embedded_tokens(plain, x)
    inserted = 0
    for block, block_prompts in zip(plain.blocks, prompts):
        if block_prompts is not None:
            h = torch.cat([h[:, :p], block_prompts.expand(len(h), -1, -1), h[:, p:]], dim=1)
            inserted = len(block_prompts)
        h = block(h)
        if deep:
            h = torch.cat([h[:, :p], h[:, p + inserted:]], dim=1)
    if not deep:
        h = torch.cat([h[:, :p], h[:, p + inserted:]], dim=1)
    return plain.forward_head(plain.norm(h))


def test_vit_b16_counts():
    assert vitune.count_parameters(vitune.apply(vit_b16(), "vpt_deep"))["method"] == 92_160
    assert vitune.count_parameters(vitune.apply(vit_b16(), "vpt_shallow"))["method"] == 7_680


def test_vit_b16_init_range():
    model = vitune.apply(vit_b16(meta=False, depth=1), "vpt_deep")
    prompts = model.blocks[0].prompts
    bound = (6 / (3 * 16 * 16 + 768)) ** 0.5  # VPT: xavier-uniform with the patch fan-in
    assert prompts.abs().max() <= bound and prompts.abs().max() > 0.9 * bound


# Swin refuses prompts (windowed attention): tests/cases.py NOT_ON_BACKBONE, checked by test_contract.py.
@pytest.mark.parametrize("kind", [k for k in BACKBONES if ("vpt_deep", k) not in NOT_ON_BACKBONE])
@pytest.mark.parametrize("method", ["vpt_shallow", "vpt_deep"])
def test_model_matches_prompts_inserted_by_hand(method, kind):
    model = adapted(method, kind, num_tokens=3)
    deep = method == "vpt_deep"
    prompts = [getattr(b, "prompts", None) for b in model.blocks]
    assert all(t is not None for t in prompts) if deep else (prompts[0] is not None and prompts[1] is None)
    plain = make_backbone(kind)
    plain.head.load_state_dict(model.head.state_dict())  # the head was perturbed with the prompts
    x = image_batch(model)
    with torch.no_grad():
        expected = prompted_forward_by_hand(plain, prompts, deep, x)
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["dinov2_reg", "avgpool"])
@pytest.mark.parametrize("method", ["vpt_shallow", "vpt_deep"])
def test_head_reads_the_same_tokens(method, kind):
    """Prompts sit after the class and register tokens and are gone before the final norm and pooling."""
    model = adapted(method, kind, num_tokens=4)
    plain = make_backbone(kind)
    p = plain.num_prefix_tokens
    seen = {}
    model.blocks[0].block.register_forward_pre_hook(lambda m, args: seen.__setitem__("first", args[0]))
    model.norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("norm", args[0]))
    x = image_batch(model)
    with torch.no_grad():
        model(x)
        before = embedded_tokens(plain, x)
    first = seen["first"]
    assert first.shape[1] == before.shape[1] + 4
    torch.testing.assert_close(first[:, :p], before[:, :p], rtol=0, atol=0)  # class + registers in place
    torch.testing.assert_close(first[:, p:p + 4], model.blocks[0].prompts.expand(len(x), -1, -1))
    torch.testing.assert_close(first[:, p + 4:], before[:, p:], rtol=0, atol=0)  # patches follow
    assert seen["norm"].shape == before.shape  # the pooling sees exactly the backbone's tokens


def test_prompt_dropout_is_configurable():
    model = vitune.apply(make_backbone(), "vpt_deep", dropout=0.5)
    x = image_batch(model)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    b = model(x)
    assert (a - b).abs().max() > 0
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    with pytest.raises(vitune.ConfigError, match="num_tokens"):
        vitune.apply(make_backbone(), "vpt_deep", num_tokens=0)


def test_shallow_wraps_first_and_last_block_only():
    torch.manual_seed(0)
    deeper = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**TINY, "depth": 4})
    model = vitune.apply(deeper, "vpt_shallow")
    wrapped = [i for i, b in enumerate(model.blocks) if isinstance(b, PromptedBlock)]
    assert wrapped == [0, 3]
    assert model.blocks[0].prompts.shape == (10, 64) and model.blocks[0].remove == 0
    assert model.blocks[3].prompts is None and model.blocks[3].remove == 10


def test_attention_mask_is_refused():
    model = vitune.apply(make_backbone(), "vpt_deep")
    x = image_batch(model)
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    with pytest.raises(vitune.VituneError, match="attn_mask"):
        model(x, attn_mask=torch.zeros(tokens, tokens, dtype=torch.bool))


@pytest.mark.parametrize("method", ["vpt_shallow", "vpt_deep"])
def test_merge_is_refused_with_the_reason(method):
    with pytest.raises(vitune.NotMergeableError, match=f"{method}.*prompts"):
        vitune.merge(vitune.apply(make_backbone(), method))
