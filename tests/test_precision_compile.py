"""torch.compile(fullgraph=True) traces every method's training forward in one graph: no graph break inside
any inserted module (the eager backend: tracing is what is checked, not code generation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune

from cases import TINY_CONFIGS
from helpers import image_batch, make_backbone, perturb_trainable


def _gradients(model, x) -> dict[str, torch.Tensor]:
    F.cross_entropy(model(x), torch.arange(len(x)) % 5).backward()
    return {n: p.grad for n, p in vitune.unwrap(model).named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", vitune.methods())
def test_training_step_compiles_without_graph_breaks(method):
    torch._dynamo.reset()
    model = vitune.apply(make_backbone(), method, **TINY_CONFIGS.get(method, {})).eval()  # eval: no dropout masks
    perturb_trainable(model)
    x = image_batch(model)
    expected = _gradients(model, x)
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # a graph break raises here
    got = _gradients(compiled, x)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("method,config", [("kadaptation", {"n": 8, "dropout": 0.5}), ("consolidator", {"fc_groups": [16]})])
def test_folded_training_forms_compile_in_training_mode(method, config):
    """The training forms that fold an update into the weight (layers/folded_linear.py: a custom autograd
    function) trace in one graph in training mode too, dropout masks included, and give eager's gradients."""
    torch._dynamo.reset()
    model = vitune.apply(make_backbone(), method, **config).train()
    perturb_trainable(model)
    x = image_batch(model)
    torch.manual_seed(0)
    expected = _gradients(model, x)
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.manual_seed(0)  # the same dropout masks
    got = _gradients(compiled, x)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)
