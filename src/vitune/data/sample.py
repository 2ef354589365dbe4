"""One labelled image, with where it was listed, so that every later error can name the file and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """An image file, its class index (0..C-1) and where it comes from.

    Args:
        path: the image file.
        label: the class index the model sees.
        where: the place that lists it, for messages: ``"<split file>, line N"`` or the image's folder.
    """

    path: Path
    label: int
    where: str


def at_line(file: Path, line: int | None) -> str:
    """``"<file>, line N"``, the way every data error names a line (just the file when the line is unknown)."""
    return f"{file}, line {line}" if line is not None else str(file)
