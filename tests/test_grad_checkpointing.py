"""Activation checkpointing (timm's set_grad_checkpointing) gives every method the same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.train.build import build_model
from vitune.train.config import RunConfig

from cases import NOT_ON_BACKBONE, TINY_CONFIGS
from helpers import TINY, image_batch, make_backbone, perturb_trainable

GRID = [(m, b) for m in vitune.methods() for b in ("vit", "swin") if (m, b) not in NOT_ON_BACKBONE]


def _gradients(method: str, kind: str, checkpointing: bool) -> dict[str, torch.Tensor]:
    model = vitune.apply(make_backbone(kind), method, **TINY_CONFIGS.get(method, {}))
    perturb_trainable(model)  # non-zero adapter tensors: a zero-initialised B would hide A's gradient
    model.set_grad_checkpointing(checkpointing)
    model.train()  # dropout on: checkpointing must replay the same masks
    x = image_batch(model)
    torch.manual_seed(5)
    F.cross_entropy(model(x), torch.arange(len(x)) % 5).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method,kind", GRID)
def test_same_gradients_with_and_without_checkpointing(method, kind):
    plain, checkpointed = _gradients(method, kind, False), _gradients(method, kind, True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        assert grad is not None and checkpointed[name] is not None, f"{name} got no gradient"
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_train_builds_the_model_with_checkpointing_on():
    config = RunConfig(method="lora", model="vit_tiny_patch16_224", model_kwargs={k: v for k, v in TINY.items() if k != "num_classes"},
                       grad_checkpointing=True)
    model, _, _ = build_model(config, num_classes=5, warn=False)
    assert model.grad_checkpointing


def test_train_flag_reaches_the_run_config():
    from vitune.cli import _train_flags, build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--grad-checkpointing"])
    assert _train_flags(args)["grad_checkpointing"] is True
    assert "grad_checkpointing" not in _train_flags(build_parser().parse_args(["train", "--out", "x"]))
