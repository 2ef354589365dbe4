"""ELEVATER-style K-shot sampling: K images per class drawn from a task's training split with a seed.

This is the few-shot protocol of the ELEVATER toolkit that KAdaptation/PEViT train with (docs/training.md):
the training split is shuffled with a seeded generator and the first K images of every class are kept; the
first ceil(K / 5) kept images of each class (a fifth, rounded up) are the validation split and the rest the
training split, and the final run trains on all K. Here the shuffle is Python's ``random.Random(seed)`` over
the split in file order, so the same folder, K and seed give the same list on any machine. A
class with fewer than K images in the split is an error naming the class and the file: the counts per class
are always exactly K.

:class:`KShotLayout` wraps a task's own layout (VTAB-1k, FGVC or an image folder) and adds three splits,
keeping the layout's name, classes, evaluation splits and transforms:

    kshot          K images per class                 the default training split
    kshot_train    K - ceil(K / 5) images per class   where a search trains its points
    kshot_val      ceil(K / 5) images per class       where a search scores them
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from .layouts.base import Layout
from .sample import Sample

KSHOT = "kshot"
KSHOT_TRAIN = "kshot_train"
KSHOT_VAL = "kshot_val"
K_SHOT_SPLITS = (KSHOT, KSHOT_TRAIN, KSHOT_VAL)
VAL_FRACTION = 0.2  # ELEVATER's val_split: a fifth of every class's shots


def val_per_class(shots: int) -> int:
    return math.ceil(shots * VAL_FRACTION)


@dataclass(frozen=True)
class KShotDraw:
    """The images one (K, seed) pair drew, each list in the source split's file order."""

    shots: int
    seed: int
    source_split: str
    train: list[Sample]
    val: list[Sample]
    every: list[Sample]  # train and val together

    def record(self, root: Path) -> dict[str, Any]:
        """JSON-ready: K, the seed, where the images came from, and every drawn image as [path, label]."""

        def listed(samples: list[Sample]) -> list[list[Any]]:
            return [[os.path.relpath(s.path, root), s.label] for s in samples]

        return {"shots": self.shots, "seed": self.seed, "source_split": self.source_split,
                "val_per_class": val_per_class(self.shots), "train": listed(self.train), "val": listed(self.val)}


def draw_k_shot(samples: Sequence[Sample], shots: int, seed: int, num_classes: int, source: str,
                where: Path) -> KShotDraw:
    """Draw K images per class from `samples` (a split, in file order) with `seed`.

    Raises:
        DataError: a class of 0..num_classes-1 has fewer than `shots` images; the message names the classes,
            the split and its file `where`.
    """
    counts = [0] * num_classes
    for sample in samples:
        if 0 <= sample.label < num_classes:
            counts[sample.label] += 1
    short = [(label, n) for label, n in enumerate(counts) if n < shots]
    if short:
        listed = ", ".join(f"class {label} has {n}" for label, n in short[:5]) + (" ..." if len(short) > 5 else "")
        raise DataError(
            f"{where}: k_shot=({shots}, {seed}) needs {shots} images of every class in split {source!r}, but "
            f"{listed} ({len(short)} of {num_classes} classes short); choose a smaller K"
        )
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    kept: dict[int, list[int]] = {label: [] for label in range(num_classes)}
    for index in order:
        label = samples[index].label
        if 0 <= label < num_classes and len(kept[label]) < shots:
            kept[label].append(index)
    n_val = val_per_class(shots)
    val = sorted(i for picks in kept.values() for i in picks[:n_val])
    train = sorted(i for picks in kept.values() for i in picks[n_val:])
    every = sorted(val + train)
    return KShotDraw(shots, seed, source, *([samples[i] for i in part] for part in (train, val, every)))


class KShotLayout(Layout):
    """A task's own layout plus the K-shot splits drawn from its default training split."""

    def __init__(self, inner: Layout, shots: int, seed: int):
        super().__init__(inner.root)
        self.name = inner.name  # the benchmark's layout: its transforms and evaluation splits stay the same
        self.inner, self.shots, self.seed = inner, shots, seed
        self.source_split = inner.default_train
        source_file = inner.split_files[self.source_split]
        self.split_files = {**inner.split_files, **{split: source_file for split in K_SHOT_SPLITS}}
        self.missing_files = dict(inner.missing_files)
        self.default_train = KSHOT
        self.default_eval = inner.default_eval
        self._draw: KShotDraw | None = None

    @classmethod
    def detect(cls, root: Path) -> bool:
        return False  # never detected: open_task(k_shot=(K, seed)) asks for it

    def count_classes(self) -> tuple[int, str]:
        return self.inner.count_classes()

    def known_limit(self) -> str:
        return self.inner.known_limit()

    def draw(self) -> KShotDraw:
        if self._draw is None:
            num_classes, _ = self.inner.count_classes()
            self._draw = draw_k_shot(self.inner.read(self.source_split), self.shots, self.seed, num_classes,
                                     self.source_split, self.split_files[KSHOT])
        return self._draw

    def read(self, split: str) -> list[Sample]:
        if split not in K_SHOT_SPLITS:
            return self.inner.read(split)
        draw = self.draw()
        if split == KSHOT_VAL:
            return draw.val
        if split == KSHOT_TRAIN:
            if not draw.train:
                raise DataError(
                    f"k_shot=({self.shots}, {self.seed}): K = {self.shots} leaves no image per class for "
                    f"{KSHOT_TRAIN} once {val_per_class(self.shots)} per class go to {KSHOT_VAL}; use K >= 2"
                )
            return draw.train
        return draw.every

    def extra(self) -> dict[str, Any]:
        return {**self.inner.extra(), "k_shot": self.draw().record(self.root)}
