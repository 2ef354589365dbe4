"""ARC: counts, the adapter against its formula, the merge rule, and the shared projections' gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitune
from vitune.layers.arc import ARCLinear

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def adapted(name="arc", **config):
    model = vitune.apply(make_backbone("vit"), name, **config)
    perturb_trainable(model)
    return model.eval()


def adapter_formula(x, p, c, beta):
    """f(x) = x + (x P diag(c)) P^T + beta, with diag(c) built as a matrix."""
    return x + x @ p @ torch.diag(c) @ p.T + beta


@pytest.mark.parametrize("name,total", [("arc", 96_432), ("arc_att", 48_216)])
def test_vit_b16_counts(name, total):
    model = vitune.apply(vit_b16(), name)
    assert vitune.count_parameters(model)["method"] == total
    shared = [n for n in model.state_dict() if n.startswith("arc_shared.")]
    assert shared == (["arc_shared.P_attn", "arc_shared.P_mlp"] if name == "arc" else ["arc_shared.P_attn"])
    assert not any(n.endswith("P_attn") or n.endswith("P_mlp") for n in model.state_dict() if n not in shared)


@pytest.mark.parametrize("place,position", [("attn.qkv", "attn"), ("mlp.fc1", "mlp")])
def test_module_matches_formula(place, position):
    model = adapted()
    layer = model.blocks[1].get_submodule(place)
    assert isinstance(layer, ARCLinear)
    p = getattr(model.arc_shared, f"P_{position}")
    c, beta = layer.adapter.scale, layer.adapter.bias
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(0))
    expected = adapter_formula(x, p, c, beta) @ layer.base_layer.weight.T + layer.base_layer.bias
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_merge_formula():
    model = adapted()
    expected = {}
    for i, block in enumerate(model.blocks):
        for place, position in (("attn.qkv", "attn"), ("mlp.fc1", "mlp")):
            layer = block.get_submodule(place)
            p = getattr(model.arc_shared, f"P_{position}").detach().double()
            c, beta = layer.adapter.scale.detach().double(), layer.adapter.bias.detach().double()
            w, b = layer.base_layer.weight.detach().double(), layer.base_layer.bias.detach().double()
            expected[i, place] = (w @ (torch.eye(64, dtype=torch.float64) + p @ torch.diag(c) @ p.T), b + w @ beta)

    vitune.merge(model)
    assert not hasattr(model, "arc_shared")
    for (i, place), (w, b) in expected.items():
        merged = model.blocks[i].get_submodule(place)
        assert type(merged) is nn.Linear
        torch.testing.assert_close(merged.weight.double(), w, rtol=0, atol=1e-6)
        torch.testing.assert_close(merged.bias.double(), b, rtol=0, atol=1e-6)


def test_default_places_and_init():
    model = vitune.apply(make_backbone("vit"), "arc")
    wrapped = {n for n, m in model.named_modules() if isinstance(m, ARCLinear)}
    assert wrapped == {f"blocks.{i}.{p}" for i in range(2) for p in ("attn.qkv", "mlp.fc1")}
    assert model.arc_shared.P_attn.shape == (64, 50)
    p_bound = math.sqrt(6 / (64 + 50))
    assert model.arc_shared.P_attn.abs().max() <= p_bound and model.arc_shared.P_attn.abs().sum() > 0
    c_bound = math.sqrt(6 / (1 + 50))
    for block in model.blocks:
        attn, mlp = block.attn.qkv.adapter, block.mlp.fc1.adapter
        assert attn.dropout.p == 0.1
        assert attn.scale.abs().sum() == 0 and attn.bias.abs().sum() == 0  # the identity
        assert 0 < mlp.scale.abs().max() <= c_bound and mlp.bias.abs().sum() == 0  # not the identity
        assert attn.projection is model.arc_shared.P_attn and mlp.projection is model.arc_shared.P_mlp

    att_only = vitune.apply(make_backbone("vit"), "arc_att")
    assert {n for n, m in att_only.named_modules() if isinstance(m, ARCLinear)} == {
        f"blocks.{i}.attn.qkv" for i in range(2)
    }
    assert not hasattr(att_only.arc_shared, "P_mlp")


@pytest.mark.parametrize("position,place", [("attn", "attn.qkv"), ("mlp", "mlp.fc1")])
@pytest.mark.parametrize("active", [0, 1])
def test_shared_projection_learns_from_every_layer(position, place, active):
    """With every other layer's c at zero, that layer's adapter does not depend on P (x P diag(0) P^T = 0),
    so a non-zero gradient on P can only come through layer `active`."""
    model = adapted(dropout=0.0).train()
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            if i != active:
                block.get_submodule(place).adapter.scale.zero_()
    p = getattr(model.arc_shared, f"P_{position}")
    x = image_batch(model)
    F.cross_entropy(model(x), torch.arange(len(x)) % 5).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_every_arc_tensor_trains():
    """ARC's own tensors train (the official VTAB script left them frozen; docs/methods/arc.md)."""
    model = vitune.apply(make_backbone("vit"), "arc").train()
    arc_names = [n for n, _ in model.named_parameters() if n.startswith("arc_shared.") or ".adapter." in n]
    params = dict(model.named_parameters())
    assert len(arc_names) == 2 + 2 * 2 * 2 and all(params[n].requires_grad for n in arc_names)
    before = {n: params[n].detach().clone() for n in arc_names}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for step in range(2):  # c_attn starts at 0, so P_attn's first gradient comes at the second step
        x = image_batch(model, seed=step)
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(len(x)) % 5).backward()
        opt.step()
    assert [n for n in arc_names if torch.equal(params[n], before[n])] == []
