"""AdaptFormer's code guide: its tuning_config goes straight into vitune.apply."""

import torch
from torch import nn

import vitune
from vitune.methods.adaptformer import num_adapters, select_adapter
from helpers import image_batch, make_backbone


class EasyDict(dict):
    """Stand-in for easydict.EasyDict (a dict with attribute access), which the guide imports."""

    __getattr__ = dict.__getitem__


class Args:  # the guide's argparse defaults that its tuning_config reads
    ffn_adapt = True
    ffn_num = 64
    vpt = False
    vpt_num = 1
    adpnum_option = "single"


def guide_tuning_config(args, d_model):
    # The guide's block, verbatim except d_model (768 for ViT-B; the tiny test backbone is 64 wide).
    tuning_config = EasyDict(
        # AdaptFormer
        ffn_adapt=args.ffn_adapt,
        ffn_option="parallel",
        ffn_adapter_layernorm_option="none",
        ffn_adapter_init_option="lora",
        ffn_adapter_scalar="0.1",
        ffn_num=args.ffn_num,
        d_model=d_model,
        # VPT related
        vpt_on=args.vpt,
        vpt_num=args.vpt_num,
        adpnum_option = args.adpnum_option,
    )
    return tuning_config


def test_guide_tuning_config_is_accepted():
    tuning_config = guide_tuning_config(Args, d_model=64)
    model = vitune.apply(make_backbone(), "adaptformer", **tuning_config)
    assert vitune.count_parameters(model)["method"] == 2 * (64 * 64 + 64 + 64 * 64 + 64)
    assert model.vitune_method.config.scale == 0.1


def test_guide_head_and_multi_adapters():
    args = Args()
    args.ffn_num, args.adpnum_option, args.vpt = [8, 16], "multi", True
    model = vitune.apply(make_backbone(), "adaptformer", **guide_tuning_config(args, 64), head="bn_linear")
    # The guide's head: BatchNorm1d(affine=False, eps=1e-6) then the linear head.
    assert isinstance(model.head[0], nn.BatchNorm1d) and not model.head[0].affine and model.head[0].eps == 1e-6
    assert num_adapters(model) == 2
    select_adapter(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".adapters.1." in n for n in trainable) and not any(".adapters.0." in n for n in trainable)
    assert {"head.1.weight", "head.1.bias"} <= trainable
    model.train()
    model(image_batch(model)).sum().backward()


def test_d_model_mismatch_is_named():
    import pytest

    with pytest.raises(vitune.ConfigError, match="d_model"):
        vitune.apply(make_backbone(), "adaptformer", **guide_tuning_config(Args, d_model=768))


def test_guide_config_verbatim_on_vit_b16():
    """The guide's block exactly as written (d_model=768) on ViT-B/16: the paper's AdaptFormer-64."""
    from helpers import vit_b16

    tuning_config = guide_tuning_config(Args, d_model=768)
    model = vitune.apply(vit_b16(num_classes=100), "adaptformer", **tuning_config)
    assert vitune.count_parameters(model)["method"] == 1_189_632
