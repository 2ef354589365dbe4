"""Optimizer, learning-rate schedule and loss, from timm's factories.

The optimizer sees the trainable parameters only, grouped by ``vitune.parameter_groups`` (the public API's
grouping, which is timm's): with ``filter_bias_and_bn`` (the default) biases, other 1-D tensors (norms,
scales) and the ``no_weight_decay()`` names (position embedding, class token, prompts) train without weight
decay; without it every trainable tensor is decayed.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

from ..api import parameter_groups
from ..errors import ConfigError
from .config import RunConfig


def build_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """A new optimizer over `model`'s parameters that require grad (the bare model, not a DDP wrapper)."""
    extra: dict[str, Any] = {}
    if config.opt_eps is not None:
        extra["eps"] = config.opt_eps
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("nothing to train: no parameter of the model requires grad")
    try:
        return create_optimizer_v2(
            parameter_groups(model, config.weight_decay, filter_bias_and_bn=config.filter_bias_and_bn),
            opt=config.opt,
            lr=config.lr,
            weight_decay=config.weight_decay,  # the groups carry their own; this is only the default
            momentum=config.momentum,
            **extra,
        )
    except (AssertionError, ValueError, KeyError) as e:
        raise ConfigError(f"--opt {config.opt!r}: timm cannot build this optimizer ({e})") from None


class ConstantSchedule:
    """``--sched none``: the optimizer's lr as set, every step (timm returns no scheduler for it)."""

    def step(self, epoch: int) -> None:
        pass

    def step_update(self, num_updates: int) -> None:
        pass


def build_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, epochs: int, updates_per_epoch: int):
    """timm's scheduler over `epochs` (one phase); call ``step(epoch)`` at each epoch's start and, with
    ``sched_on_updates``, ``step_update(n)`` after each optimizer step. Both are pure functions of their
    argument, so a resumed run needs no scheduler state."""
    try:
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=config.sched,
            num_epochs=epochs,
            warmup_epochs=config.warmup_epochs,
            warmup_lr=config.warmup_lr,
            min_lr=config.min_lr,
            step_on_epochs=not config.sched_on_updates,
            updates_per_epoch=updates_per_epoch,
        )
    except (AssertionError, ValueError) as e:
        raise ConfigError(f"--sched {config.sched!r}: timm cannot build this schedule ({e})") from None
    return scheduler or ConstantSchedule()  # timm gives None for 'none'


def build_loss(config: RunConfig) -> nn.Module:
    if config.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=config.smoothing)
    return nn.CrossEntropyLoss()
