"""FGVC in the VPT JSON layout (methods.md 0.4): each split a JSON object ``{relative image path: class id}``.

::

    <task>/train.json  val.json  test.json  [trainval.json]
    <task>/images/<path in the JSON>     (CUB-200-2011, NABirds)
    <task>/<path in the JSON>            (Oxford Flowers, Stanford Dogs, Stanford Cars)

Class ids are mapped to 0..C-1 in sorted order of the ids found in all splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..list_file import read_split_text
from ..sample import Sample, at_line
from .base import Layout, resolve_image_base

FGVC_SPLITS = ("train", "val", "test", "trainval")
_REQUIRED = ("train", "val", "test")


def _line_of(text: str, key: str) -> int | None:
    """The line where `key` is written in the JSON `text` (None if it is spelt with unusual escapes)."""
    for spelling in (json.dumps(key), json.dumps(key, ensure_ascii=False)):
        at = text.find(spelling)
        if at >= 0:
            return text.count("\n", 0, at) + 1
    return None


def parse_json_split(file: Path) -> tuple[list[tuple[str, int]], str]:
    """The (image path, class id) pairs of one split file, in file order, and the file's text.

    A syntax error names the line and column; a value that is not an integer or a path given twice names
    the line of its entry.
    """
    text = read_split_text(file)
    try:
        pairs = json.loads(text, object_pairs_hook=lambda items: items)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}, line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(pairs, list) or any(not isinstance(p, tuple) for p in pairs):
        raise DataError(f"{file}: expected a JSON object {{image path: integer class id}}")
    seen: set[str] = set()
    for image, class_id in pairs:
        where = at_line(file, _line_of(text, image))
        if isinstance(class_id, bool) or not isinstance(class_id, int):
            raise DataError(f"{where}: class id of {image!r} is {json.dumps(class_id)}, not an integer")
        if image in seen:
            raise DataError(f"{where}: image {image!r} is listed twice")
        seen.add(image)
    return pairs, text


class FgvcLayout(Layout):
    name = "fgvc"

    def __init__(self, root: Path):
        super().__init__(root)
        for split in FGVC_SPLITS:
            file = root / f"{split}.json"
            if file.is_file():
                self.split_files[split] = file
            elif split in _REQUIRED:
                self.missing_files[split] = file
        self.default_train = "train"
        self.default_eval = "test"
        # every split is parsed now: the class map needs the ids of all of them
        self._parsed = {split: parse_json_split(file) for split, file in self.split_files.items()}
        self.class_ids = sorted({cid for pairs, _ in self._parsed.values() for _, cid in pairs})
        self._index = {cid: i for i, cid in enumerate(self.class_ids)}

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any((root / f"{split}.json").is_file() for split in FGVC_SPLITS)

    def count_classes(self) -> tuple[int, str]:
        if not self.class_ids:
            raise DataError(f"{self.root}: the split files hold no samples")
        return len(self.class_ids), "sorted unique class ids"

    def read(self, split: str) -> list[Sample]:
        file = self.split_files[split]
        pairs, text = self._parsed[split]
        if not pairs:
            return []
        first = pairs[0][0]
        base = resolve_image_base(file, _line_of(text, first), first, (self.root / "images", self.root))
        return [
            Sample(base / image, self._index[cid], at_line(file, _line_of(text, image))) for image, cid in pairs
        ]

    def extra(self) -> dict[str, Any]:
        return {"class_ids": list(self.class_ids)}
