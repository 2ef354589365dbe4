"""RepAdapter: counts, the adapter against its formula, the merge rule, and where adapters go."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vitune
from vitune.layers.repadapter import RepAdapterLinear, wrap_linear

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def dense_b(weight_b: torch.Tensor, groups: int) -> torch.Tensor:
    """The block-diagonal (D, r) matrix, written out entry by entry from the grouped (D, r/g) weight."""
    dim, per_group = weight_b.shape
    dense = torch.zeros(dim, per_group * groups, dtype=weight_b.dtype)
    for o in range(dim):
        j = o // (dim // groups)  # output channel o belongs to group j and reads hidden group j
        dense[o, j * per_group:(j + 1) * per_group] = weight_b[o]
    return dense


def adapted(**config):
    model = vitune.apply(make_backbone("vit"), "repadapter", **config)
    perturb_trainable(model)
    return model.eval()


@pytest.mark.parametrize(
    "name,total,weights", [("repadapter", 239_808, 221_184), ("repadapter_attn", 119_904, 110_592)]
)
def test_vit_b16_counts(name, total, weights):
    model = vitune.apply(vit_b16(), name)
    assert vitune.count_parameters(model)["method"] == total
    # The paper's 0.22M (0.11M) counts the weights only.
    assert sum(p.numel() for n, p in model.named_parameters() if n.endswith(("weight_A", "weight_B"))) == weights


@pytest.mark.parametrize("groups,scale", [(2, 1.0), (4, 0.5), (1, 5.0)])
def test_module_matches_formula(groups, scale):
    model = adapted(groups=groups, scale=scale)
    layer = model.blocks[1].mlp.fc1
    assert isinstance(layer, RepAdapterLinear)
    a = layer.adapter
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(0))
    hidden = x @ a.weight_A.T + a.bias_A
    adapted_x = x + scale * (hidden @ dense_b(a.weight_B, groups).T + a.bias_B)
    expected = adapted_x @ layer.base_layer.weight.T + layer.base_layer.bias
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_training_forward_without_dropout_is_the_same_formula():
    model = adapted(dropout=0.0).train()
    layer = model.blocks[0].attn.qkv
    a = layer.adapter
    x = torch.randn(3, 64)
    adapted_x = x + (x @ a.weight_A.T + a.bias_A) @ dense_b(a.weight_B, 2).T + a.bias_B
    torch.testing.assert_close(layer(x), layer.base_layer(adapted_x), rtol=1e-5, atol=1e-5)


def test_merge_formula():
    scale = 0.5
    model = adapted(scale=scale)
    layer = model.blocks[0].attn.qkv
    a = layer.adapter
    w, b = layer.base_layer.weight.detach().double(), layer.base_layer.bias.detach().double()
    w_a, b_a, b_b = a.weight_A.detach().double(), a.bias_A.detach().double(), a.bias_B.detach().double()
    w_b = dense_b(a.weight_B.detach().double(), 2)
    expected_w = w @ (torch.eye(64, dtype=torch.float64) + scale * w_b @ w_a)
    expected_b = b + scale * w @ (w_b @ b_a + b_b)

    vitune.merge(model)
    merged = model.blocks[0].attn.qkv
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.weight.double(), expected_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(merged.bias.double(), expected_b, rtol=0, atol=1e-6)


def test_default_places_and_init():
    model = vitune.apply(make_backbone("vit"), "repadapter")
    wrapped = {n for n, m in model.named_modules() if isinstance(m, RepAdapterLinear)}
    assert wrapped == {f"blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "mlp.fc1")}
    adapter = model.blocks[0].attn.qkv.adapter
    assert adapter.r == 8 and adapter.groups == 2 and adapter.scale == 1.0
    assert adapter.dropout.p == 0.1
    assert adapter.weight_A.abs().sum() > 0 and adapter.weight_B.abs().sum() == 0  # identity at init
    x = image_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), make_backbone("vit")(x), rtol=0, atol=0)

    attn_only = vitune.apply(make_backbone("vit"), "repadapter_attn")
    assert {n for n, m in attn_only.named_modules() if isinstance(m, RepAdapterLinear)} == {
        f"blocks.{i}.attn.qkv" for i in range(2)
    }


def test_pattern_targets_any_linear_but_the_head():
    model = vitune.apply(make_backbone("vit"), "repadapter", pattern=r"attn\.proj|fc2")
    wrapped = {n for n, m in model.named_modules() if isinstance(m, RepAdapterLinear)}
    assert wrapped == {f"blocks.{i}.{p}" for i in range(2) for p in ("attn.proj", "mlp.fc2")}
    assert model.blocks[0].mlp.fc2.adapter.dim == 256  # fc2 reads the MLP hidden

    everything = vitune.apply(make_backbone("vit"), "repadapter", pattern=".")
    assert type(everything.head) is nn.Linear
    assert sum(isinstance(m, RepAdapterLinear) for m in everything.modules()) == 8


def test_bad_configs_are_rejected():
    with pytest.raises(vitune.ConfigError, match="targets"):
        vitune.apply(make_backbone("vit"), "repadapter", targets=["q", "v"])
    with pytest.raises(vitune.ConfigError, match="groups"):
        vitune.apply(make_backbone("vit"), "repadapter", r=6, groups=4)
    with pytest.raises(vitune.ConfigError, match="groups"):
        vitune.apply(make_backbone("vit"), "repadapter", r=6, groups=3)  # width 64 is not a multiple of 3
    with pytest.raises(vitune.ConfigError, match="matches no linear"):
        vitune.apply(make_backbone("vit"), "repadapter", pattern="nothing_here")


def test_wrap_linear_stands_alone():
    linear = nn.Linear(16, 5)
    layer = wrap_linear(linear, r=4, groups=2, scale=10.0)
    perturb_trainable(layer)
    layer.eval()
    x = torch.randn(3, 16)
    with torch.no_grad():
        before = layer(x)
        merged = layer.merged()
        torch.testing.assert_close(merged(x), before, rtol=0, atol=1e-5)
    assert merged is linear
