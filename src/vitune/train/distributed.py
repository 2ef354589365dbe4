"""Distributed data parallel under ``torchrun``: the process group, the DDP wrapper, small collectives.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; one process per device (or per CPU share, with gloo).
Only trainable tensors join DDP: the frozen backbone is marked as ignored, so it is neither broadcast at start
nor put in the gradient reducer (every rank builds the same frozen weights from the same seed or file), and
``find_unused_parameters`` stays off. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..api import trainable_state
from ..errors import RunError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(choice: str, env: DistEnv) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RunError("--device cuda: no CUDA device is available here")
        return torch.device("cuda", env.local_rank if env.distributed else torch.cuda.current_device())
    return torch.device("cpu")


def setup(device_choice: str) -> tuple[DistEnv, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns the env and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        env = DistEnv()
        return env, pick_device(device_choice, env)
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_choice, env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return env, device


def teardown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """`model` in DDP over its trainable tensors (or itself in one process). Re-wrap when the trainable set changes."""
    if not env.distributed:
        return model
    keep = set(trainable_state(model))
    ignored = [n for n, p in model.named_parameters() if not (p.requires_grad and n in keep)]
    ignored += [n for n, _ in model.named_buffers() if n not in keep]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False
    )


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_sum(values: list[float], env: DistEnv, device: torch.device) -> list[float]:
    """Element-wise sums over all processes (float64, so counts stay exact)."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(value: Any, env: DistEnv) -> Any:
    """Rank 0's `value` on every process (a small picklable object: a decision, a loaded checkpoint)."""
    if not env.distributed:
        return value
    box = [value if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()
