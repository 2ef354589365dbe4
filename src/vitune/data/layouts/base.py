"""What every on-disk layout provides to :class:`vitune.data.TaskData`.

A layout knows its files: which splits exist, which are the defaults, how the classes are counted and how
a split's lines become :class:`Sample` records. The checks common to all layouts (labels in 0..C-1,
images present, no empty split) are done once, in :class:`TaskData`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

from ...errors import DataError
from ..sample import Sample, at_line


class Layout:
    """One task folder read in one layout. Subclasses set ``name`` and fill the attributes in ``__init__``."""

    name: ClassVar[str]

    def __init__(self, root: Path):
        self.root = root
        # split name -> the file (or folder) it is read from, for the splits present, in display order
        self.split_files: dict[str, Path] = {}
        # split names of this layout whose file is missing -> the file expected, for "missing" errors
        self.missing_files: dict[str, Path] = {}
        self.default_train = ""
        self.default_eval = ""

    @classmethod
    def detect(cls, root: Path) -> bool:
        """True if `root` looks like this layout."""
        raise NotImplementedError

    def count_classes(self) -> tuple[int, str]:
        """The number of classes and how it was counted (recorded in ``describe()``)."""
        raise NotImplementedError

    def read(self, split: str) -> list[Sample]:
        """The split's samples: lines parsed, paths resolved, labels final; existence and range not yet checked."""
        raise NotImplementedError

    def known_limit(self) -> str:
        """Why labels must stay below the class count, when that count did not come from the labels."""
        return ""

    def extra(self) -> dict[str, Any]:
        """Layout-specific entries for ``describe()``."""
        return {}


def resolve_image_base(file: Path, first_line: int | None, first_image: str, candidates: Sequence[Path]) -> Path:
    """The folder a split file's image paths are relative to: the first of `candidates` holding its first image.

    Data sets in one layout differ here (VPT's FGVC sets keep images under ``images/`` or the task folder),
    so the folder is found from the data; every other image of the split must then exist under the same one.
    """
    for base in candidates:
        if (base / first_image).is_file():
            return base
    tried = ", ".join(str(base / first_image) for base in candidates)
    raise DataError(f"{at_line(file, first_line)}: image {first_image!r} not found (looked for {tried})")
