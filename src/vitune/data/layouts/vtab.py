"""VTAB-1k in the NOAH layout (NOAH's data/vtab-source/get_vtab1k.py; docs/data.md): four split files of
``<relative path> <label>`` lines.

::

    <task>/train800.txt  val200.txt  train800val200.txt  test.txt
    <task>/images/<split>/NNNNNN.jpg          (paths in the files are relative to <task>)
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..known import KNOWN_VTAB_CLASSES
from ..list_file import ListEntry, parse_list_file
from ..sample import Sample, at_line
from .base import Layout

VTAB_SPLITS = ("train800", "val200", "train800val200", "test")


class VtabLayout(Layout):
    name = "vtab"

    def __init__(self, root: Path):
        super().__init__(root)
        for split in VTAB_SPLITS:
            file = root / f"{split}.txt"
            (self.split_files if file.is_file() else self.missing_files)[split] = file
        # the protocol of RepAdapter, ARC and Consolidator: fit on all 1000 labelled images, test once
        self.default_train = "train800val200"
        self.default_eval = "test"
        self._entries: dict[str, list[ListEntry]] = {}

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any((root / f"{split}.txt").is_file() for split in VTAB_SPLITS)

    def _parsed(self, split: str) -> list[ListEntry]:
        if split not in self._entries:
            self._entries[split] = parse_list_file(self.split_files[split])
        return self._entries[split]

    def count_classes(self) -> tuple[int, str]:
        known = KNOWN_VTAB_CLASSES.get(self.root.name)
        if known is not None:
            return known, "known VTAB-1k task"
        labels = [entry.label for split in self.split_files for entry in self._parsed(split)]
        if not labels:
            raise DataError(f"{self.root}: the split files hold no samples")
        return max(labels) + 1, "largest label + 1"

    def known_limit(self) -> str:
        name = self.root.name
        if name in KNOWN_VTAB_CLASSES:
            return f"{name} is a VTAB-1k task of {KNOWN_VTAB_CLASSES[name]} classes"
        return ""

    def read(self, split: str) -> list[Sample]:
        file = self.split_files[split]
        return [Sample(self.root / e.image, e.label, at_line(file, e.line)) for e in self._parsed(split)]
