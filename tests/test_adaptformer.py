"""AdaptFormer: counts, the block formula against the official one, every option, layer-wise selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitune
from vitune.layers.branch_adapters import InputTap, ParallelAdapters, SequentialAdapters
from vitune.layers.prompts import PromptedBlock
from vitune.methods.adaptformer import num_adapters, select_adapter

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def adapted(kind: str = "vit", **config):
    model = vitune.apply(make_backbone(kind), "adaptformer", **config)
    perturb_trainable(model)
    return model.eval()


def bottleneck_by_hand(adapter, z: torch.Tensor, scale: float, layernorm: str = "none") -> torch.Tensor:
    """s * (ReLU(z W_d^T + b_d) W_u^T + b_u), with the optional LayerNorm, from the adapter's tensors."""
    if layernorm == "in":
        z = F.layer_norm(z, z.shape[-1:], adapter.norm.weight, adapter.norm.bias, adapter.norm.eps)
    hidden = torch.relu(z @ adapter.down.weight.T + adapter.down.bias)
    out = scale * (hidden @ adapter.up.weight.T + adapter.up.bias)
    if layernorm == "out":
        out = F.layer_norm(out, out.shape[-1:], adapter.norm.weight, adapter.norm.bias, adapter.norm.eps)
    return out


def plain_block_parts(kind: str, x: torch.Tensor):
    """X1 and the MLP branch output DP(LS(MLP(LN2(X1)))) from an untouched copy of the same backbone (eval)."""
    block = make_backbone(kind).blocks[0]
    x1 = x + block.ls1(block.attn(block.norm1(x)))
    return x1, block.ls2(block.mlp(block.norm2(x1)))


def adapters_of(block: nn.Module) -> nn.ModuleList:
    """The adapters of one block: they sit at the end of its MLP branch."""
    return block.drop_path2.adapters


def tokens(model, n: int = 2, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    count = model.patch_embed.num_patches + model.num_prefix_tokens
    return torch.randn(n, count, model.embed_dim, generator=g)


def test_vit_b16_counts():
    assert vitune.count_parameters(vitune.apply(vit_b16(), "adaptformer"))["method"] == 1_189_632
    assert vitune.count_parameters(vitune.apply(vit_b16(), "adaptformer", ffn_num=8))["method"] == 156_768


@pytest.mark.parametrize("kind", ["vit", "dinov2_reg"])
def test_parallel_block_matches_formula(kind):
    """X2 = X1 + LS(MLP(LN2(X1))) + s*a(X1): the adapter output is not scaled by the layer scale."""
    model = adapted(kind)
    x = tokens(model)
    x1, h = plain_block_parts(kind, x)
    adapter = adapters_of(model.blocks[0])[0]
    with torch.no_grad():
        expected = x1 + h + bottleneck_by_hand(adapter, x1, 0.1)
        torch.testing.assert_close(model.blocks[0](x), expected, rtol=1e-5, atol=1e-5)
        # the adapter reads X1, not LN2(X1): the LN2 input would give a different result
        assert (bottleneck_by_hand(adapter, x1, 0.1) - bottleneck_by_hand(adapter, h, 0.1)).abs().max() > 1e-3


def official_block(block: nn.Module, x: torch.Tensor, adapter_out, option: str) -> torch.Tensor:
    """AdaptFormer's official block, written from its formula with the block's own (backbone) submodules.

    parallel:   X2 = X1 + DP(LS(MLP(LN2(X1)))) + s*a(X1)
    sequential: H = DP(LS(MLP(LN2(X1)))),  X2 = X1 + H + s*a(H)
    (The official block has no layer scale; with one, it belongs to the MLP branch, not to the adapter.)
    """
    x1 = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    h = block.drop_path2(block.ls2(block.mlp(block.norm2(x1))))
    return x1 + h + adapter_out(x1 if option == "parallel" else h)


def previous_block(block: nn.Module, x: torch.Tensor, adapter_out, option: str) -> torch.Tensor:
    """What vitune computed before: the adapter output routed through the MLP branch's ls2 and drop path."""
    x1 = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    m = block.mlp(block.norm2(x1))
    inner = m + adapter_out(x1) if option == "parallel" else m + adapter_out(m)
    return x1 + block.drop_path2(block.ls2(inner))


@pytest.mark.parametrize("option", ["parallel", "sequential"])
def test_official_residual_placement_with_layer_scale_and_drop_path(option):
    """On a layer-scale backbone with drop path, in train mode, the block equals the official formula; the
    previous placement (adapter output through ls2 and drop_path2) does not."""
    kind, seed = "dinov2_reg", 0
    model = vitune.apply(make_backbone(kind, seed=seed, drop_path_rate=0.5), "adaptformer",
                         ffn_option=option, ffn_num=8, dropout=0.0)
    perturb_trainable(model, std=0.3)
    model.train()
    # timm spreads drop path linearly over depth: the last block has the full rate, the first none.
    plain = make_backbone(kind, seed=seed, drop_path_rate=0.5).blocks[-1].train()
    assert plain.drop_path2.drop_prob == 0.5 and plain.ls2.gamma.abs().sum() > 0
    adapter = adapters_of(model.blocks[-1])[0]

    def adapter_out(z):
        return bottleneck_by_hand(adapter, z, 0.1)

    x = torch.randn(8, model.patch_embed.num_patches + model.num_prefix_tokens, model.embed_dim,
                    generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.manual_seed(7)  # the drop-path masks: drawn by drop_path1, then drop_path2, in every forward
        got = model.blocks[-1](x)
        torch.manual_seed(7)
        official = official_block(plain, x, adapter_out, option)
        torch.manual_seed(7)
        previous = previous_block(plain, x, adapter_out, option)
        torch.manual_seed(7)
        without_drop = official_block(plain.eval(), x, adapter_out, option)
    assert (official - without_drop).abs().max() > 1e-2  # drop path did drop samples
    torch.testing.assert_close(got, official, rtol=1e-5, atol=1e-5)
    assert (previous - official).abs().max() > 1e-2  # so the old placement would fail this test


def test_structure_taps_norm2_and_wraps_the_mlp_branch_end():
    model = vitune.apply(make_backbone(), "adaptformer")
    block = model.blocks[0]
    assert isinstance(block.norm2, InputTap) and isinstance(block.norm2.module, nn.LayerNorm)
    assert isinstance(block.drop_path2, ParallelAdapters) and block.drop_path2._tap is block.norm2
    assert type(block.mlp).__name__ == "Mlp"  # the backbone's own MLP, untouched
    # backbone tensors stay frozen, adapters train
    assert not block.norm2.module.weight.requires_grad and not block.mlp.fc1.weight.requires_grad
    assert adapters_of(block)[0].down.weight.requires_grad
    assert block.norm2.seen is None  # nothing is kept between forwards
    model(image_batch(model))
    assert block.norm2.seen is None
    sequential = vitune.apply(make_backbone(), "adaptformer", ffn_option="sequential").blocks[0]
    assert isinstance(sequential.drop_path2, SequentialAdapters) and isinstance(sequential.norm2, nn.LayerNorm)


def test_sequential_block_matches_formula():
    model = adapted(ffn_option="sequential")
    x = tokens(model)
    x1, h = plain_block_parts("vit", x)
    with torch.no_grad():
        expected = x1 + h + bottleneck_by_hand(adapters_of(model.blocks[0])[0], h, 0.1)
        torch.testing.assert_close(model.blocks[0](x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layernorm", ["in", "out"])
def test_layernorm_options(layernorm):
    model = adapted(ffn_adapter_layernorm_option=layernorm, ffn_adapter_scalar=0.5)
    adapter = adapters_of(model.blocks[0])[0]
    assert isinstance(adapter.norm, nn.LayerNorm)
    x = tokens(model)
    x1, h = plain_block_parts("vit", x)
    with torch.no_grad():
        expected = x1 + h + bottleneck_by_hand(adapter, x1, 0.5, layernorm)
        torch.testing.assert_close(model.blocks[0](x), expected, rtol=1e-5, atol=1e-5)
    # one LayerNorm per adapter (2 * 64 parameters), none with the default "none"
    base = vitune.count_parameters(vitune.apply(make_backbone(), "adaptformer"))["method"]
    assert vitune.count_parameters(model)["method"] == base + 2 * 2 * 64


def test_learnable_scale():
    model = vitune.apply(make_backbone(), "adaptformer", ffn_adapter_scalar="learnable_scalar")
    adapter = adapters_of(model.blocks[0])[0]
    assert isinstance(adapter.scale, nn.Parameter) and adapter.scale.item() == 1.0
    assert adapter.scale.requires_grad
    base = vitune.count_parameters(vitune.apply(make_backbone(), "adaptformer"))["method"]
    assert vitune.count_parameters(model)["method"] == base + 2  # one scalar per block
    perturb_trainable(model)
    model.eval()
    x = tokens(model)
    x1, h = plain_block_parts("vit", x)
    with torch.no_grad():
        expected = x1 + h + bottleneck_by_hand(adapter, x1, adapter.scale.item())
        torch.testing.assert_close(model.blocks[0](x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value,scale", [("0.5", 0.5), (0.25, 0.25), ("2", 2.0)])
def test_scalar_accepts_strings_and_numbers(value, scale):
    model = vitune.apply(make_backbone(), "adaptformer", ffn_adapter_scalar=value)
    assert adapters_of(model.blocks[0])[0].scale == scale


def test_bad_options_are_rejected():
    with pytest.raises(vitune.ConfigError, match="ffn_adapter_scalar"):
        vitune.apply(make_backbone(), "adaptformer", ffn_adapter_scalar="large")
    with pytest.raises(vitune.ConfigError, match="d_model"):
        vitune.apply(make_backbone(), "adaptformer", d_model=768)
    with pytest.raises(vitune.ConfigError, match="ffn_num"):
        vitune.apply(make_backbone(), "adaptformer", ffn_num=[])
    with pytest.raises(vitune.ConfigError, match="ffn_adapter_init_option"):
        vitune.apply(make_backbone(), "adaptformer", ffn_adapter_init_option="bert")


def test_default_init_starts_as_the_backbone():
    model = vitune.apply(make_backbone(), "adaptformer").eval()
    adapter = adapters_of(model.blocks[0])[0]
    assert adapter.up.weight.abs().sum() == 0 and adapter.up.bias.abs().sum() == 0
    assert adapter.down.bias.abs().sum() == 0 and adapter.down.weight.abs().sum() > 0
    x = image_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), make_backbone()(x), rtol=0, atol=1e-6)


def test_official_tuning_config_keys():
    """The keys of AdaptFormer's tuning_config (main_image.py) are this method's config keys."""
    tuning_config = dict(
        ffn_adapt=True, ffn_option="parallel", ffn_adapter_layernorm_option="none",
        ffn_adapter_init_option="lora", ffn_adapter_scalar="0.1", ffn_num=8, d_model=64,
        vpt_on=False, vpt_num=1,
    )
    model = vitune.apply(make_backbone(), "adaptformer", **tuning_config)
    assert vitune.count_parameters(model)["method"] == 2 * (64 * 8 + 8 + 8 * 64 + 64)


def test_several_adapters_are_summed():
    model = adapted(ffn_num=[4, 8])
    adapters = adapters_of(model.blocks[0])
    assert [a.down.out_features for a in adapters] == [4, 8]
    x = tokens(model)
    x1, h = plain_block_parts("vit", x)
    with torch.no_grad():
        expected = x1 + h + sum(bottleneck_by_hand(a, x1, 0.1) for a in adapters)
        torch.testing.assert_close(model.blocks[0](x), expected, rtol=1e-5, atol=1e-5)


def test_select_adapter_trains_one_adapter_and_the_head():
    model = vitune.apply(make_backbone(), "adaptformer", ffn_num=[4, 8, 4])
    assert num_adapters(model) == 3
    select_adapter(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if not n.startswith("head.")} == {
        n for n, _ in model.named_parameters() if ".adapters.1." in n
    }
    assert {"head.weight", "head.bias"} <= trainable
    model.train()
    x = image_batch(model)
    F.cross_entropy(model(x), torch.arange(len(x)) % 5).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    select_adapter(model, None)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".adapters." in n)
    with pytest.raises(vitune.VituneError, match="out of range"):
        select_adapter(model, 3)
    with pytest.raises(vitune.VituneError, match="adaptformer"):
        select_adapter(vitune.apply(make_backbone(), "adapter"), 0)


def test_vpt_prompts():
    model = vitune.apply(make_backbone(), "adaptformer", vpt_on=True, vpt_num=3)
    base = vitune.count_parameters(vitune.apply(make_backbone(), "adaptformer"))["method"]
    assert vitune.count_parameters(model)["method"] == base + 2 * 3 * 64
    for block in model.blocks:
        assert isinstance(block, PromptedBlock) and block.remove == 3 and block.prompts.shape == (3, 64)
        assert isinstance(block.block.drop_path2, ParallelAdapters)  # adapters inside the prompted block
        # xavier-uniform on a (1, vpt_num, D) tensor
        assert block.prompts.abs().max() <= (6 / (4 * 64)) ** 0.5
    x = image_batch(model)
    assert model(x).shape == (len(x), 5)
    # prompts only: ffn_adapt off
    only = vitune.apply(make_backbone(), "adaptformer", vpt_on=True, ffn_adapt=False)
    assert vitune.count_parameters(only)["method"] == 2 * 64
    assert num_adapters(only) == 0


def test_bn_linear_head_saves_its_statistics(tmp_path):
    model = vitune.apply(make_backbone(), "adaptformer", head="bn_linear")
    bn, linear = model.head
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert isinstance(linear, nn.Linear) and linear.weight.requires_grad
    perturb_trainable(model)
    model.train()
    with torch.no_grad():
        model(image_batch(model, n=8))  # moves the running statistics
    assert bn.running_mean.abs().sum() > 0
    model.eval()
    x = image_batch(model)
    with torch.no_grad():
        expected = model(x)
    vitune.save_adapter(model, tmp_path)
    loaded = vitune.load_adapter(make_backbone(), tmp_path).eval()
    torch.testing.assert_close(loaded.head[0].running_var, bn.running_var, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


def test_all_options_survive_save_and_load(tmp_path):
    config = dict(ffn_num=[4, 8], ffn_adapter_scalar="learnable_scalar", ffn_adapter_layernorm_option="in",
                  ffn_option="sequential", vpt_on=True, vpt_num=2)
    model = adapted("dinov2_reg", **config)
    x = image_batch(model)
    with torch.no_grad():
        expected = model(x)
    vitune.save_adapter(model, tmp_path)
    loaded = vitune.load_adapter(make_backbone("dinov2_reg"), tmp_path).eval()
    assert loaded.vitune_method.config == model.vitune_method.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


def test_merge_is_refused_with_the_reason():
    model = vitune.apply(make_backbone(), "adaptformer")
    assert not vitune.is_mergeable("adaptformer")
    with pytest.raises(vitune.NotMergeableError, match="adaptformer.*ReLU"):
        vitune.merge(model)


@pytest.mark.parametrize("config", [{}, {"vpt_on": True, "vpt_num": 2}, {"ffn_option": "sequential"}])
def test_torch_compile_whole_graph_train_and_eval(config):
    """The tap hands X1 over inside one compiled graph (fullgraph: no graph break), in train and eval mode,
    with prompts too, and releases it afterwards."""
    torch._dynamo.reset()
    model = vitune.apply(make_backbone("dinov2_reg"), "adaptformer", dropout=0.0, **config)
    perturb_trainable(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = image_batch(model)
    for train in (True, False):
        model.train(train)
        expected = model(x)
        got = compiled(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        if train:
            got.sum().backward()
            assert all(p.grad is not None for n, p in model.named_parameters() if ".adapters." in n)
    assert all(m.seen is None for m in model.modules() if isinstance(m, InputTap))
    torch._dynamo.reset()


def test_deepcopy_keeps_each_copy_on_its_own_tap():
    import copy

    model = adapted()
    twin = copy.deepcopy(model)
    assert twin.blocks[0].drop_path2._tap is twin.blocks[0].norm2 is not model.blocks[0].norm2
    x = image_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


def test_methods_is_the_package_and_lists_the_names():
    import vitune.methods.adaptformer as module

    assert vitune.methods.adaptformer is module and vitune.methods.adaptformer.select_adapter is select_adapter
    assert "adaptformer" in vitune.methods() and vitune.methods() == sorted(vitune.methods())


def test_files_naming_the_adapters_under_the_mlp_still_load(tmp_path):
    """Files written when the adapters sat in an MLP wrapper (``blocks.0.block.mlp.adapters.*`` with prompts)
    load into the branch-end placement: the same function on a backbone without layer scale and drop path."""
    from test_adapter import rename_in_file

    model = adapted(vpt_on=True)
    x = image_batch(model)
    with torch.no_grad():
        expected = model(x)
    vitune.save_adapter(model, tmp_path)
    rename_in_file(tmp_path / "adapter_model.safetensors", ".drop_path2.adapters.", ".mlp.adapters.")
    loaded = vitune.load_adapter(make_backbone(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
