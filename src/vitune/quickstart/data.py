"""The embedded data: 4,000 real Fashion-MNIST images shipped with vitune, written out as a VTAB-1k folder.

``fashion_mnist_subset.npz`` (beside this file; source and MIT licence in ``LICENSE.fashion-mnist``;
``scripts/make_fashion_subset.py`` regenerates it) holds 3,000 training images (300 per class) from the
official training file and 1,000 test images (100 per class) from the official test file, 28 x 28 uint8.

:func:`write_task` writes them as a task folder in the VTAB-1k (NOAH) layout, so training reads them through
the same ``open_task`` as any benchmark::

    <folder>/train800.txt  val200.txt  train800val200.txt  test.txt     "<path> <label>" lines
    <folder>/images/train/NNNNN.png  images/test/NNNNN.png             NNNNN: the row in the official file

The split files keep the layout's names; their sizes follow the subset: ``train800`` holds the first 80% of
each class's training images, ``val200`` the other 20%, ``train800val200`` all of them (the default training
split) and ``test`` the 1,000 held-out test images (the default evaluation split). A folder name that is not a
VTAB-1k task takes its class count (10) from the labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder
from ..errors import DataError

SUBSET = Path(__file__).with_name("fashion_mnist_subset.npz")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
VAL_FRACTION = 0.2
MARKER = "subset.json"  # in the written folder: what it was written from, so an unchanged folder is reused


def load_subset(path: str | os.PathLike = SUBSET) -> dict[str, np.ndarray]:
    """The arrays of the shipped subset: ``{train,test}_{images,labels,index}``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the embedded Fashion-MNIST subset ({e})") from None


def _take(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Positions of the first `per_class` items of each class (all when None), in their stored order."""
    if per_class is None:
        return np.arange(len(labels))
    rows = [np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))]
    return np.sort(np.concatenate(rows))


def _split_train(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train800, val200) positions: per class, the last VAL_FRACTION (at least one image when there are two
    or more) goes to validation."""
    train, val = [], []
    for c in range(len(CLASSES)):
        rows = np.flatnonzero(labels == c)
        n_val = max(1, round(len(rows) * VAL_FRACTION)) if len(rows) > 1 else 0
        train.append(rows[: len(rows) - n_val])
        val.append(rows[len(rows) - n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def write_task(folder: str | os.PathLike, *, train_per_class: int | None = None,
               test_per_class: int | None = None, subset: str | os.PathLike = SUBSET) -> Path:
    """Write the subset (or its first `train_per_class` / `test_per_class` images per class) as a VTAB-1k
    task folder; returns the folder. An existing folder written from the same file and counts is kept as it
    is; any other content is replaced in one atomic folder swap."""
    from PIL import Image

    folder = Path(folder)
    digest = hashlib.sha256(Path(subset).read_bytes()).hexdigest()
    marker = {"source": "Fashion-MNIST (Zalando SE, MIT), vitune's embedded subset", "subset_sha256": digest,
              "train_per_class": train_per_class, "test_per_class": test_per_class, "classes": list(CLASSES)}
    try:
        if json.loads((folder / MARKER).read_text(encoding="utf-8")) == marker:
            return folder
    except (OSError, ValueError):
        pass
    arrays = load_subset(subset)
    with atomic_folder(folder, keep=lambda entry: False) as tmp:
        lines: dict[str, list[str]] = {}
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            images, labels, index = (arrays[f"{split}_{k}"] for k in ("images", "labels", "index"))
            rows = _take(labels, per_class)
            (tmp / "images" / split).mkdir(parents=True)
            entries = []
            for row in rows:
                rel = f"images/{split}/{int(index[row]):05d}.png"
                Image.fromarray(images[row]).save(tmp / rel, format="PNG")
                entries.append(f"{rel} {int(labels[row])}")
            if split == "train":
                train, val = _split_train(labels[rows])
                lines["train800"] = [entries[i] for i in train]
                lines["val200"] = [entries[i] for i in val]
                lines["train800val200"] = entries
            else:
                lines["test"] = entries
        for name, entries in lines.items():
            (tmp / f"{name}.txt").write_text("".join(e + "\n" for e in entries), encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return folder
