"""Compacter: PHM layer against the dense Kronecker formula, shared rules, block formula, counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.layers.phm import PHMLinear, phm_rules

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def adapted(**config):
    model = vitune.apply(make_backbone(), "compacter", **config)
    perturb_trainable(model)
    return model.eval()


def dense_phm(layer: PHMLinear, rules: torch.Tensor) -> torch.Tensor:
    """W = sum_i kron(S_i, U_i), U_i = sum_r u_ir v_ir^T, built densely (in x out)."""
    n = rules.shape[0]
    return sum(torch.kron(rules[i], layer.left[i] @ layer.right[i]) for i in range(n))


def test_vit_b16_counts():
    # PEViT's 48,384 (4,032 per block, rules frozen) plus the 4x4x4 shared rules, which train here
    assert vitune.count_parameters(vitune.apply(vit_b16(), "compacter"))["method"] == 48_448
    assert vitune.count_parameters(vitune.apply(vit_b16(), "compacter", learn_rules=False))["method"] == 48_384


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("shape", [(64, 16), (16, 64)])
def test_phm_layer_matches_dense_kronecker(shape, rank):
    torch.manual_seed(0)
    rules = phm_rules(4, learn=True)
    layer = PHMLinear(*shape, rules, rank=rank)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, shape[0])
    w = dense_phm(layer, rules.rules)
    assert w.shape == shape
    torch.testing.assert_close(layer(x), x @ w + layer.bias, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight, w)


def test_phm_init_follows_pevit():
    torch.manual_seed(0)
    rules = phm_rules(4, learn=True)
    layer = PHMLinear(768, 64, rules)
    assert rules.rules.abs().max() <= 1.0
    assert layer.bias.abs().sum() == 0
    # glorot-uniform, gain sqrt(2), on each (192, 1) and (1, 16) factor
    assert layer.left.abs().max() <= 2 ** 0.5 * (6 / 193) ** 0.5
    assert layer.right.abs().max() <= 2 ** 0.5 * (6 / 17) ** 0.5


def test_rules_are_one_tensor_shared_by_every_layer():
    model = vitune.apply(make_backbone(), "compacter")
    layers = [m for m in model.modules() if isinstance(m, PHMLinear)]
    assert len(layers) == 2 * 2  # down and up in each of the 2 blocks
    assert all(layer._rules is model.compacter_shared for layer in layers)
    assert [n for n in model.state_dict() if "rules" in n] == ["compacter_shared.rules"]
    assert model.compacter_shared.rules.requires_grad


def test_block_matches_formula():
    """X2 = X1 + H + up(gelu_tanh(down(LN(H)))), H = MLP(LN2(X1))."""
    model = adapted()
    adapter = model.blocks[0].drop_path2.adapters[0]
    rules = model.compacter_shared.rules
    plain = make_backbone().blocks[0]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 17, 64, generator=g)
    with torch.no_grad():
        x1 = x + plain.attn(plain.norm1(x))
        h = plain.mlp(plain.norm2(x1))
        z = F.layer_norm(h, (64,), adapter.norm.weight, adapter.norm.bias, adapter.norm.eps)
        hidden = F.gelu(z @ dense_phm(adapter.down, rules) + adapter.down.bias, approximate="tanh")
        expected = x1 + h + hidden @ dense_phm(adapter.up, rules) + adapter.up.bias
        torch.testing.assert_close(model.blocks[0](x), expected, rtol=1e-5, atol=1e-5)


def test_official_placement_with_layer_scale_and_drop_path():
    """X2 = X1 + H + a(H) with H = DP(LS(MLP(LN2(X1)))) the MLP branch's output (PEViT's placement), in train
    mode on a layer-scale backbone with drop path; the previous placement (inside LS and DP) differs."""
    model = vitune.apply(make_backbone("dinov2_reg", drop_path_rate=0.5), "compacter")
    perturb_trainable(model)
    model.train()
    block = model.blocks[-1]  # the last block has the full drop path rate
    plain = make_backbone("dinov2_reg", drop_path_rate=0.5).blocks[-1].train()
    adapter = block.drop_path2.adapters[0]
    x = torch.randn(8, 5 + 4, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.manual_seed(7)
        got = block(x)
        torch.manual_seed(7)
        x1 = x + plain.drop_path1(plain.ls1(plain.attn(plain.norm1(x))))
        h = plain.drop_path2(plain.ls2(plain.mlp(plain.norm2(x1))))
        official = x1 + h + adapter(h)
        torch.manual_seed(7)
        x1 = x + plain.drop_path1(plain.ls1(plain.attn(plain.norm1(x))))
        m = plain.mlp(plain.norm2(x1))
        previous = x1 + plain.drop_path2(plain.ls2(m + adapter(m)))
    torch.testing.assert_close(got, official, rtol=1e-5, atol=1e-5)
    assert (previous - official).abs().max() > 1e-2


def test_frozen_rules_are_saved_and_reloaded(tmp_path):
    model = adapted(learn_rules=False)
    assert "rules" in dict(model.compacter_shared.named_buffers())
    assert not any("rules" in n for n, _ in model.named_parameters())
    x = image_batch(model)
    with torch.no_grad():
        expected = model(x)
    vitune.save_adapter(model, tmp_path)
    loaded = vitune.load_adapter(make_backbone(seed=0), tmp_path).eval()
    torch.testing.assert_close(loaded.compacter_shared.rules, model.compacter_shared.rules, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


def test_options_are_checked():
    with pytest.raises(vitune.ConfigError, match="bottleneck"):
        vitune.apply(make_backbone(), "compacter", bottleneck=30)
    with pytest.raises(vitune.NotMergeableError, match="compacter.*GELU"):
        vitune.merge(vitune.apply(make_backbone(), "compacter"))
