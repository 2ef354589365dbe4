"""SSF: placement, init, gamma * op(x) + beta on each op kind, the fold into the op, the ViT-B/16 count."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import vitune
from vitune.layers.scale_shift import ScaleShift

from helpers import TINY, image_batch, make_backbone, perturb_trainable, vit_b16


def perturbed(op: nn.Module) -> ScaleShift:
    torch.manual_seed(0)
    wrapped = ScaleShift(op)
    with torch.no_grad():
        wrapped.scale.normal_(1.0, 0.5)
        wrapped.shift.normal_(0.0, 0.5)
    return wrapped


def test_linear_formula_and_fold():
    wrapped = perturbed(nn.Linear(16, 24))
    gamma, beta = wrapped.scale.detach(), wrapped.shift.detach()
    w, b = wrapped.base_layer.weight.detach().clone(), wrapped.base_layer.bias.detach().clone()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), F.linear(x, w, b) * gamma + beta)
        out = wrapped(x)
        merged = wrapped.merged()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged.weight, gamma[:, None] * w)
    torch.testing.assert_close(merged.bias, gamma * b + beta)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), out, rtol=1e-5, atol=1e-5)


def test_linear_without_bias_gains_one():
    wrapped = perturbed(nn.Linear(16, 24, bias=False))
    gamma, beta = wrapped.scale.detach(), wrapped.shift.detach()
    w = wrapped.base_layer.weight.detach().clone()
    merged = wrapped.merged()
    torch.testing.assert_close(merged.weight, gamma[:, None] * w)
    torch.testing.assert_close(merged.bias, beta)


def test_layer_norm_formula_and_fold():
    norm = nn.LayerNorm(24)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    wrapped = perturbed(norm)
    gamma, beta = wrapped.scale.detach(), wrapped.shift.detach()
    w, b = norm.weight.detach().clone(), norm.bias.detach().clone()
    x = torch.randn(3, 24)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), F.layer_norm(x, (24,), w, b, norm.eps) * gamma + beta)
        out = wrapped(x)
        merged = wrapped.merged()
    assert type(merged) is nn.LayerNorm
    torch.testing.assert_close(merged.weight, gamma * w)
    torch.testing.assert_close(merged.bias, gamma * b + beta)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", [nn.LayerNorm(16), nn.LayerNorm(16, bias=False), timm.layers.LayerNorm(16)])
def test_layer_norm_training_form_in_float64(norm):
    """At a norm the scale and shift train inside the norm's affine: gamma * LN(x) + beta in value and in every
    gradient, and the norm's output is not saved for backward a second time (only its input and statistics)."""
    wrapped = perturbed(norm.double())
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.5)
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 5, 16, dtype=torch.float64)
    inputs = (x, wrapped.scale, wrapped.shift)
    expected = norm(x) * wrapped.scale + wrapped.shift
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        actual = wrapped(x)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(actual, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    activations = [t for t in saved if t.shape == x.shape]
    assert len(activations) == 1 and activations[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("frozen", [True, False])
@pytest.mark.parametrize("zero_scale", [False, True])
def test_linear_training_form_in_float64(bias, frozen, zero_scale):
    """After a linear the pair runs as one function (fewer passes over the output): gamma * (x W^T + b) + beta in
    value and in every gradient -- the input's, gamma's, beta's, and the linear's own when it trains. Gamma's
    gradient comes from the output (divided by gamma), or, when a gamma is near zero, from the kept x W^T."""
    wrapped = perturbed(nn.Linear(16, 24, bias=bias).double())
    if zero_scale:
        with torch.no_grad():
            wrapped.scale[3] = 0.0
    base = wrapped.base_layer
    base.requires_grad_(not frozen)
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 5, 24, dtype=torch.float64)
    inputs = [x, wrapped.scale, wrapped.shift, *(p for p in base.parameters() if p.requires_grad)]
    expected = base(x) * wrapped.scale + wrapped.shift
    actual = wrapped(x)
    assert actual.grad_fn.name() == "ScaledLinearBackward"
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(actual, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)



def test_linear_site_keeps_only_its_output_and_the_next_ops_tensors():
    """The memory claim: a linear site followed by a GELU (an MLP's fc1) saves no output-sized tensor of its own;
    the only ones kept share the output's storage, which the GELU keeps anyway. With a near-zero gamma it keeps
    x W^T instead (one more tensor), so the gradient stays exact."""
    for scale_zero, own_tensors in ((False, 0), (True, 1)):
        wrapped = perturbed(nn.Linear(16, 24))
        wrapped.base_layer.requires_grad_(False)
        if scale_zero:
            with torch.no_grad():
                wrapped.scale[0] = 0.0
        x = torch.randn(2, 5, 16)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out = wrapped(x)
            F.gelu(out)
        wide = [t for t in saved if t.shape == out.shape]
        pointer = out.untyped_storage().data_ptr()
        assert sum(t.untyped_storage().data_ptr() != pointer for t in wide) == own_tensors
        assert any(t.untyped_storage().data_ptr() == pointer for t in wide)

def test_patch_conv_formula_and_fold():
    wrapped = perturbed(nn.Conv2d(3, 8, kernel_size=4, stride=4))
    gamma, beta = wrapped.scale.detach(), wrapped.shift.detach()
    w, b = wrapped.base_layer.weight.detach().clone(), wrapped.base_layer.bias.detach().clone()
    x = torch.randn(2, 3, 16, 16)
    expected = F.conv2d(x, w, b, stride=4) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), expected)
        merged = wrapped.merged()
    torch.testing.assert_close(merged.weight, w * gamma.view(-1, 1, 1, 1))
    torch.testing.assert_close(merged.bias, gamma * b + beta)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind,final_norm", [("vit", "norm"), ("avgpool", "fc_norm")])
def test_placement(kind, final_norm):
    model = vitune.apply(make_backbone(kind), "ssf")
    wrapped = {n for n, m in model.named_modules() if isinstance(m, ScaleShift)}
    expected = {"patch_embed.proj", final_norm}
    for i in range(len(model.blocks)):
        expected |= {f"blocks.{i}.{p}" for p in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")}
    assert wrapped == expected
    with torch.no_grad():
        assert model(image_batch(model)).isfinite().all()


def test_init_is_near_identity():
    model = vitune.apply(make_backbone(), "ssf")
    scales = torch.cat([m.scale.detach() for m in model.modules() if isinstance(m, ScaleShift)])
    shifts = torch.cat([m.shift.detach() for m in model.modules() if isinstance(m, ScaleShift)])
    assert abs(float(scales.mean()) - 1.0) < 0.005 and 0.015 < float(scales.std()) < 0.025
    assert abs(float(shifts.mean())) < 0.005 and 0.015 < float(shifts.std()) < 0.025


def test_vit_b16_count():
    model = vitune.apply(vit_b16(), "ssf")
    d, hidden, depth = 768, 3072, 12
    per_block = 2 * (d + 3 * d + d + d + hidden + d)  # norm1, qkv, proj, norm2, fc1, fc2
    expected = 2 * d + depth * per_block + 2 * d  # patch embedding, blocks, final norm
    assert expected == 205_824
    assert vitune.count_parameters(model)["method"] == expected


def test_bias_less_patch_projection_folds_its_shift_into_the_position_embedding():
    """CLIP's patch projection has no bias: merging adds SSF's shift to every patch position of pos_embed
    (not to the class token's), so the merged model has exactly the stock model's tensors."""
    model = vitune.apply(make_backbone("clip"), "ssf")
    assert model.patch_embed.proj.base_layer.bias is None
    perturb_trainable(model)
    model.eval()
    shift = model.patch_embed.proj.shift.detach().clone()
    pos_embed = model.pos_embed.detach().clone()
    x = image_batch(model)
    with torch.no_grad():
        before = model(x)
    vitune.merge(model)
    assert model.patch_embed.proj.bias is None
    torch.testing.assert_close(model.pos_embed[:, 1:], pos_embed[:, 1:] + shift)
    torch.testing.assert_close(model.pos_embed[:, :1], pos_embed[:, :1], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
    assert set(model.state_dict()) == set(make_backbone("clip").state_dict())


def test_bias_less_patch_projection_without_a_position_embedding_is_not_mergeable():
    backbone = timm.create_model("vit_base_patch16_clip_224", pretrained=False, pos_embed="none", **TINY)
    model = vitune.apply(backbone, "ssf")
    assert vitune.is_mergeable("ssf")  # the method in general, on backbones with room for the shift
    with pytest.raises(vitune.NotMergeableError, match=r"ssf.*patch_embed\.proj has no bias"):
        vitune.merge(model)
    assert isinstance(model.patch_embed.proj, ScaleShift)  # refused before anything changed
