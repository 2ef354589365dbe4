"""Bottleneck adapter (Pfeiffer / Houlsby): count, block formula by hand, placement, init, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.layers.branch_adapters import SequentialAdapters

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def adapted(kind: str = "vit", **config):
    model = vitune.apply(make_backbone(kind), "adapter", **config)
    perturb_trainable(model)
    return model.eval()


def tokens(model, n: int = 2, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    count = model.patch_embed.num_patches + model.num_prefix_tokens
    return torch.randn(n, count, model.embed_dim, generator=g)


def with_adapter(adapter, h: torch.Tensor, act=torch.relu, scale: float = 1.0, layernorm: bool = False):
    """h + s * up(act(down(LN?(h)))) from the adapter's tensors."""
    z = F.layer_norm(h, h.shape[-1:], adapter.norm.weight, adapter.norm.bias, adapter.norm.eps) if layernorm else h
    return h + scale * (act(z @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias)


def test_vit_b16_count():
    assert vitune.count_parameters(vitune.apply(vit_b16(), "adapter"))["method"] == 156_768


@pytest.mark.parametrize("kind", ["vit", "dinov2_reg"])
def test_pfeiffer_block_matches_formula(kind):
    """X2 = X1 + H + a(H), H = LS(MLP(LN2(X1))): the adapter reads the MLP branch's output where it joins
    the residual stream, after the layer scale."""
    model = adapted(kind)
    block = model.blocks[0]
    assert isinstance(block.drop_path2, SequentialAdapters)
    assert not isinstance(block.drop_path1, SequentialAdapters)
    assert type(block.mlp).__name__ == "Mlp"  # the backbone's MLP is not touched
    plain = make_backbone(kind).blocks[0]
    x = tokens(model)
    with torch.no_grad():
        x1 = x + plain.ls1(plain.attn(plain.norm1(x)))
        h = plain.ls2(plain.mlp(plain.norm2(x1)))
        expected = x1 + with_adapter(block.drop_path2.adapters[0], h)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def official_block(block, x, attn_adapter, mlp_adapter):
    """The adapter of NOAH's and PEViT's blocks, from its formula with the block's own submodules: after each
    adapted branch, H = DP(LS(sublayer(LN(.)))) joins the residual stream as H + a(H)."""
    h = block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    x1 = x + (h if attn_adapter is None else attn_adapter(h))
    h = block.drop_path2(block.ls2(block.mlp(block.norm2(x1))))
    return x1 + mlp_adapter(h)


def previous_block(block, x, attn_adapter, mlp_adapter):
    """What vitune computed before: the sublayer wrapped, so H + a(H) went through layer scale and drop path."""
    h = block.attn(block.norm1(x))
    x1 = x + block.drop_path1(block.ls1(h if attn_adapter is None else attn_adapter(h)))
    return x1 + block.drop_path2(block.ls2(mlp_adapter(block.mlp(block.norm2(x1)))))


@pytest.mark.parametrize("placement", ["pfeiffer", "houlsby"])
def test_official_placement_with_layer_scale_and_drop_path(placement):
    """On a layer-scale backbone with drop path, in train mode, the block equals the official formula; the
    previous placement (adapter inside layer scale and drop path) does not."""
    model = vitune.apply(make_backbone("dinov2_reg", drop_path_rate=0.5), "adapter", placement=placement)
    perturb_trainable(model, std=0.3)
    model.train()
    block = model.blocks[-1]  # timm's drop path rate grows with depth: the last block has the full rate
    plain = make_backbone("dinov2_reg", drop_path_rate=0.5).blocks[-1].train()
    assert plain.drop_path2.drop_prob == 0.5
    attn = (lambda h: with_adapter(block.drop_path1.adapters[0], h)) if placement == "houlsby" else None

    def mlp(h):
        return with_adapter(block.drop_path2.adapters[0], h)

    x = torch.randn(8, model.patch_embed.num_patches + model.num_prefix_tokens, model.embed_dim,
                    generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        results = []
        for compute in (block, lambda x: official_block(plain, x, attn, mlp),
                        lambda x: previous_block(plain, x, attn, mlp)):
            torch.manual_seed(7)  # the same drop-path masks for every computation
            results.append(compute(x))
        got, official, previous = results
        torch.manual_seed(7)
        without_drop = official_block(plain.eval(), x, attn, mlp)
    assert (official - without_drop).abs().max() > 1e-2  # drop path did drop samples
    torch.testing.assert_close(got, official, rtol=1e-5, atol=1e-5)
    assert (previous - official).abs().max() > 1e-2  # so the old placement would fail this test


def test_houlsby_adapts_the_attention_output_too():
    model = adapted(placement="houlsby", act="gelu", scale=0.5)
    block = model.blocks[0]
    assert isinstance(block.drop_path1, SequentialAdapters) and isinstance(block.drop_path2, SequentialAdapters)
    plain = make_backbone().blocks[0]
    x = tokens(model)
    gelu = F.gelu
    with torch.no_grad():
        x1 = x + with_adapter(block.drop_path1.adapters[0], plain.attn(plain.norm1(x)), gelu, 0.5)
        expected = x1 + with_adapter(block.drop_path2.adapters[0], plain.mlp(plain.norm2(x1)), gelu, 0.5)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    assert vitune.count_parameters(model)["method"] == 2 * 2 * (64 * 8 + 8 + 8 * 64 + 64)


def test_layernorm_option():
    model = adapted(layernorm=True, bottleneck=4)
    block = model.blocks[0]
    plain = make_backbone().blocks[0]
    x = tokens(model)
    with torch.no_grad():
        x1 = x + plain.attn(plain.norm1(x))
        expected = x1 + with_adapter(block.drop_path2.adapters[0], plain.mlp(plain.norm2(x1)), layernorm=True)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    assert vitune.count_parameters(model)["method"] == 2 * (64 * 4 + 4 + 4 * 64 + 64 + 2 * 64)


def test_default_init_starts_as_the_backbone():
    model = vitune.apply(make_backbone(), "adapter").eval()
    x = image_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), make_backbone()(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("init", ["xavier", "bert"])
def test_other_inits_start_non_zero(init):
    model = vitune.apply(make_backbone(), "adapter", init=init).eval()
    adapter = model.blocks[0].drop_path2.adapters[0]
    assert adapter.up.weight.abs().sum() > 0 and adapter.down.weight.abs().sum() > 0
    if init == "bert":
        assert adapter.up.bias.abs().sum() == 0


def test_merge_is_refused_with_the_reason():
    with pytest.raises(vitune.NotMergeableError, match="adapter.*nonlinearity"):
        vitune.merge(vitune.apply(make_backbone(), "adapter"))


def rename_in_file(path, old: str, new: str) -> None:
    """Rewrite an adapter weights file with `old` replaced by `new` in every tensor name (metadata kept)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as f:
        metadata, tensors = f.metadata(), {n.replace(old, new): f.get_tensor(n) for n in f.keys()}
    save_file(tensors, str(path), metadata=metadata)


def test_files_naming_the_adapters_under_the_sublayer_still_load(tmp_path):
    """Adapter files written when the adapters wrapped attn/mlp (``blocks.0.mlp.adapters.*``) load into the
    branch-end placement; on a backbone without layer scale and drop path it is the same function."""
    model = adapted(placement="houlsby")
    x = image_batch(model)
    with torch.no_grad():
        expected = model(x)
    vitune.save_adapter(model, tmp_path)
    rename_in_file(tmp_path / "adapter_model.safetensors", ".drop_path2.adapters.", ".mlp.adapters.")
    rename_in_file(tmp_path / "adapter_model.safetensors", ".drop_path1.adapters.", ".attn.adapters.")
    loaded = vitune.load_adapter(make_backbone(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
