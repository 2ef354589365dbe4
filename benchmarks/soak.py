"""Soak test: train, save, reload and merge every method many times in one process, and show that memory and
open files do not grow.

    python benchmarks/soak.py                      # 30 rounds of every method, plus one `vitune train` a round
    python benchmarks/soak.py --rounds 200 --methods lora,repadapter --no-runner

Each round, for every method: a fresh tiny ViT, ``vitune.apply``, a few AdamW steps, ``save_adapter``,
``load_adapter`` into another fresh backbone (outputs must agree), ``merge`` where the method merges (outputs
must agree). With the runner (default) the round also trains a tiny run folder end to end with
``vitune.train.train`` (data loading, checkpoints, TensorBoard, results), which exercises every file the
pipeline opens. One line per round: RSS, open file descriptors, live Python objects, live tensors.

The verdict compares the last rounds with the rounds just after warm-up (allocators and caches settle in the
first rounds): it fails (exit 1) when open files grew at all, or RSS grew by more than ``--rss-slack-mib``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch

import vitune

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2, num_classes=5)
# Method configs that fit the 64-wide backbone (defaults are sized for ViT-B/16's 768).
TINY_CONFIGS = {"consolidator": {"fc_groups": [16]}, "kadaptation": {"n": 8}}
# Re-parameterised on save: equal up to rounding, not bit for bit.
ATOL = 1e-5


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_tensors() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def backbone(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY).eval()


def cycle(method: str, folder: Path, steps: int) -> None:
    """One train -> save -> reload -> merge cycle of `method`; raises if outputs disagree."""
    model = vitune.apply(backbone(), method, **TINY_CONFIGS.get(method, {}))
    optimizer = torch.optim.AdamW([p for _, p in vitune.trainable_parameters(model)], lr=1e-2)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 5
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(images)
    vitune.save_adapter(model, folder)
    reloaded = vitune.load_adapter(backbone(), folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), expected, atol=ATOL, rtol=ATOL)
        if vitune.is_mergeable(method):
            vitune.merge(reloaded)
            torch.testing.assert_close(reloaded(images), expected, atol=1e-4, rtol=1e-4)


def make_image_folder(root: Path) -> Path:
    """A tiny image-folder task: 2 classes of flat colours, 8 training and 4 test images."""
    from PIL import Image

    for split, count in (("train", 8), ("test", 4)):
        for i in range(count):
            label = i % 2
            path = root / split / f"class_{label}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (200, 30, 30) if label else (30, 30, 200)).save(path)
    return root


def runner_cycle(data: Path, out: Path) -> None:
    """One `vitune train` of a tiny run folder, in this process."""
    from vitune.train import train

    shutil.rmtree(out, ignore_errors=True)
    train({"method": "lora", "model": "vit_tiny_patch16_224", "data": str(data), "epochs": 2, "batch_size": 4,
           "warmup_epochs": 0, "workers": 0,
           "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 32, "patch_size": 8}}, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3, help="training steps per cycle")
    parser.add_argument("--methods", default=",".join(vitune.methods()), help="comma-separated (default: all)")
    parser.add_argument("--no-runner", action="store_true", help="skip the `vitune train` run of each round")
    parser.add_argument("--warmup", type=int, default=5, help="rounds before the baseline is taken")
    parser.add_argument("--rss-slack-mib", type=float, default=32.0, help="allowed RSS growth after warm-up")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # the random-backbone warning, once per round
    work = Path(tempfile.mkdtemp(prefix="vitune-soak-"))
    data = make_image_folder(work / "data")
    rows = []
    print(f"{'round':>5} {'seconds':>8} {'rss MiB':>8} {'fds':>5} {'objects':>8} {'tensors':>8}", flush=True)
    try:
        for round_ in range(args.rounds):
            started = time.perf_counter()
            for method in methods:
                cycle(method, work / "adapter", args.steps)
            if not args.no_runner:
                runner_cycle(data, work / "run")
            gc.collect()
            row = (rss_mib(), open_fds(), len(gc.get_objects()), live_tensors())
            rows.append(row)
            print(f"{round_ + 1:5d} {time.perf_counter() - started:8.2f} {row[0]:8.1f} {row[1]:5d} {row[2]:8d} "
                  f"{row[3]:8d}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return verdict(rows, args.warmup, args.rss_slack_mib)


def verdict(rows: list[tuple[float, int, int, int]], warmup: int, slack: float) -> int:
    if len(rows) <= warmup + 1:
        print("too few rounds for a verdict (need more than --warmup + 1)")
        return 0
    base, last = rows[warmup], rows[-1]
    rss_growth, fd_growth = last[0] - base[0], last[1] - base[1]
    tensor_growth, object_growth = last[3] - base[3], last[2] - base[2]
    print(f"after warm-up (round {warmup + 1}) to round {len(rows)}: RSS {rss_growth:+.1f} MiB, "
          f"open files {fd_growth:+d}, Python objects {object_growth:+d}, tensors {tensor_growth:+d}")
    ok = fd_growth <= 0 and rss_growth <= slack
    print("OK: no growth in open files, RSS within the slack" if ok else "FAILED: growth after warm-up")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
