"""Bottleneck adapter (Pfeiffer / Houlsby): count, block formula by hand, placement, init, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.layers.bottleneck import SequentialAdapters

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
    """X2 = X1 + ls2(H + a(H)), H = MLP(LN2(X1)): the adapter sits after the MLP with its own residual."""
    model = adapted(kind)
    assert isinstance(model.blocks[0].mlp, SequentialAdapters)
    assert not isinstance(model.blocks[0].attn, SequentialAdapters)
    plain = make_backbone(kind).blocks[0]
    x = tokens(model)
    with torch.no_grad():
        x1 = x + plain.ls1(plain.attn(plain.norm1(x)))
        h = plain.mlp(plain.norm2(x1))
        expected = x1 + plain.ls2(with_adapter(model.blocks[0].mlp.adapters[0], h))
        torch.testing.assert_close(model.blocks[0](x), expected, rtol=1e-5, atol=1e-5)


def test_houlsby_adapts_the_attention_output_too():
    model = adapted(placement="houlsby", act="gelu", scale=0.5)
    block = model.blocks[0]
    assert isinstance(block.attn, SequentialAdapters) and isinstance(block.mlp, SequentialAdapters)
    plain = make_backbone().blocks[0]
    x = tokens(model)
    gelu = F.gelu
    with torch.no_grad():
        x1 = x + with_adapter(block.attn.adapters[0], plain.attn(plain.norm1(x)), gelu, 0.5)
        expected = x1 + with_adapter(block.mlp.adapters[0], plain.mlp(plain.norm2(x1)), gelu, 0.5)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    assert vitune.count_parameters(model)["method"] == 2 * 2 * (64 * 8 + 8 + 8 * 64 + 64)


def test_layernorm_option():
    model = adapted(layernorm=True, bottleneck=4)
    block = model.blocks[0]
    plain = make_backbone().blocks[0]
    x = tokens(model)
    with torch.no_grad():
        x1 = x + plain.attn(plain.norm1(x))
        expected = x1 + with_adapter(block.mlp.adapters[0], plain.mlp(plain.norm2(x1)), layernorm=True)
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
    adapter = model.blocks[0].mlp.adapters[0]
    assert adapter.up.weight.abs().sum() > 0 and adapter.down.weight.abs().sum() > 0
    if init == "bert":
        assert adapter.up.bias.abs().sum() == 0


def test_merge_is_refused_with_the_reason():
    with pytest.raises(vitune.NotMergeableError, match="adapter.*nonlinearity"):
        vitune.merge(vitune.apply(make_backbone(), "adapter"))
