"""A task folder opened for training and evaluation: :func:`open_task` and :class:`TaskData`.

The layout is detected from the folder (docs/data.md). Every split is checked when it is first asked for:
lines parse, labels lie in 0..C-1, every listed image exists and the split is not empty; each problem is a
:class:`vitune.errors.DataError` naming the file and line (or folder). An image that exists but cannot be
decoded is reported when the dataset item is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from ..errors import DataError
from .dataset import ImageListDataset
from .k_shot import KShotLayout
from .layouts import DETECTED_LAYOUTS, FewShotLayout, Layout
from .layouts.few_shot import available_lists, list_folder
from .sample import Sample


class TaskData:
    """One task: its layout, classes, splits and their samples. Made by :func:`open_task`.

    Attributes:
        root: the resolved task folder.
        name: the folder's name (``"cifar"``, ``"CUB_200_2011"``).
        layout: ``"vtab"``, ``"fgvc"``, ``"imagefolder"`` or ``"fewshot"``.
        num_classes: the head's size.
        splits: the split names present, e.g. ``("train800", "val200", "train800val200", "test")``.
        default_train, default_eval: the splits the benchmark's protocol trains and evaluates on.
        few_shot: the (shots, seed) pair of a few-shot task, else None.
    """

    def __init__(self, layout: Layout, few_shot: tuple[int, int] | None = None):
        self._layout = layout
        self.root: Path = layout.root
        self.name: str = layout.root.name
        self.layout: str = layout.name
        self.splits: tuple[str, ...] = tuple(layout.split_files)
        self.default_train: str = layout.default_train
        self.default_eval: str = layout.default_eval
        self.few_shot = few_shot
        self.num_classes, self._counted_by = layout.count_classes()
        self._checked: dict[str, list[Sample]] = {}

    def __repr__(self) -> str:
        return f"TaskData({str(self.root)!r}, layout={self.layout!r}, num_classes={self.num_classes})"

    def samples(self, split: str) -> list[tuple[Path, int]]:
        """The split's (image file, label) pairs, in file order, after every check."""
        return [(sample.path, sample.label) for sample in self._samples(split)]

    def dataset(self, split: str, transform: Callable[[Any], Any] | None = None, *,
                seed: int | None = None) -> ImageListDataset:
        """A torch Dataset of the split: items ``(transform(PIL RGB image), int label)``.

        `seed`: see :class:`ImageListDataset` (per-item random transforms, independent of workers)."""
        return ImageListDataset(self._samples(split), transform, seed=seed)

    def describe(self) -> dict[str, Any]:
        """What identifies the data of a run, JSON-ready, for its results."""
        return {
            "root": str(self.root),
            "name": self.name,
            "layout": self.layout,
            "num_classes": self.num_classes,
            "num_classes_from": self._counted_by,
            "splits": list(self.splits),
            "split_files": {s: os.path.relpath(f, self.root) for s, f in self._layout.split_files.items()},
            "default_train": self.default_train,
            "default_eval": self.default_eval,
            "few_shot": None if self.few_shot is None else {"shots": self.few_shot[0], "seed": self.few_shot[1]},
            **self._layout.extra(),
        }

    def _samples(self, split: str) -> list[Sample]:
        if split in self._checked:
            return self._checked[split]
        layout = self._layout
        if split not in layout.split_files:
            if split in layout.missing_files:
                raise DataError(f"split file missing: {layout.missing_files[split]} (split {split!r} of {self.root})")
            raise DataError(
                f"unknown split {split!r} for {self.root} ({self.layout} layout); splits: {', '.join(self.splits)}"
            )
        samples = layout.read(split)
        if not samples:
            raise DataError(f"{layout.split_files[split]}: split {split!r} is empty")
        limit = layout.known_limit()
        for sample in samples:
            if not 0 <= sample.label < self.num_classes:
                why = f" ({limit})" if limit else ""
                raise DataError(f"{sample.where}: label {sample.label} is outside 0..{self.num_classes - 1}{why}")
        for sample in samples:
            if not sample.path.is_file():
                raise DataError(f"{sample.where}: image not found: {sample.path}")
        self._checked[split] = samples
        return samples


def _few_shot_pair(few_shot: Any, name: str = "few_shot") -> tuple[int, int]:
    try:
        shots, seed = few_shot
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a (shots, seed) pair, got {few_shot!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (shots, seed)) or shots < 1 or seed < 0:
        raise DataError(f"{name} must be (shots >= 1, seed >= 0) integers, got {few_shot!r}")
    return shots, seed


def _no_layout(root: Path) -> DataError:
    if list_folder(root) is not None:
        pairs = ", ".join(f"({k}, {s})" for k, s in available_lists(list_folder(root)))
        return DataError(
            f"{root} holds NOAH few-shot lists: choose one with few_shot=(shots, seed) (present: {pairs})"
        )
    looked_for = (
        "VTAB-1k split files (train800.txt, val200.txt, train800val200.txt, test.txt), "
        "FGVC JSON splits (train.json, val.json, test.json), or an image folder (train/<class>/<image>)"
    )
    # a parent of task folders given by mistake; only cheap checks, the folder may hold thousands of entries
    inside = sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and (any(cls.detect(p) for cls in DETECTED_LAYOUTS) or (p / "annotations").is_dir())
    )
    hint = f"; it holds task folders: {', '.join(inside[:8])}{' ...' if len(inside) > 8 else ''}" if inside else ""
    return DataError(f"no data set layout recognised in {root}: expected {looked_for}{hint}")


def open_task(root: str | os.PathLike, few_shot: tuple[int, int] | None = None,
              k_shot: tuple[int, int] | None = None) -> TaskData:
    """Open the task folder `root`, detecting its layout (VTAB-1k, FGVC, image folder).

    Args:
        root: the task folder (e.g. ``vtab-1k/cifar``, ``FGVC/CUB_200_2011``).
        few_shot: ``(shots, seed)`` selects NOAH's ``train_meta.list.num_shot_<shots>.seed_<seed>`` of a
            few-shot task folder; None for the other layouts.
        k_shot: ``(K, seed)`` draws K images per class from the task's training split (k_shot.py: splits
            ``kshot``, ``kshot_train``, ``kshot_val``); None: the task as it is.

    Raises:
        DataError: a missing folder, no recognised layout, a missing few-shot list, or a split file that
            cannot be parsed (the message names the file and line).
    """
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"not a folder: {path} (give the task folder, e.g. vtab-1k/cifar)")
    path = path.resolve()
    if few_shot is not None:
        if k_shot is not None:
            raise DataError("give few_shot (NOAH's K-shot lists) or k_shot (K images per class drawn), not both")
        pair = _few_shot_pair(few_shot)
        return TaskData(FewShotLayout(path, *pair), few_shot=pair)
    for layout in DETECTED_LAYOUTS:
        if layout.detect(path):
            found = layout(path)
            return TaskData(found if k_shot is None else KShotLayout(found, *_few_shot_pair(k_shot, "k_shot")))
    raise _no_layout(path)
