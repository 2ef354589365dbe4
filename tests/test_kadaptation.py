"""KAdaptation: counts, the update against sum_i kron(A_i, B_i), the merge rule, and what each factor does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.layers.kadaptation import KAdaptationLinear

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16

D = 64  # width of the tiny backbone
Q, K, V = slice(0, D), slice(D, 2 * D), slice(2 * D, 3 * D)


def adapted(**config):
    model = vitune.apply(make_backbone("vit"), "kadaptation", **{"n": 8, **config})
    perturb_trainable(model, std=0.05)
    return model.eval()


def kron_update(model, layer, role):
    """H = sum_i kron(a_i b_i^T, u_i v_i^T), built with torch.kron from the stored factors."""
    a, b = getattr(model.kadaptation_shared, f"rule_{role}_left"), getattr(model.kadaptation_shared, f"rule_{role}_right")
    u, v = getattr(layer, f"fast_{role}_left"), getattr(layer, f"fast_{role}_right")
    return sum(torch.kron(torch.outer(a[i], b[i]), torch.outer(u[i], v[i])) for i in range(a.shape[0]))


def test_vit_b16_count():
    model = vitune.apply(vit_b16(), "kadaptation")
    assert vitune.count_parameters(model)["method"] == 50_176
    shared = sum(p.numel() for n, p in model.named_parameters() if n.startswith("kadaptation_shared."))
    assert shared == 4 * 32 * 32
    per_layer = sum(p.numel() for n, p in model.named_parameters() if n.startswith("blocks.0.attn.qkv.")
                    and "base_layer" not in n)
    assert per_layer == 4 * 768 + 768


@pytest.mark.parametrize("scale", [160.0, 3.0])
def test_module_matches_formula(scale):
    model = adapted(scale=scale)
    layer = model.blocks[1].attn.qkv
    assert isinstance(layer, KAdaptationLinear)
    x = torch.randn(2, 7, D, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = x @ layer.base_layer.weight.T + layer.base_layer.bias
        expected[..., Q] += scale * x @ kron_update(model, layer, "q") + layer.bias_update
        expected[..., V] += scale * x @ kron_update(model, layer, "v") + layer.bias_update
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_merge_formula():
    model = adapted()
    layer = model.blocks[0].attn.qkv
    with torch.no_grad():
        h_q, h_v = (kron_update(model, layer, r).double() for r in ("q", "v"))
        w, b = layer.base_layer.weight.double().clone(), layer.base_layer.bias.double().clone()
        bias = layer.bias_update.double()
    vitune.merge(model)
    merged = model.blocks[0].attn.qkv
    torch.testing.assert_close(merged.weight[Q].double(), w[Q] + 160.0 * h_q.T, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged.weight[K].double(), w[K], rtol=0, atol=0)
    torch.testing.assert_close(merged.weight[V].double(), w[V] + 160.0 * h_v.T, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged.bias.double(), torch.cat([b[Q] + bias, b[K], b[V] + bias]), rtol=0, atol=1e-6)


def test_update_only_at_q_and_v_with_separate_fast_weights():
    model = adapted()
    layer = model.blocks[0].attn.qkv
    x = torch.randn(5, D)
    with torch.no_grad():
        base = layer.base_layer(x)
        out = layer(x)
        assert torch.equal(out[:, K], base[:, K])  # k untouched
        assert (out[:, Q] - base[:, Q]).abs().max() > 1e-3 and (out[:, V] - base[:, V]).abs().max() > 1e-3

        # v's fast weights move v only, q's move q only.
        layer.fast_v_right.mul_(2)
        out_v = layer(x)
        torch.testing.assert_close(out_v[:, Q], out[:, Q], rtol=0, atol=0)
        assert (out_v[:, V] - out[:, V]).abs().max() > 1e-3
        layer.fast_q_left.mul_(2)
        out_q = layer(x)
        torch.testing.assert_close(out_q[:, V], out_v[:, V], rtol=0, atol=0)
        assert (out_q[:, Q] - out_v[:, Q]).abs().max() > 1e-3
    assert layer.fast_q_left.data_ptr() != layer.fast_v_left.data_ptr()


def test_default_init_and_every_factor_learns():
    model = vitune.apply(make_backbone("vit"), "kadaptation", n=8)
    layer = model.blocks[0].attn.qkv
    assert layer.scale == 160.0 and layer.dropout.p == 0.5
    for role in ("q", "v"):
        assert getattr(layer, f"fast_{role}_left").abs().sum() > 0  # one factor non-zero ...
        assert getattr(layer, f"fast_{role}_right").abs().sum() == 0  # ... the other zero: update 0
        rules = [getattr(model.kadaptation_shared, f"rule_{role}_{s}") for s in ("left", "right")]
        assert all(0 < r.abs().max() <= 0.01 for r in rules)
    x = image_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), make_backbone("vit")(x), rtol=0, atol=0)

    params = {n: p for n, p in model.named_parameters() if n.startswith("kadaptation_shared.")
              or (".attn.qkv." in n and "base_layer" not in n)}
    assert len(params) == 4 + 2 * 5
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    learned = set()
    model.train()
    for step in range(3):
        x = image_batch(model, seed=step)
        opt.zero_grad()
        F.cross_entropy(model(x), torch.arange(len(x)) % 5).backward()
        learned |= {n for n, p in params.items() if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
    assert learned == set(params)


def test_training_dropout_acts_on_the_update_matrix():
    """Feeding the identity reads the dropped matrix back: every entry is 0 or H / (1 - p)."""
    model = adapted(dropout=0.5).train()
    layer = model.blocks[0].attn.qkv
    eye = torch.eye(D)
    torch.manual_seed(0)
    with torch.no_grad():
        delta = layer(eye) - layer.base_layer(eye) - torch.cat(
            [layer.bias_update, torch.zeros(D), layer.bias_update]
        )
        masks = []
        for role, part in (("q", Q), ("v", V)):
            dropped = delta[:, part] / 160.0
            full = kron_update(model, layer, role)
            kept = (dropped - 2 * full).abs() <= 1e-5 + 1e-4 * full.abs()
            zeroed = dropped.abs() <= 1e-7
            assert bool((kept | zeroed).all())
            assert 0.3 < kept.float().mean() < 0.7
            masks.append(kept)
        assert not torch.equal(masks[0], masks[1])  # q and v draw their own masks


def test_width_must_divide_by_n():
    with pytest.raises(vitune.ConfigError, match="multiple of n"):
        vitune.apply(make_backbone("vit"), "kadaptation", n=5)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_training_forms_equal_the_kronecker_formula_in_float64(dropout):
    """Both training forms -- factored (no dropout) and the dropped dense update folded into the q and v rows
    of the weight -- against y = x W^T + b, y_q += kappa x Dropout(H_q) + bias (same for v), with H built by
    torch.kron: values and the gradients of the input, every factor and the bias."""
    model = adapted(dropout=dropout).double().train()
    layer = model.blocks[0].attn.qkv
    x = torch.randn(2, 7, D, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 7, 3 * D, dtype=torch.float64)
    inputs = [x, *model.kadaptation_shared.parameters(), *(p for n, p in layer.named_parameters()
                                                         if p.requires_grad and "base_layer" not in n)]
    assert len(inputs) == 1 + 4 + 5

    torch.manual_seed(5)
    actual = layer(x)
    # The layer draws one mask per role, q then v, over H^T (entry (o, i) drops H[i, o]): draw them again.
    torch.manual_seed(5)
    masks = {role: F.dropout(torch.ones(D, D, dtype=torch.float64), dropout).t() for role in ("q", "v")}
    expected = F.linear(x, layer.base_layer.weight, layer.base_layer.bias)
    updates = [torch.zeros_like(expected)]
    for role, part in (("q", Q), ("v", V)):
        update = torch.zeros_like(expected)
        update[..., part] = 160.0 * x @ (kron_update(model, layer, role) * masks[role]) + layer.bias_update
        updates.append(update)
    expected = expected + sum(updates)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(actual, inputs, upstream)
    for name, g, want in zip(range(len(inputs)), got, torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12, msg=f"gradient of input {name}")
