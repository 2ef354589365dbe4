"""Consolidator: the grouped branch against its dense formula, per-sample DropPath, merge, counts, storage."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import vitune
from vitune.errors import ConfigError
from vitune.io import WEIGHTS_NAME
from vitune.layers.grouped_linear import channel_shuffle, grouped_product
from vitune.layers.consolidator import ConsolidatorLinear

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def dense_from_groups(weight: torch.Tensor, shuffle: bool) -> torch.Tensor:
    """Written out from the formula (docs/methods/consolidator.md): block j covers rows j*o..(j+1)*o and
    columns j*m..(j+1)*m; with the shuffle, input channel c = i*m + k is read from column k*g + i of the
    block-diagonal matrix."""
    g, o, m = weight.shape
    block_diagonal = torch.zeros(g * o, g * m, dtype=weight.dtype)
    for j in range(g):
        block_diagonal[j * o:(j + 1) * o, j * m:(j + 1) * m] = weight[j]
    if not shuffle:
        return block_diagonal
    dense = torch.zeros_like(block_diagonal)
    for i in range(g):
        for k in range(m):
            dense[:, i * m + k] = block_diagonal[:, k * g + i]
    return dense


def layer(in_features: int, out_features: int, **kwargs) -> ConsolidatorLinear:
    """A wrapped fresh linear with large branch weights, so the branches are visible in the output."""
    torch.manual_seed(0)
    wrapped = ConsolidatorLinear(nn.Linear(in_features, out_features), **kwargs)
    with torch.no_grad():
        for p in wrapped.branches.parameters():
            p.normal_()
    return wrapped


def expected_weight_and_bias(wrapped: ConsolidatorLinear) -> tuple[torch.Tensor, torch.Tensor]:
    w = wrapped.base_layer.weight.detach().clone()
    b = wrapped.base_layer.bias.detach().clone()
    for branch in wrapped.branches:
        w += dense_from_groups(branch.weight.detach(), branch.shuffle)
        if branch.bias is not None:
            b += branch.bias.detach()
    return w, b


# (in, out): 64 -> 192 has fewer inputs than outputs per group, 256 -> 64 more (the two kernels).
SHAPES = [(64, 192), (256, 64), (64, 64)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("fc_groups", [(16,), (16, 4)])
def test_output_matches_dense_formula(shape, shuffle, fc_groups):
    wrapped = layer(*shape, fc_groups=fc_groups, with_channel_shuffle=shuffle, rep_drop=0.5).eval()
    x = torch.randn(3, 7, shape[0])
    w, b = expected_weight_and_bias(wrapped)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    assert wrapped.branches[0].weight.shape == (fc_groups[0], shape[1] // fc_groups[0], shape[0] // fc_groups[0])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("fc_groups,rep_bias,base_bias", [((16,), True, True), ((16, 4), False, False)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_folded_training_form_equals_the_branches_in_float64(shape, shuffle, fc_groups, rep_bias, base_bias, mode):
    """The folded form (one dense linear, each grouped weight given its blocks of the weight gradient) against
    y = W0 x + b0 + sum_g GroupFC_g(Shuffle_g(x)) written with the grouped product: values and every gradient."""
    torch.manual_seed(0)
    base = nn.Linear(*shape, bias=base_bias).double()
    wrapped = ConsolidatorLinear(base, fc_groups=fc_groups, with_channel_shuffle=shuffle, rep_bias=rep_bias).double()
    with torch.no_grad():
        for p in wrapped.branches.parameters():
            p.normal_()
    wrapped.train(mode == "train")
    base.weight.requires_grad_(False)  # frozen, as the method leaves it; the bias trains (Consolidator's default)
    x = torch.randn(3, 7, shape[0], dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 7, shape[1], dtype=torch.float64)
    inputs = [x, *(p for p in wrapped.parameters() if p.requires_grad)]

    expected = base(x)
    for branch in wrapped.branches:
        inner = channel_shuffle(x, branch.groups) if shuffle else x
        expected = expected + grouped_product(inner, branch.weight, branch.bias)
    expected_grads = torch.autograd.grad(expected, inputs, upstream)
    actual = wrapped(x)
    assert actual.grad_fn.name() == "FoldedLinearBackward"  # the folded form ran, not the branches
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(actual, inputs, upstream), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_branch_without_bias():
    wrapped = layer(64, 192, fc_groups=(16,), rep_bias=False).eval()
    assert wrapped.branches[0].bias is None
    x = torch.randn(5, 64)
    w, b = expected_weight_and_bias(wrapped)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_channel_shuffle_moves_channels_as_specified():
    g, m = 3, 4
    x = torch.arange(g * m).float()
    shuffled = channel_shuffle(x, g)
    for i in range(g):
        for k in range(m):
            assert shuffled[k * g + i] == x[i * m + k]


def test_drop_path_drops_whole_samples_in_training():
    wrapped = layer(64, 192, fc_groups=(16,), rep_drop=0.5).train()
    x = torch.randn(64, 5, 64)
    torch.manual_seed(3)
    with torch.no_grad():
        delta = wrapped(x) - wrapped.base_layer(x)
        branch = wrapped.branches[0](x)
    dropped = delta.flatten(1).abs().amax(dim=1) == 0
    kept = ~dropped
    assert 0 < int(dropped.sum()) < len(x)  # some samples dropped, some kept
    torch.testing.assert_close(delta[kept], branch[kept] / 0.5, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # no randomness left in eval
        torch.testing.assert_close(wrapped.eval()(x) - wrapped.base_layer(x), branch, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shuffle", [False, True])
def test_merge_formula(shuffle):
    wrapped = layer(256, 64, fc_groups=(16, 8), with_channel_shuffle=shuffle).eval()
    w, b = expected_weight_and_bias(wrapped)
    w64, b64 = wrapped.merged_weight_and_bias()
    torch.testing.assert_close(w64, w.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(b64, b.double(), rtol=0, atol=1e-6)
    x = torch.randn(4, 256)
    with torch.no_grad():
        before = wrapped(x)
        merged = wrapped.merged()
        assert type(merged) is nn.Linear
        torch.testing.assert_close(merged(x), before, rtol=1e-5, atol=1e-5)


def test_groups_must_divide_every_layer():
    with pytest.raises(ConfigError, match="fc_groups"):
        vitune.apply(make_backbone(), "consolidator", fc_groups=[24])
    with pytest.raises(ConfigError, match="targets"):
        vitune.apply(make_backbone(), "consolidator", fc_groups=[16], targets=["q"])


def test_bias_and_norm_training_can_be_switched_off():
    model = vitune.apply(make_backbone(), "consolidator", fc_groups=[16], train_bias=False, train_norm=False)
    assert list(model.vitune_method.extra_parameters(model)) == []
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".branches." in n or n.startswith("head.") for n in trainable)


def test_storage_folds_branch_biases(tmp_path):
    model = vitune.apply(make_backbone(), "consolidator", fc_groups=[16, 4])
    perturb_trainable(model)
    model.eval()
    vitune.save_adapter(model, tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_NAME), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert not any(k.endswith(".bias") and ".branches." in k for k in stored)
    layer0 = model.blocks[0].attn.qkv
    origin = layer0.base_layer.bias + layer0.branches[0].bias + layer0.branches[1].bias
    torch.testing.assert_close(stored["blocks.0.attn.qkv.base_layer.bias"], origin.detach(), rtol=0, atol=1e-6)

    loaded = vitune.load_adapter(make_backbone(), tmp_path).eval()
    branch_biases = [p for n, p in loaded.named_parameters() if ".branches." in n and n.endswith(".bias")]
    assert branch_biases and all(not p.detach().any() for p in branch_biases)
    x = image_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)
        # Both merge to the same stock model.
        a, b = vitune.merge(model).state_dict(), vitune.merge(loaded).state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6)


def test_storage_unfolded_is_exact(tmp_path):
    model = vitune.apply(make_backbone(), "consolidator", fc_groups=[16], fold_biases_on_save=False)
    perturb_trainable(model)
    vitune.save_adapter(model, tmp_path)
    loaded = vitune.load_adapter(make_backbone(), tmp_path)
    saved = dict(model.named_parameters())
    for name, p in loaded.named_parameters():
        assert torch.equal(p, saved[name]), name


@pytest.fixture(scope="module")
def vit_b16_consolidator():
    return vitune.apply(vit_b16(meta=False, num_classes=100), "consolidator")


def test_vit_b16_counts(vit_b16_consolidator):
    model = vit_b16_consolidator
    params = dict(model.named_parameters())
    group_weights = sum(p.numel() for n, p in params.items() if ".branches." in n and n.endswith(".weight"))
    rep_biases = sum(p.numel() for n, p in params.items() if ".branches." in n and n.endswith(".bias"))
    assert group_weights == 221_184  # 12 * (768*2304 + 768*768 + 768*3072 + 3072*768) / 384
    assert rep_biases == 82_944  # 12 * (2304 + 768 + 3072 + 768)
    counts = vitune.count_parameters(model)
    assert counts["method"] == 304_128
    extra = list(model.vitune_method.extra_parameters(model))
    assert sum(params[n].numel() for n in extra if "base_layer.bias" in n) == 82_944
    assert sum(params[n].numel() for n in extra if "norm" in n) == 38_400  # 12*4*768 + 2*768
    assert counts["trainable"] == 304_128 + 82_944 + 38_400 + counts["head"]


def test_vit_b16_adapter_file_is_compact(vit_b16_consolidator, tmp_path):
    model = vit_b16_consolidator
    vitune.save_adapter(model, tmp_path)
    path = tmp_path / WEIGHTS_NAME
    assert path.stat().st_size < 2_000_000
    dense_shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, ConsolidatorLinear)}
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert not dense_shapes & set(shapes.values())
    assert all(len(s) <= 1 or k.startswith("head.") or ".branches." in k for k, s in shapes.items())
    stored = sum(torch.Size(s).numel() for s in shapes.values())
    assert stored == 221_184 + 82_944 + 38_400 + 76_900  # group weights, one bias per linear, norms, head
