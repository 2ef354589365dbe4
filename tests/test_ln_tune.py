"""LN-tune: exactly the LayerNorm affine parameters train; merging leaves them in place."""

from __future__ import annotations

import torch
from torch import nn

import vitune

from helpers import image_batch, make_backbone, perturb_trainable, vit_b16


def layer_norm_parameters(model: nn.Module) -> set[str]:
    return {
        f"{path}.{n}"
        for path, m in model.named_modules()
        if isinstance(m, nn.LayerNorm)
        for n, _ in m.named_parameters(recurse=False)
    }


def test_vit_b16_count():
    model = vitune.apply(vit_b16(), "ln_tune")
    assert vitune.count_parameters(model)["method"] == 38_400  # 12 blocks * 2 norms * (w + b) * 768 + final norm
    claimed = set(model.vitune_method.claimed_parameters(model))
    assert claimed == layer_norm_parameters(model) and len(claimed) == 12 * 4 + 2


def test_only_norms_and_head_train():
    model = vitune.apply(make_backbone("avgpool"), "ln_tune")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == layer_norm_parameters(model) | {"head.weight", "head.bias"}
    assert "fc_norm.weight" in trainable


def test_merge_keeps_the_trained_norms():
    model = vitune.apply(make_backbone(), "ln_tune")
    perturb_trainable(model)
    model.eval()
    x = image_batch(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)
        merged = vitune.merge(model)
        torch.testing.assert_close(merged(x), before, rtol=0, atol=0)
    for k, v in merged.state_dict().items():
        assert torch.equal(v, state[k]), k
