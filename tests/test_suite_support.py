"""Shared pieces of the search, suite and report tests (no tests here): a tiny VTAB-1k benchmark and flags.

The benchmark holds one task per VTAB-1k group under real task names (cifar: Natural, 100-class head;
eurosat: Specialized, 10; clevr_count: Structured, 8), each with 3 colour classes, so group means are
exercised; a run on the tiny backbone takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from test_train_support import TINY_MODEL  # noqa: F401

BENCH_TASKS = ("cifar", "eurosat", "clevr_count")
# One epoch, data loading in this process: the quickest run that still learns the colours.
ONE_EPOCH = ["--epochs", "1", "--batch-size", "4", "--warmup-epochs", "0", "--lr", "0.01"]
TINY_FLAGS = {
    "method": "lora", "model": "vit_tiny_patch16_224",
    "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 32, "patch_size": 8},
    "epochs": 1, "batch_size": 4, "warmup_epochs": 0, "lr": 0.01, "workers": 0,
}


def make_benchmark(root: Path, tasks=BENCH_TASKS) -> Path:
    """A VTAB-1k root with the given task folders (8 images per split, 16 in train800val200)."""
    bench = Path(root) / "vtab-1k"
    for name in tasks:
        datasets.make_vtab(bench, name=name, n_per_split=8, num_classes=3)
    return bench
