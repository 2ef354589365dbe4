"""The layers: the layering rule, the shared pieces (grouped product, shared tensors) and disabling."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitune
import vitune.layers
from vitune.layers.base import SharedTensors, VituneModule
from vitune.layers.grouped_linear import channel_shuffle, grouped_dense_weight, grouped_product
from vitune.methods.base import method_parameters, vitune_modules

from cases import TINY_CONFIGS
from helpers import image_batch, make_backbone

SRC = Path(vitune.__file__).parent


def test_layers_never_import_methods():
    for path in sorted((SRC / "layers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                assert "methods" not in module, f"{path.name} imports {module}"
            elif isinstance(node, ast.Import):
                assert not any("methods" in a.name for a in node.names), path.name


def test_methods_define_no_module_classes():
    """The rule of layers/__init__.py: every module class vitune inserts lives in layers/."""
    import vitune.methods

    for info in pkgutil.iter_modules(vitune.methods.__path__):
        module = importlib.import_module(f"vitune.methods.{info.name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                assert not issubclass(obj, nn.Module), f"vitune.methods.{info.name}.{name} belongs in layers/"


def test_vitune_module_is_one_class():
    from vitune.methods.base import VituneModule as reexported

    assert reexported is VituneModule is vitune.layers.VituneModule


@pytest.mark.parametrize(
    "in_features,out_features,groups",
    [(8, 768, 2), (768, 2304, 384), (3072, 768, 384), (12, 6, 3)],  # RepAdapter, Consolidator qkv and fc2
)
def test_grouped_product_equals_its_dense_matrix(in_features, out_features, groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, in_features, generator=g, dtype=torch.float64)
    weight = torch.randn(groups, out_features // groups, in_features // groups, generator=g, dtype=torch.float64)
    bias = torch.randn(out_features, generator=g, dtype=torch.float64)
    dense = grouped_dense_weight(weight)
    assert dense.shape == (out_features, in_features)
    torch.testing.assert_close(grouped_product(x, weight, bias), F.linear(x, dense, bias))
    torch.testing.assert_close(grouped_product(x, weight), F.linear(x, dense))
    # with the shuffle, the dense matrix reads each input where the shuffle put it
    shuffled = grouped_dense_weight(weight, shuffle=True)
    torch.testing.assert_close(grouped_product(channel_shuffle(x, groups), weight), F.linear(x, shuffled))


def test_shared_tensors_hold_parameters_or_frozen_buffers():
    learnt = SharedTensors({"a": torch.zeros(2), "b": torch.ones(3)})
    assert [n for n, _ in learnt.named_parameters()] == ["a", "b"] and learnt["b"] is learnt.b
    frozen = SharedTensors({"rules": torch.ones(2, 2)}, trainable=False)
    assert not list(frozen.parameters()) and [n for n, _ in frozen.named_buffers()] == ["rules"]
    assert learnt.merged() is None


def _with_method_perturbed(method: str, kind: str) -> nn.Module:
    """The method applied, its own tensors (and the head) moved off their init; the backbone untouched."""
    model = vitune.apply(make_backbone(kind), method, **TINY_CONFIGS.get(method, {}))
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _, p in method_parameters(model):
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for p in model.head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("kind", ["vit", "dinov2_reg", "clip"])
@pytest.mark.parametrize("method", vitune.methods())
def test_disabled_modules_compute_the_backbone(method, kind):
    """With ``adapter_disabled`` set on every inserted module, the model computes the plain backbone (with the
    trained head): each wrapper runs only what it wraps, prompt blocks add no prompts."""
    model = _with_method_perturbed(method, kind)
    plain = make_backbone(kind)
    plain.head.load_state_dict(model.head.state_dict())
    x = image_batch(model)
    modules = [m for _, m in vitune_modules(model)]
    with torch.no_grad():
        adapted = model(x)
        for module in modules:
            module.adapter_disabled = True
        disabled = model(x)
        for module in modules:
            module.adapter_disabled = False
        again = model(x)
        expected = plain(x)
    torch.testing.assert_close(disabled, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, adapted, rtol=0, atol=0)
    if modules:
        assert (adapted - expected).abs().max() > 1e-4  # the method did change the function


def test_disabling_is_declared_per_method():
    from vitune.methods import get_method

    assert all(get_method(m).can_disable for m in vitune.methods() if m != "full")
    full = get_method("full")
    assert not full.can_disable and "in place" in full.cannot_disable_reason


@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("adapter", ["repadapter", "arc"])
def test_input_adapters_train_the_formula_in_float64(adapter, dropout):
    """RepAdapter's and ARC's training forms (the r-wide hidden as (r, tokens), layers/low_rank.py) against
    f(x) = x + s B(Dropout(A x + b_A)) + s b_B and f(x) = x + Dropout(x P diag(c)) P^T + beta: values and every
    gradient. The mask is drawn over the (r, tokens) hidden; the reference draws it again."""
    from vitune.layers.arc import ARCAdapter, arc_projections
    from vitune.layers.repadapter import RepAdapter

    torch.manual_seed(0)
    if adapter == "repadapter":
        module = RepAdapter(16, r=4, groups=2, dropout=dropout, scale=0.7).double()
        shared = []
    else:
        holder = arc_projections(16, 4, ("mlp",), dtype=torch.float64)
        module, shared = ARCAdapter(holder, "mlp", 16, 4, dropout, dtype=torch.float64), list(holder.parameters())
    with torch.no_grad():
        for p in [*module.parameters(), *shared]:
            p.normal_()
    module.train()
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 5, 16, dtype=torch.float64)
    inputs = [x, *module.parameters(), *shared]

    torch.manual_seed(1)
    actual = module(x)
    torch.manual_seed(1)
    mask = F.dropout(torch.ones(4, 15, dtype=torch.float64), dropout).t().reshape(3, 5, 4)
    if adapter == "repadapter":
        dense_b = grouped_dense_weight(module.grouped_weight_B())
        hidden = (F.linear(x, module.weight_A, module.bias_A) * mask)
        expected = x + 0.7 * (F.linear(hidden, dense_b) + module.bias_B)
    else:
        p = module.projection
        expected = x + (x @ p * module.scale * mask) @ p.t() + module.bias
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(actual, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
