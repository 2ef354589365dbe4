"""FGVC in the VPT JSON layout (docs/data.md): each split a JSON object ``{relative image path: class id}``.

::

    <task>/train.json  val.json  test.json  [trainval.json]
    <task>/images/<path in the JSON>     (CUB-200-2011, NABirds)
    <task>/<path in the JSON>            (Oxford Flowers, Stanford Dogs, Stanford Cars)

Class ids are mapped to 0..C-1 in sorted order of the ids found in all splits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..list_file import read_split_text
from ..sample import Sample, at_line
from .base import Layout, resolve_image_base

FGVC_SPLITS = ("train", "val", "test", "trainval")
_REQUIRED = ("train", "val", "test")


def key_lines(text: str, keys: list[str]) -> list[int | None]:
    """The line on which each of `keys` is written in the JSON `text`, for keys in file order.

    One pass over the text: each key is looked for after the previous one. A key spelt with escapes that
    ``json.dumps`` does not produce (``\\/``, ``\\u0041``) gets None.
    """
    lines: list[int | None] = []
    position, line = 0, 1
    for key in keys:
        for spelling in (json.dumps(key), json.dumps(key, ensure_ascii=False)):
            at = text.find(spelling, position)
            if at >= 0:
                break
        if at < 0:
            lines.append(None)
            continue
        line += text.count("\n", position, at)  # a JSON string holds no raw newline
        position = at + len(spelling)
        lines.append(line)
    return lines


class _Object(list):
    """A JSON object as its (key, value) pairs, in file order, duplicates kept (``object_pairs_hook``)."""


def _shown(value: Any) -> str:
    return json.dumps(dict(value) if isinstance(value, _Object) else value)


@dataclass(frozen=True)
class JsonSplit:
    """One parsed split file: (image path, class id) pairs in file order and the line of each pair."""

    pairs: list[tuple[str, int]]
    lines: list[int | None]


def parse_json_split(file: Path) -> JsonSplit:
    """Parse one split file. A syntax error names the line and column; a value that is not an integer and
    an image given twice name the line of their entry."""
    text = read_split_text(file)
    try:
        pairs = json.loads(text, object_pairs_hook=_Object)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}, line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None
    if not isinstance(pairs, _Object):
        raise DataError(f"{file}: expected a JSON object {{image path: integer class id}}")
    lines = key_lines(text, [image for image, _ in pairs])
    seen: set[str] = set()
    for (image, class_id), line in zip(pairs, lines):
        if isinstance(class_id, bool) or not isinstance(class_id, int):
            raise DataError(f"{at_line(file, line)}: class id of {image!r} is {_shown(class_id)}, not an integer")
        if image in seen:
            raise DataError(f"{at_line(file, line)}: image {image!r} is listed twice")
        seen.add(image)
    return JsonSplit(pairs, lines)


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
        self.class_ids = sorted({cid for split in self._parsed.values() for _, cid in split.pairs})
        self._index = {cid: i for i, cid in enumerate(self.class_ids)}

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any((root / f"{split}.json").is_file() for split in FGVC_SPLITS)

    def count_classes(self) -> tuple[int, str]:
        if not self.class_ids:
            raise DataError(f"{self.root}: the split files hold no samples")
        return len(self.class_ids), "sorted unique class ids"

    def read(self, split: str) -> list[Sample]:
        file, parsed = self.split_files[split], self._parsed[split]
        if not parsed.pairs:
            return []
        first = parsed.pairs[0][0]
        base = resolve_image_base(file, parsed.lines[0], first, (self.root / "images", self.root))
        return [
            Sample(base / image, self._index[cid], at_line(file, line))
            for (image, cid), line in zip(parsed.pairs, parsed.lines)
        ]

    def extra(self) -> dict[str, Any]:
        return {"class_ids": list(self.class_ids)}
