"""Tiny, valid datasets written to disk in each layout vitune reads (docs/data.md), for tests.

Every image is a flat patch of its class's colour (hues spaced evenly around the colour wheel) with a
little per-image noise, so a tiny model learns any of these sets in a few steps. Labels cycle over the
classes (image i has label ``i % num_classes``), so a split of ``n_per_split >= num_classes`` images holds
every class. The same arguments always write the same bytes.

Each function returns the task folder to hand to ``vitune.data.open_task`` (or ``vitune train --data``).
"""

from __future__ import annotations

import colorsys
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

VTAB_SPLITS = ("train800", "val200", "train800val200", "test")


def class_colour(label: int, num_classes: int) -> tuple[int, int, int]:
    """The RGB colour of a class: hues evenly spaced, full saturation."""
    r, g, b = colorsys.hsv_to_rgb(label / max(num_classes, 1), 1.0, 0.9)
    return round(r * 255), round(g * 255), round(b * 255)


def write_image(path: Path, label: int, num_classes: int, size: int = 16, seed: int = 0) -> Path:
    """Write one `size` x `size` image of the class colour plus noise (format from the suffix)."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(class_colour(label, num_classes), dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


def make_vtab(root: str | os.PathLike, name: str = "cifar", n_per_split: int = 6, num_classes: int = 3,
              size: int = 16) -> Path:
    """A VTAB-1k task in the NOAH layout: ``root/name/{train800,val200,train800val200,test}.txt`` and
    ``root/name/images/<split>/NNNNNN.jpg``.

    train800, val200 and test get `n_per_split` images each; train800val200 gets 2 x `n_per_split` in its own
    image folder, as NOAH's script writes it. Labels are 0..num_classes-1. Note that a known VTAB-1k
    folder name gives the task that task's class count (``name="cifar"`` -> 100 classes, whatever the
    labels); pass another name (e.g. ``"tiny"``) to have the count come from the labels.
    """
    task = Path(root) / name
    seed = 0
    for split in VTAB_SPLITS:
        count = 2 * n_per_split if split == "train800val200" else n_per_split
        lines = []
        for i in range(count):
            label = i % num_classes
            rel = f"images/{split}/{i:06d}.jpg"
            write_image(task / rel, label, num_classes, size, seed)
            seed += 1
            lines.append(f"{rel} {label}\n")
        (task / f"{split}.txt").write_text("".join(lines))
    return task


def make_fgvc(root: str | os.PathLike, name: str = "CUB_200_2011", n_per_split: int = 6, num_classes: int = 3,
              size: int = 16, image_root: str = "images", class_ids: Sequence[int] | None = None,
              trainval: bool = True) -> Path:
    """An FGVC task in the VPT JSON layout: ``root/name/{train,val,test}.json`` (and ``trainval.json``
    when `trainval`), each ``{"<class folder>/<image>.jpg": class_id}``.

    Images lie under ``root/name/images/`` (``image_root="images"``, as CUB and NABirds) or directly under
    the task folder (``image_root="."``, as Flowers, Dogs and Cars). `class_ids` are the ids written to
    the JSON for classes 0..num_classes-1 (default: 0..num_classes-1); vitune maps the sorted ids back to
    0..C-1, so image i still has class ``i % num_classes``.
    """
    task = Path(root) / name
    ids = list(range(num_classes)) if class_ids is None else list(class_ids)
    if len(ids) != num_classes:
        raise ValueError(f"class_ids has {len(ids)} ids for {num_classes} classes")
    if sorted(ids) != ids:
        raise ValueError("class_ids must be increasing, so that class i keeps the i-th colour")
    base = task if image_root in ("", ".") else task / image_root
    entries: dict[str, dict[str, int]] = {}
    seed = 0
    for split in ("train", "val", "test"):
        entries[split] = {}
        for i in range(n_per_split):
            label = i % num_classes
            rel = f"{ids[label]:03d}.class_{ids[label]}/{split}_{i:04d}.jpg"
            write_image(base / rel, label, num_classes, size, seed)
            seed += 1
            entries[split][rel] = ids[label]
    if trainval:
        entries["trainval"] = {**entries["train"], **entries["val"]}
    for split, mapping in entries.items():
        (task / f"{split}.json").write_text(json.dumps(mapping, indent=1))
    return task


def make_imagefolder(root: str | os.PathLike, name: str = "shapes", n_per_split: int = 6, num_classes: int = 3,
                     size: int = 16, splits: Sequence[str] = ("train", "val", "test")) -> Path:
    """An image folder: ``root/name/<split>/class_<k>/<split>_NNNN.png`` for each split in `splits`
    (``"train"`` must be one of them). Class folder names sort in label order (class_0, class_1 ...)."""
    task = Path(root) / name
    seed = 0
    for split in splits:
        for i in range(n_per_split):
            label = i % num_classes
            write_image(task / split / f"class_{label}" / f"{split}_{i:04d}.png", label, num_classes, size, seed)
            seed += 1
    return task


def make_few_shot(root: str | os.PathLike, name: str = "pets_fs", shots: Sequence[int] = (1, 2),
                  seeds: Sequence[int] = (0,), num_classes: int = 3, n_test: int = 6, size: int = 16) -> Path:
    """A task in NOAH's few-shot layout: ``root/name/annotations/train_meta.list.num_shot_K.seed_S`` for each
    K in `shots` and S in `seeds`, ``val_meta.list`` and ``test_meta.list`` (lines ``<image> <label>``), with
    the images under ``root/name/images/``. A K-shot list holds K images per class. A known few-shot task
    name (``"oxford-pets"``) gives that task's class count; the default name does not."""
    task = Path(root) / name
    notes = task / "annotations"
    notes.mkdir(parents=True, exist_ok=True)
    per_class = max(shots) + max(seeds)  # enough images that seed S can start its K at offset S
    seed = 0
    by_class: list[list[str]] = [[] for _ in range(num_classes)]
    for i in range(per_class * num_classes):
        label = i % num_classes
        image = f"train_{i:04d}.jpg"
        write_image(task / "images" / image, label, num_classes, size, seed)
        seed += 1
        by_class[label].append(image)
    for k in shots:
        for s in seeds:
            lines = [f"{img} {label}\n" for label, imgs in enumerate(by_class) for img in imgs[s:s + k]]
            (notes / f"train_meta.list.num_shot_{k}.seed_{s}").write_text("".join(lines))
    # NOAH's val lists are drawn from the training images too
    (notes / "val_meta.list").write_text("".join(f"{imgs[-1]} {label}\n" for label, imgs in enumerate(by_class)))
    test_lines = []
    for i in range(n_test):
        label = i % num_classes
        write_image(task / "images" / f"test_{i:04d}.jpg", label, num_classes, size, seed)
        seed += 1
        test_lines.append(f"test_{i:04d}.jpg {label}\n")
    (notes / "test_meta.list").write_text("".join(test_lines))
    return task
