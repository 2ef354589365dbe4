"""LoRA: the count the NOAH baseline reports, the formula, and targeting by role or regular expression."""

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.layers.lora import LoRALinear
from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def test_vit_b16_count_q_v_rank8():
    model = vitune.apply(vit_b16(), "lora")
    assert vitune.count_parameters(model)["method"] == 294_912


def test_module_matches_formula():
    model = vitune.apply(make_backbone(), "lora", r=4, alpha=12.0)
    perturb_trainable(model)
    layer = model.blocks[0].attn.qkv
    assert isinstance(layer, LoRALinear)
    x = torch.randn(3, 7, 64)
    w, b = layer.base_layer.weight, layer.base_layer.bias
    a_q, a_v = layer.lora_A[:4], layer.lora_A[4:]
    b_q, b_v = layer.lora_B[0], layer.lora_B[1]
    scale = 12.0 / 4
    dense = w.clone()
    dense[:64] += scale * b_q @ a_q      # q rows
    dense[128:] += scale * b_v @ a_v     # v rows; k rows (64:128) untouched
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, dense, b), atol=1e-5, rtol=1e-5)
        merged = layer.merged()
        torch.testing.assert_close(merged.weight, dense, atol=1e-6, rtol=1e-6)


def test_zero_init_is_identity():
    model = make_backbone()
    x = image_batch(model)
    with torch.no_grad():
        before = model(x)
        vitune.apply(model, "lora")
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_targets_by_role():
    model = vitune.apply(make_backbone(), "lora", targets=["qkv", "fc2"], r=2)
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert sorted(kinds) == ["blocks.0.attn.qkv", "blocks.0.mlp.fc2", "blocks.1.attn.qkv", "blocks.1.mlp.fc2"]
    assert vitune.count_parameters(model)["method"] == 2 * (2 * 64 + 192 * 2 + 2 * 256 + 64 * 2)


def test_targets_by_pattern_exclude_head():
    model = vitune.apply(make_backbone(), "lora", pattern=r"blocks\.1\..*|head")
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoRALinear))
    assert wrapped == ["blocks.1.attn.proj", "blocks.1.attn.qkv", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]


def test_role_and_its_part_conflict():
    with pytest.raises(vitune.ConfigError, match="pick one"):
        vitune.apply(make_backbone(), "lora", targets=["qkv", "q"])


def test_dropout_only_in_training():
    model = vitune.apply(make_backbone(), "lora", dropout=0.5)
    perturb_trainable(model)
    x = image_batch(model)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("targets", [["q", "v"], ["qkv"]])
def test_forward_and_gradients_equal_the_formula_in_float64(targets):
    """The fused training form (one block-structured up-projection over the whole output) against
    y = x W^T + b + (alpha/r) (x A_j^T) B_j^T on each adapted slice, values and every gradient."""
    model = vitune.apply(make_backbone(), "lora", r=4, alpha=12.0, targets=targets).double()
    perturb_trainable(model)
    layer = model.blocks[0].attn.qkv
    parts = layer.parts or (slice(0, 3 * 64),)
    x = torch.randn(3, 7, 64, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 7, 192, dtype=torch.float64)

    def reference(x):
        out = F.linear(x, layer.base_layer.weight, layer.base_layer.bias)
        updates = [torch.zeros_like(out)]
        for j, (a, part) in enumerate(zip(layer.lora_A.split(4), parts)):
            update = torch.zeros_like(out)
            update[..., part] = 3.0 * F.linear(F.linear(x, a), layer.lora_B[j])
            updates.append(update)
        return out + sum(updates)

    inputs = (x, layer.lora_A, layer.lora_B)
    expected = reference(x)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    actual = layer(x)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(actual, inputs, upstream), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
