"""One training step of an adapted model, timed, and the process's peak memory.

Step time is the median of ``steps`` AdamW steps after ``warmup`` steps: the first step allocates the
optimizer state and the second is the first to hold it beside the activations, so the heap grows through two
steps (ViT-S/16 at batch 16: 200,000 and 65,000 page faults, then next to none) before every step costs the
same. Peak memory is the process's peak RSS on the CPU and
``torch.cuda.max_memory_allocated`` on CUDA; :mod:`.fresh_process` runs each measurement in a process of its
own, so nothing from another variant is counted.

:func:`count_step_flops` gives the arithmetic of the same step, which separates what a method must compute
from how fast it is computed: a method whose step costs 1.06x the floor's time and 1.06x its FLOPs has no
overhead left to remove.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VituneError
from .variants import Adapted


@dataclass
class BenchSettings:
    """What every variant of one bench run shares."""

    model: str = "vit_tiny_patch16_224"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    img_size: int | None = None  # None: the model's own
    num_classes: int = 100
    device: str = "cpu"
    warmup: int = 2  # untimed steps in each process before the timed ones (the heap grows in the first two)
    steps: int = 2  # timed steps per process; the process reports their median
    inference_repeats: int = 3  # timed forwards per model (plain, unmerged, merged), interleaved
    threads: int | None = None  # torch threads in each measuring process (None: torch's default)
    # "wall" (time.perf_counter) or "cpu": the process's CPU time, which a shared machine's other jobs do not
    # lengthen by descheduling this one (with --threads 1 it counts the work alone; CUDA always uses wall time).
    clock: str = "wall"
    # Import PEFT in every measuring process when a PEFT variant runs, so every peak RSS holds the same libraries.
    import_peft: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clock(settings: BenchSettings) -> Callable[[], float]:
    """The timer of `settings`: process CPU time for ``clock="cpu"`` on the CPU, wall time otherwise."""
    if settings.clock not in ("wall", "cpu"):
        raise VituneError(f"bench: --clock is wall or cpu, got {settings.clock!r}")
    return time.process_time if settings.clock == "cpu" and settings.device == "cpu" else time.perf_counter


def build_backbone(settings: BenchSettings, seed: int = 0) -> nn.Module:
    """The timm model with random weights (speed and memory do not depend on their values)."""
    import timm

    kwargs = dict(settings.model_kwargs)
    if settings.img_size is not None:
        kwargs.setdefault("img_size", settings.img_size)
    torch.manual_seed(seed)
    return timm.create_model(settings.model, pretrained=False, num_classes=settings.num_classes, **kwargs)


def input_batch(settings: BenchSettings, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random `size` x `size` images and random labels, on the bench's device."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(settings.batch_size, 3, size, size, generator=g)
    y = torch.randint(0, settings.num_classes, (settings.batch_size,), generator=g)
    return x.to(settings.device), y.to(settings.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: torch.device) -> float:
    """Peak accelerator memory on CUDA, else the process's peak RSS (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mib() -> float:
    """The process's RSS now (Linux: /proc/self/statm), or its peak so far where that file does not exist."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_attention_flops() -> dict[Any, Callable[..., int]]:
    """Formulas for the CPU's fused attention, which torch's FlopCounterMode does not count (it counts the CUDA
    kernels): the same products as every other attention kernel (``sdpa_flop_count``)."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    ops = torch.ops.aten  # keyed by the op, not an overload, as torch's own formulas are
    return {ops._scaled_dot_product_flash_attention_for_cpu: forward,
            ops._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def count_step_flops(adapted: Adapted, settings: BenchSettings, size: int) -> int:
    """FLOPs of one training step's forward and backward (torch's FlopCounterMode: the matrix products,
    convolutions and attention; elementwise work, norms and the optimizer's update are not counted). With
    activation checkpointing the recomputed forward counts too. Gradients are cleared again afterwards."""
    from torch.utils.flop_counter import FlopCounterMode

    model = adapted.model.to(settings.device).train()
    x, y = input_batch(settings, size)
    x.requires_grad_(adapted.input_grad)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure_step(adapted: Adapted, settings: BenchSettings, size: int) -> dict[str, float]:
    """``step_s`` (median of the timed steps) and ``peak_mib`` of training `adapted.model` one AdamW step at a time,
    and ``page_faults_per_step``: the process's page faults in the timed steps (0 once the heap is warm, unless
    the allocator hands memory back between steps, which then costs time: :mod:`.fresh_process`)."""
    device = torch.device(settings.device)
    model = adapted.model.to(device).train()
    x, y = input_batch(settings, size)
    x.requires_grad_(adapted.input_grad)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        x.grad = None
        loss.backward()
        if optimizer is not None:
            optimizer.step()

    now = clock(settings)
    times = []
    faults_before = 0
    for i in range(settings.warmup + settings.steps):
        if i == settings.warmup:
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        synchronize(device)
        start = now()
        step()
        synchronize(device)
        if i >= settings.warmup:
            times.append(now() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {"step_s": statistics.median(times), "peak_mib": peak_memory_mib(device),
            "trainable": sum(p.numel() for p in params), "page_faults_per_step": faults / settings.steps}
