"""Activation checkpointing (vitune.set_grad_checkpointing: timm's own switch, transformers' for Hugging Face
models) recomputes every block and gives every method the same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitune
from vitune.backbones import find_places
from vitune.train.build import build_model
from vitune.train.config import RunConfig

from cases import HF_BACKBONES, NOT_ON_BACKBONE, TINY_CONFIGS, make_hf_backbone
from helpers import TINY, make_backbone, perturb_trainable

KINDS = ("vit", "swin", *HF_BACKBONES)
GRID = [(m, b) for m in vitune.methods() for b in KINDS if (m, b) not in NOT_ON_BACKBONE]


def _model(method: str | None, kind: str):
    model = make_hf_backbone(kind) if kind in HF_BACKBONES else make_backbone(kind)
    size = find_places(model).shapes["img_size"]
    if method is not None:
        model = vitune.apply(model, method, **TINY_CONFIGS.get(method, {}))
        perturb_trainable(model)  # non-zero adapter tensors: a zero-initialised B would hide A's gradient
    x = torch.randn(4, 3, *size, generator=torch.Generator().manual_seed(1))
    return model, x


def _backward(model, x: torch.Tensor) -> None:
    model.train()  # dropout on: checkpointing must replay the same masks
    torch.manual_seed(5)
    out = model(x)
    F.cross_entropy(out if isinstance(out, torch.Tensor) else out.logits, torch.arange(len(x)) % 5).backward()


def _gradients(method: str, kind: str, checkpointing: bool) -> dict[str, torch.Tensor]:
    model, x = _model(method, kind)
    vitune.set_grad_checkpointing(model, checkpointing)
    _backward(model, x)
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", KINDS)
def test_every_block_runs_again_in_backward(kind):
    model, x = _model("lora", kind)
    # a module inside each block: transformers checkpoints the layer's forward, so the layer's own hooks run once
    blocks = [model.get_submodule(b.norm1) for b in vitune.applied_method(model).places.blocks]
    calls = []
    for block in blocks:
        block.register_forward_pre_hook(lambda module, args: calls.append(module))
    for checkpointing, runs in ((False, 1), (True, 2), (False, 1)):  # on, then off again
        vitune.set_grad_checkpointing(model, checkpointing)
        calls.clear()
        _backward(model, x)
        assert [calls.count(b) for b in blocks] == [runs] * len(blocks), checkpointing


@pytest.mark.parametrize("method,kind", GRID)
def test_same_gradients_with_and_without_checkpointing(method, kind):
    plain, checkpointed = _gradients(method, kind, False), _gradients(method, kind, True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        assert grad is not None and checkpointed[name] is not None, f"{name} got no gradient"
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_a_model_of_no_known_family_is_refused_by_name():
    from torch import nn

    unknown = "does not know where to attach in a torch.nn.modules.container.Sequential"
    with pytest.raises(vitune.BackboneError, match=unknown):
        vitune.set_grad_checkpointing(nn.Sequential(nn.Linear(2, 2)))


def _zero_shot_classifier():
    import transformers
    from torch import nn

    clip = transformers.CLIPModel(make_hf_backbone("hf_clip").config)
    return vitune.CLIPZeroShotClassifier(clip, nn.Linear(clip.visual_projection.out_features, 5))


def test_clip_zero_shot_classifier_recomputes_through_its_image_tower():
    model = vitune.apply(_zero_shot_classifier(), "lora")
    norms = [model.get_submodule(b.norm1) for b in vitune.applied_method(model).places.blocks]
    calls = []
    for norm in norms:
        norm.register_forward_pre_hook(lambda module, args: calls.append(module))
    vitune.set_grad_checkpointing(model)
    _backward(model, torch.randn(4, 3, 16, 16))
    assert [calls.count(n) for n in norms] == [2] * len(norms)


def test_a_tower_without_a_pretrained_model_is_refused_by_name():
    from torch import nn

    from vitune.backbones.hf_blocks import hf_grad_checkpointing

    bare = nn.Sequential(nn.Linear(2, 2))  # as older transformers' CLIP image tower, outside its PreTrainedModel
    with pytest.raises(vitune.BackboneError, match="Sequential holds no transformers PreTrainedModel"):
        hf_grad_checkpointing(bare, True)


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
