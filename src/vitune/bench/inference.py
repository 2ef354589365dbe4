"""Inference throughput of the plain backbone, the adapted (unmerged) model and the merged one, and the
merge's time and storage.

The three models run one batch each in turn, repeat after repeat, so a slow moment of a shared machine hits
all three; each repeat gives the ratios unmerged/plain and merged/plain, and the result is their median.
Their forward FLOPs, counted once, say the same without the machine's noise: a merged model computes exactly
the plain model's products (ratio 1), where timing on a shared CPU moves by a few percent from batch to batch.
"""

from __future__ import annotations

import copy
import statistics
from typing import Callable

import torch
from torch import nn

from .step import BenchSettings, clock, cpu_attention_flops, input_batch, synchronize
from .variants import Adapted


@torch.no_grad()
def _forward_seconds(model: nn.Module, x: torch.Tensor, device: torch.device, now: Callable[[], float]) -> float:
    synchronize(device)
    start = now()
    model(x)
    synchronize(device)
    return now() - start


def measure_inference(plain: nn.Module, adapted: Adapted, settings: BenchSettings, size: int,
                      flops: bool = False) -> dict[str, float | None]:
    """Images per second of each model (median over repeats), the median per-repeat ratios to the plain
    backbone, and ``merge_s``: the seconds the variant's merge takes (None where it does not merge). With
    `flops`, also ``<model>_forward_flops`` of one eval batch of each model."""
    models, merge_s = eval_models(plain, adapted, settings)
    seconds = inference_seconds_of(models, settings, size)
    result: dict[str, float | None] = {"merge_s": merge_s}
    for name in ("plain", "unmerged", "merged"):
        result[f"{name}_img_s"] = settings.batch_size / statistics.median(seconds[name]) if name in seconds else None
        if name != "plain":
            ratios = [p / t for p, t in zip(seconds["plain"], seconds.get(name, []))]  # throughput ratio
            result[f"{name}_vs_plain"] = statistics.median(ratios) if ratios else None
        if flops:
            result[f"{name}_forward_flops"] = forward_flops(models[name], settings, size) if name in models else None
    return result


def forward_flops(model: nn.Module, settings: BenchSettings, size: int) -> int:
    """FLOPs of one eval batch through `model` (the products :func:`.step.count_step_flops` counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, _ = input_batch(settings, size)
    with FlopCounterMode(display=False, custom_mapping=cpu_attention_flops()) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def eval_models(plain: nn.Module, adapted: Adapted,
                settings: BenchSettings) -> tuple[dict[str, nn.Module], float | None]:
    """``{"plain", "unmerged", "merged"}`` in eval mode on the bench's device ("merged" where the variant merges:
    a merged copy of the adapted model), and the merge's seconds (None: no merge)."""
    device = torch.device(settings.device)
    now = clock(settings)
    models = {"plain": plain.to(device).eval(), "unmerged": adapted.model.to(device).eval()}
    merge_s = None
    if adapted.merge is not None:
        merged = copy.deepcopy(adapted.model)
        synchronize(device)
        start = now()
        merged = adapted.merge(merged)
        synchronize(device)
        merge_s = now() - start
        models["merged"] = merged.eval()
    return models, merge_s


def inference_seconds_of(models: dict[str, nn.Module], settings: BenchSettings, size: int) -> dict[str, list[float]]:
    """Seconds per eval batch of each of `models`, one entry per repeat, the models taking turns."""
    device = torch.device(settings.device)
    now = clock(settings)
    x, _ = input_batch(settings, size)
    for model in models.values():  # warm-up: one untimed batch each
        _forward_seconds(model, x, device, now)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(settings.inference_repeats):
        for name, model in models.items():
            seconds[name].append(_forward_seconds(model, x, device, now))
    return seconds
