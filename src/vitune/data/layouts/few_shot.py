"""NOAH's few-shot lists, as ``ZhangYuanhan-AI/NOAH`` ships them under ``data/few-shot/<task>/annotations/``.

::

    <task>/annotations/train_meta.list.num_shot_K.seed_S     K in 1, 2, 4, 8, 16; S in 0, 1, 2
    <task>/annotations/val_meta.list  test_meta.list
    <task>/images/<path in the list>      (most tasks; RepAdapter: images/train/ and images/test/)
    <task>/<path in the list>             (standford-cars: cars_train/..., cars_test/...)

RepAdapter's loader reads the same lists from the task folder itself (no ``annotations/``); both are
found. Lines are ``<image path> <label>``, the label after the last space. One (K, S) list is chosen by
``open_task(root, few_shot=(K, S))``; the split names are the file names.
"""

from __future__ import annotations

import re
from pathlib import Path
from ...errors import DataError
from ..known import KNOWN_FEW_SHOT_CLASSES
from ..list_file import ListEntry, parse_list_file
from ..sample import Sample, at_line
from .base import Layout, resolve_image_base

VAL_LIST = "val_meta.list"
TEST_LIST = "test_meta.list"
_TRAIN_LIST = re.compile(r"train_meta\.list\.num_shot_(\d+)\.seed_(\d+)")


def train_list_name(shots: int, seed: int) -> str:
    return f"train_meta.list.num_shot_{shots}.seed_{seed}"


def list_folder(root: Path) -> Path | None:
    """Where the few-shot lists are: ``annotations/`` (NOAH) or the task folder (RepAdapter); None if nowhere."""
    for folder in (root / "annotations", root):
        if folder.is_dir() and any(_TRAIN_LIST.fullmatch(p.name) for p in folder.iterdir()):
            return folder
    return None


def available_lists(folder: Path) -> list[tuple[int, int]]:
    """The (shots, seed) pairs that have a train list in `folder`, sorted."""
    found = (_TRAIN_LIST.fullmatch(p.name) for p in folder.iterdir())
    return sorted((int(m.group(1)), int(m.group(2))) for m in found if m)


class FewShotLayout(Layout):
    name = "fewshot"

    def __init__(self, root: Path, shots: int, seed: int):
        super().__init__(root)
        folder = list_folder(root)
        if folder is None:
            raise DataError(
                f"{root}: few_shot=({shots}, {seed}) asks for NOAH few-shot lists, but neither {root / 'annotations'}"
                f" nor {root} holds a train_meta.list.num_shot_K.seed_S file"
            )
        self.shots, self.seed = shots, seed
        self.list_folder = folder
        train = folder / train_list_name(shots, seed)
        if not train.is_file():
            present = ", ".join(f"({k}, {s})" for k, s in available_lists(folder))
            raise DataError(f"few-shot list missing: {train} (lists present for (shots, seed): {present})")
        self.split_files[train.name] = train
        for name in (VAL_LIST, TEST_LIST):
            file = folder / name
            (self.split_files if file.is_file() else self.missing_files)[name] = file
        self.default_train = train.name
        if TEST_LIST in self.split_files:
            self.default_eval = TEST_LIST
        elif VAL_LIST in self.split_files:
            self.default_eval = VAL_LIST
        else:
            raise DataError(f"{folder}: no {TEST_LIST} or {VAL_LIST} to evaluate on")
        self._entries: dict[str, list[ListEntry]] = {}

    @classmethod
    def detect(cls, root: Path) -> bool:
        return list_folder(root) is not None

    def _parsed(self, split: str) -> list[ListEntry]:
        if split not in self._entries:
            self._entries[split] = parse_list_file(self.split_files[split])
        return self._entries[split]

    def count_classes(self) -> tuple[int, str]:
        known = KNOWN_FEW_SHOT_CLASSES.get(self.root.name)
        if known is not None:
            return known, "known few-shot task"
        labels = [entry.label for split in self.split_files for entry in self._parsed(split)]
        if not labels:
            raise DataError(f"{self.list_folder}: the few-shot lists hold no samples")
        return max(labels) + 1, "largest label + 1"

    def known_limit(self) -> str:
        name = self.root.name
        if name in KNOWN_FEW_SHOT_CLASSES:
            return f"{name} is a few-shot task of {KNOWN_FEW_SHOT_CLASSES[name]} classes"
        return ""

    def read(self, split: str) -> list[Sample]:
        file = self.split_files[split]
        entries = self._parsed(split)
        if not entries:
            return []
        images = self.root / "images"
        # NOAH: one images/ folder; RepAdapter: images/train/ and images/test/; cars: the task folder
        own = images / ("test" if split == TEST_LIST else "train")
        base = resolve_image_base(file, entries[0].line, entries[0].image, (images, own, self.root))
        return [Sample(base / e.image, e.label, at_line(file, e.line)) for e in entries]
