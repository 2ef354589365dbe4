"""bfloat16 and float16 autocast on the CPU: every method trains through them (forward, backward, float32
gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune

from cases import TINY_CONFIGS
from helpers import image_batch, make_backbone, perturb_trainable


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", vitune.methods())
def test_autocast_forward_and_backward(method, dtype):
    model = vitune.apply(make_backbone(), method, **TINY_CONFIGS.get(method, {})).train()
    perturb_trainable(model)
    x = image_batch(model)
    with torch.autocast("cpu", dtype=dtype):
        logits = model(x)
        loss = F.cross_entropy(logits, torch.arange(len(x)) % 5)
    assert logits.dtype == dtype  # autocast reached the head: nothing forced float32 all the way
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    for name, p in trainable.items():
        assert p.dtype == torch.float32, name  # master weights stay float32
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
