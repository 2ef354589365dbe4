"""Split files of ``<relative image path> <integer label>`` lines (VTAB-1k's NOAH layout and NOAH's few-shot
lists), and reading any split file with errors that name it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ListEntry:
    """One line of a list file: its number (from 1), the image path as written and the label."""

    line: int
    image: str
    label: int


def read_split_text(path: Path) -> str:
    """The text of a split file; a missing or unreadable file is a DataError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"split file missing: {path}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc


def parse_list_file(path: Path) -> list[ListEntry]:
    """Parse every line of `path`; blank lines and surrounding whitespace are ignored.

    The label is the last whitespace-separated token, so an image path may contain spaces (NOAH's few-shot
    reader splits the same way). A line without a label, a label that is not an integer and a negative
    label are DataErrors naming the file and line.
    """
    entries = []
    for number, raw in enumerate(read_split_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(f"{path}, line {number}: expected '<image path> <integer label>', got {line!r}")
        image, token = parts
        if not _INTEGER.fullmatch(token):
            raise DataError(f"{path}, line {number}: label {token!r} is not an integer")
        label = int(token)
        if label < 0:
            raise DataError(f"{path}, line {number}: label {label} is negative")
        entries.append(ListEntry(number, image, label))
    return entries
