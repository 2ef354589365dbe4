"""One training epoch: mixed precision, gradient accumulation, clipping, learning-rate updates, progress bar."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from timm.utils import dispatch_clip_grad
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..errors import NonFiniteLossError
from .logits import logits_of
from .precision import Precision


@dataclass
class EpochSums:
    """This process's sums over the epoch (the runner adds them up over processes)."""

    loss_sum: float
    correct: int
    seen: int
    lr: float


CHECK_EVERY = 25  # steps between checks of the loss for NaN or infinity (each check waits for the device)


def _stop_if_bad(first_bad: torch.Tensor, description: str, total: int) -> None:
    step = int(first_bad.item())
    if step >= 0:
        raise NonFiniteLossError(f"{description}, step {step + 1}/{total}: the training loss is NaN or infinite "
                                 "(lower --lr, or try --clip-grad 1.0)")


def usable_batches(num_batches: int, grad_accum_steps: int) -> int:
    """Batches an epoch uses: whole accumulation groups only, so every step averages the same number of batches."""
    return num_batches // grad_accum_steps * grad_accum_steps


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    precision: Precision,
    scaler: torch.amp.GradScaler | None,
    grad_accum_steps: int,
    clip_grad: float | None,
    clip_mode: str,
    sched_on_updates: bool,
    first_update: int,
    description: str,
    show_progress: bool,
) -> EpochSums:
    """Train `model` (bare or in DDP) for one pass over `loader`.

    ``first_update`` is the number of optimizer steps taken earlier in this phase (for per-step schedules).
    """
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total = usable_batches(len(loader), grad_accum_steps)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = updates = 0
    # The first step whose loss is NaN or infinite (-1: none), kept on the device: no sync per step.
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(total=total, desc=description, leave=False, disable=None if show_progress else True)
    for i, (images, labels) in enumerate(loader):
        if i >= total:
            break
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        step_now = (i + 1) % grad_accum_steps == 0
        # Within an accumulation group DDP must not all-reduce yet: only the group's last backward syncs.
        sync = contextlib.nullcontext()
        if not step_now and isinstance(model, DistributedDataParallel):
            sync = model.no_sync()
        with sync:
            with precision.autocast():
                logits = logits_of(model(images))
                loss = loss_fn(logits, labels)
            scaled = loss / grad_accum_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if step_now:
            if clip_grad is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                dispatch_clip_grad(params, clip_grad, mode=clip_mode)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            updates += 1
            if sched_on_updates:
                scheduler.step_update(first_update + updates)
        first_bad.masked_fill_(~torch.isfinite(loss.detach()) & (first_bad < 0), i)
        if (i + 1) % CHECK_EVERY == 0 and not isinstance(model, DistributedDataParallel):
            # one sync every few steps, so a broken run stops soon (with DDP at the epoch's end, all ranks alike)
            _stop_if_bad(first_bad, description, total)
        loss_sum += loss.detach().double() * labels.shape[0]
        correct += (logits.detach().argmax(-1) == labels).sum()
        seen += labels.shape[0]
        bar.update(1)
        if not bar.disable and i % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    _stop_if_bad(first_bad, description, total)
    loss_value = loss_sum.item()
    if not math.isfinite(loss_value):  # finite per step but overflowing the sum: as bad
        raise NonFiniteLossError(f"{description}: the training loss became {loss_value} "
                                 "(lower --lr, or try --clip-grad 1.0)")
    return EpochSums(loss_value, int(correct.item()), seen, optimizer.param_groups[0]["lr"])
