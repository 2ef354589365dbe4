"""The shared contract, checked for every registered method on every tiny backbone variant: helpers' timm ones and
cases' Hugging Face ones (whose forward returns a ModelOutput: the checks compare its logits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.backbones import find_family, find_places
from vitune.methods.base import VituneModule, method_parameters

from cases import HF_BACKBONES, NOT_ON_BACKBONE, ROUNDTRIP_ATOL, TINY_CONFIGS, make_hf_backbone
from helpers import BACKBONES, make_backbone, perturb_trainable

KINDS = [*BACKBONES, *HF_BACKBONES]
GRID = [(m, b) for m in vitune.methods() for b in KINDS if (m, b) not in NOT_ON_BACKBONE]


def build(kind: str, **kwargs):
    """A fresh backbone of `kind` (the same weights each time); `kwargs` as ``merged_model_args`` gives them."""
    return make_hf_backbone(kind, **kwargs) if kind in HF_BACKBONES else make_backbone(kind, **kwargs)


def images(model, seed: int = 1) -> torch.Tensor:
    method = vitune.applied_method(model)
    places = method.places if method is not None else find_places(model)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, *places.shapes["img_size"], generator=g)


def logits(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.logits


def adapted(method: str, kind: str):
    return vitune.apply(build(kind), method, **TINY_CONFIGS.get(method, {}))


@pytest.mark.parametrize("method,kind", sorted(NOT_ON_BACKBONE))
def test_method_refuses_a_backbone_it_does_not_apply_to(method, kind):
    """The pairs the grid leaves out must refuse clearly, and leave the backbone untouched."""
    model = build(kind)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(vitune.VituneError, match=NOT_ON_BACKBONE[(method, kind)]):
        vitune.apply(model, method, **TINY_CONFIGS.get(method, {}))
    assert not any(isinstance(m, VituneModule) for m in model.modules())
    assert list(model.state_dict()) == list(before)


def test_every_method_runs_or_refuses_on_every_backbone():
    assert {(m, b) for m in vitune.methods() for b in KINDS} == set(GRID) | set(NOT_ON_BACKBONE)


@pytest.mark.parametrize("method,kind", GRID)
def test_only_method_and_head_train(method, kind):
    model = adapted(method, kind)
    from vitune.api import trainable_names

    params = dict(model.named_parameters())
    expected = {n for n in trainable_names(model) if n in params}
    requires = {n for n, p in params.items() if p.requires_grad}
    assert requires == expected
    places = vitune.applied_method(model).places
    assert {n for n, _ in method_parameters(model)} <= requires
    assert {n for n in params if places.in_head(n)} <= requires

    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW([p for p in params.values() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    x = images(model)
    F.cross_entropy(logits(model(x)), torch.arange(len(x)) % 5).backward()
    for n, p in params.items():
        if not p.requires_grad:
            assert p.grad is None, f"frozen {n} got a gradient"
    opt.step()
    changed = {n for n, p in params.items() if not torch.equal(p, before[n])}
    assert changed <= requires, f"frozen parameters changed: {sorted(changed - requires)[:5]}"
    assert any(places.in_head(n) for n in changed)


def _has_own_parameters(method: str) -> bool:
    model = adapted(method, "vit")
    return any(True for _ in method_parameters(model)) or any(model.vitune_method.claimed_parameters(model))


# The linear probe adds and claims nothing: only its head trains, which the first test checks.
LEARNING_GRID = [(m, b) for m, b in GRID if _has_own_parameters(m)]


@pytest.mark.parametrize("method,kind", LEARNING_GRID)
def test_every_method_parameter_learns(method, kind):
    """Within a few steps from the default init, every method parameter gets a non-zero gradient."""
    model = adapted(method, kind)
    named = dict(model.named_parameters())
    claimed = [(n, named[n]) for n in model.vitune_method.claimed_parameters(model)]
    params = list(method_parameters(model)) + claimed
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    seen = set()
    model.train()
    for step in range(3):
        x = images(model, seed=step)
        opt.zero_grad()
        F.cross_entropy(logits(model(x)), torch.arange(len(x)) % 5).backward()
        seen |= {n for n, p in params if p.grad is not None and p.grad.abs().sum() > 0}
        opt.step()
    assert seen == {n for n, _ in params}, f"never learned: {sorted({n for n, _ in params} - seen)}"


@pytest.mark.parametrize("method,kind", GRID)
def test_save_load_round_trip(method, kind, tmp_path):
    model = adapted(method, kind)
    perturb_trainable(model)
    model.eval()
    x = images(model)
    with torch.no_grad():
        expected = logits(model(x))
    vitune.save_adapter(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]

    loaded = vitune.load_adapter(build(kind), tmp_path).eval()
    with torch.no_grad():
        got = logits(loaded(x))
    atol = ROUNDTRIP_ATOL.get(method, 0.0)
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)
    assert vitune.count_parameters(loaded) == vitune.count_parameters(model)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize("method,kind", GRID)
def test_merge(method, kind):
    model = adapted(method, kind)
    perturb_trainable(model)
    model.eval()
    x = images(model)
    with torch.no_grad():
        before = logits(model(x))
        plain = logits(build(kind)(x))
    # The adapter must change the function, or the equality below proves nothing.
    assert (before - plain).abs().max() > 1e-3

    if not vitune.is_mergeable(method):
        with pytest.raises(vitune.NotMergeableError, match=method):
            vitune.merge(model)
        with torch.no_grad():
            torch.testing.assert_close(logits(model(x)), before, rtol=0, atol=0)  # still intact
        return

    vitune.merge(model)
    assert not any(isinstance(m, VituneModule) for m in model.modules())
    # A merge may give bias-less layers a bias; the family names the constructor flags that rebuild it.
    stock = build(kind, **find_family(model).merged_model_args(model))
    assert list(model.state_dict()) == list(stock.state_dict())
    assert {type(m) for m in model.modules()} == {type(m) for m in stock.modules()}
    with torch.no_grad():
        after = logits(model(x))
    assert (after - before).abs().max() <= 1e-4

    stock.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(logits(stock(x)), after, rtol=0, atol=0)


@pytest.mark.parametrize("method,kind", GRID)
def test_disable_adapter_runs_the_plain_backbone_with_the_trained_head(method, kind):
    model = adapted(method, kind)
    perturb_trainable(model)
    model.eval()
    x = images(model)
    plain = build(kind)
    if not vitune.applied_method(model).can_disable:
        with pytest.raises(vitune.VituneError, match=f"method '{method}' cannot be disabled"):
            with vitune.disable_adapter(model):
                pass
        return
    with torch.no_grad():
        adapted_out = logits(model(x))
        with vitune.disable_adapter(model):
            out = logits(model(x))
            if kind in HF_BACKBONES:  # the plain backbone given the trained head
                places = vitune.applied_method(model).places
                head = {n: t for n, t in model.state_dict().items() if places.in_head(n)}
                plain.load_state_dict(head, strict=False)
                torch.testing.assert_close(out, logits(plain(x)), rtol=0, atol=1e-6)
            else:
                features = model.forward_features(x)
                plain_features = plain.forward_features(x)
                head_on_plain = model.forward_head(plain_features)
                torch.testing.assert_close(features, plain_features, rtol=0, atol=1e-6)
                torch.testing.assert_close(out, head_on_plain, rtol=0, atol=1e-6)
        torch.testing.assert_close(logits(model(x)), adapted_out, rtol=0, atol=0)  # the adapter is back
