"""The bench run: every variant once per round, each measurement in a fresh process, ratios per round.

Round r runs the variants in an order rotated by r, so no variant always runs first (right after a
neighbour's burst of load) or last. Each round's ratios compare that round's measurements only; the
document keeps every round's raw figures beside the medians.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import torch

from ..errors import VituneError
from .fresh_process import run_fresh
from .ratios import ratio_spread, value_spread
from .step import BenchSettings
from .variants import BASELINES, CHECKPOINTING_SUFFIX, PAIRS, expand_methods, parse_variant, unavailable_reason

Progress = Callable[[str], None]
RoundDone = Callable[[dict[str, Any]], None]


def variant_names(methods: Sequence[str], grad_checkpointing: bool) -> list[str]:
    """The baselines first, then `methods` (each once; named sets expanded); with checkpointing, every one also
    with ``+ckpt``."""
    names = list(dict.fromkeys([*BASELINES, *expand_methods(methods)]))
    for name in names:
        parse_variant(name)  # unknown names fail before anything runs
    if grad_checkpointing:
        names += [n + CHECKPOINTING_SUFFIX for n in names if not n.endswith(CHECKPOINTING_SUFFIX)]
    return names


def command_line(settings: BenchSettings, methods: Sequence[str], rounds: int, grad_checkpointing: bool) -> str:
    """The ``vitune bench`` command that repeats this run (the JSON and PNG flags aside)."""
    parts = ["vitune bench", f"--model {settings.model}"]
    if settings.model_kwargs:
        parts.append("--model-kwargs " + " ".join(f"{k}={json.dumps(v)}" for k, v in settings.model_kwargs.items()))
    parts.append(f"--batch-size {settings.batch_size}")
    if settings.img_size is not None:
        parts.append(f"--img-size {settings.img_size}")
    parts += [f"--methods {','.join(methods)}", f"--rounds {rounds}", f"--warmup {settings.warmup}",
              f"--steps {settings.steps}", f"--device {settings.device}"]
    if settings.threads is not None:
        parts.append(f"--threads {settings.threads}")
    if settings.clock != "wall":
        parts.append(f"--clock {settings.clock}")
    if grad_checkpointing:
        parts.append("--grad-checkpointing")
    return " ".join(parts)


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    import timm

    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "torch": torch.__version__, "timm": timm.__version__,
                            "load_average_at_start": list(os.getloadavg())}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def run_bench(settings: BenchSettings, methods: Sequence[str], rounds: int = 3, grad_checkpointing: bool = False,
              progress: Progress = lambda message: None,
              round_done: RoundDone = lambda document: None) -> dict[str, Any]:
    """Measure every variant `rounds` times, interleaved; return the JSON-ready document (docs/benchmarks.md).

    `round_done` gets the document of the rounds so far after each round (a long run interrupted later
    still leaves its finished rounds)."""
    if rounds < 1:
        raise VituneError(f"bench: --rounds must be at least 1, got {rounds}")
    names = variant_names(methods, grad_checkpointing)
    skipped = {n: r for n in names if (r := unavailable_reason(parse_variant(n))) is not None}
    for name, reason in skipped.items():
        progress(f"skipping {name}: {reason}")
    names = [n for n in names if n not in skipped]
    settings.import_peft = any(parse_variant(n).kind == "peft" for n in names)
    started = time.time()
    document: dict[str, Any] = {"command": command_line(settings, methods, rounds, grad_checkpointing),
                                "settings": {**settings.to_dict(), "rounds": rounds,
                                             "grad_checkpointing": grad_checkpointing},
                                "machine": machine(), "skipped": skipped}
    raw: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name in errors:
                continue
            variant = parse_variant(name)
            # Inference of a checkpointed twin is its base variant's (checkpointing acts in training only).
            inference = variant.kind != "floor" and not variant.checkpointing
            try:
                # Stored bytes and FLOPs do not change from round to round: measured in the first only.
                timed = run_fresh(settings.to_dict(), name, memory=False, inference=inference, storage=r == 0,
                                  flops=r == 0)
                memory = run_fresh(settings.to_dict(), name, memory=True)
                timed["peak_mib"], timed["tensor_mib"] = memory["peak_mib"], memory["tensor_mib"]
            except VituneError as e:
                errors[name] = str(e)
                progress(f"round {r + 1}/{rounds}: {name} failed; it is left out of later rounds")
                continue
            raw[name].append(timed)
            progress(f"round {r + 1}/{rounds}: {name} {timed['step_s']:.3f} s/step, {timed['peak_mib']:.0f} MiB")
        document["variants"] = [_summary(n, raw, errors) for n in names]
        document["pairs"] = _pairs(raw)
        document["rounds_done"] = r + 1
        document["load_average_at_end"] = list(os.getloadavg())
        document["wall_s"] = time.time() - started
        round_done(document)
    return document


def _column(raw: dict[str, list[dict[str, Any]]], name: str, key: str) -> list[float | None]:
    return [row.get(key) for row in raw.get(name, [])]


def _median(raw: dict[str, list[dict[str, Any]]], name: str, key: str) -> float | None:
    """The median over the rounds that measured `key` (FLOPs and bytes: the first only); None if none did."""
    values = [v for v in _column(raw, name, key) if v is not None]
    return statistics.median(values) if values else None


# What each ratio compares: ``<ratio>_vs_<baseline>`` divides the variant's figure by the baseline's, round by round.
# FLOPs come from the first round only, so their ratios have one "round".
RATIOS = {"step": "step_s", "memory": "peak_mib", "tensors": "tensor_mib", "flops": "step_flops"}


def _ratios(raw: dict[str, list[dict[str, Any]]], name: str, baseline: str, label: str) -> dict[str, Any]:
    """``{"step_vs_<label>": ..., "memory_vs_<label>": ..., "tensors_vs_<label>": ..., "flops_vs_<label>": ...}``:
    `name` over `baseline`."""
    return {f"{ratio}_vs_{label}": ratio_spread(_column(raw, name, key), _column(raw, baseline, key))
            for ratio, key in RATIOS.items()}


def _pairs(raw: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """vitune's variant over its peer, step time and memory, round by round (both measured in each)."""
    out = []
    for ours, theirs in PAIRS:
        for suffix in ("", CHECKPOINTING_SUFFIX):
            a, b = ours + suffix, theirs + suffix
            if raw.get(a) and raw.get(b):
                out.append({"variant": a, "peer": b, **_ratios(raw, a, b, "peer")})
    return out


def _summary(name: str, raw: dict[str, list[dict[str, Any]]], errors: dict[str, str]) -> dict[str, Any]:
    """One variant's medians and per-round ratios. A ratio pairs rounds by index, so a variant that failed in
    a later round is compared over the rounds it finished."""
    variant = parse_variant(name)
    rows = raw[name]
    out: dict[str, Any] = {"name": name, "kind": variant.kind, "method": variant.method, "config": variant.config,
                           "checkpointing": variant.checkpointing, "rounds": rows}
    if name in errors:
        out["error"] = errors[name]
    if not rows:
        return out
    out["trainable"] = rows[0]["trainable"]
    for key in RATIOS.values():
        out[key] = _median(raw, name, key)
    for baseline in BASELINES:
        out.update(_ratios(raw, name, baseline, baseline))
    if variant.checkpointing:  # against the same variant without checkpointing
        out.update(_ratios(raw, name, variant.base_name, "own"))
    for key in ("unmerged_vs_plain", "merged_vs_plain"):
        out[key] = value_spread(_column(raw, name, key))
    for key in ("plain_img_s", "unmerged_img_s", "merged_img_s", "merge_s"):
        out[key] = _median(raw, name, key)
    first = rows[0]
    for model in ("unmerged", "merged"):  # counted in the first round only
        flops, plain = first.get(f"{model}_forward_flops"), first.get("plain_forward_flops")
        out[f"{model}_flops_vs_plain"] = flops / plain if flops and plain else None
    out["adapter_bytes"] = first.get("adapter_bytes")
    out["full_checkpoint_bytes"] = first.get("full_checkpoint_bytes")
    if out["adapter_bytes"] and out["full_checkpoint_bytes"]:
        out["storage_vs_full_checkpoint"] = out["adapter_bytes"] / out["full_checkpoint_bytes"]
    return out
