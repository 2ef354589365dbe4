"""An image folder, as torchvision's ImageFolder reads it, one folder per split.

::

    <task>/train/<class>/<image>       (images may sit in sub-folders of a class folder)
    <task>/val/<class>/<image>         optional
    <task>/test/<class>/<image>        optional

The classes are the class folders of ``train/`` in sorted order; a class folder of ``val/`` or ``test/``
that ``train/`` lacks is an error (the head would have no output for it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..images import IMG_EXTENSIONS, is_image_file
from ..sample import Sample
from .base import Layout

FOLDER_SPLITS = ("train", "val", "test")


def class_folders(split_folder: Path) -> list[str]:
    """The class folder names of one split, sorted; hidden folders (``.ipynb_checkpoints``) are skipped."""
    return sorted(p.name for p in split_folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def images_in(folder: Path) -> list[Path]:
    """Every image file under `folder`, at any depth, in sorted order (as torchvision's make_dataset)."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [Path(parent) / name for name in sorted(files) if is_image_file(name)]
    return found


class ImageFolderLayout(Layout):
    name = "imagefolder"

    def __init__(self, root: Path):
        super().__init__(root)
        for split in FOLDER_SPLITS:
            folder = root / split
            (self.split_files if folder.is_dir() else self.missing_files)[split] = folder
        self.classes = class_folders(root / "train")
        if not self.classes:
            raise DataError(f"{root / 'train'}: no class folders (expected train/<class>/<image>)")
        for split in self.split_files:
            for name in class_folders(root / split):
                if name not in self.classes:
                    raise DataError(
                        f"{root / split / name}: class {name!r} has no folder in {root / 'train'} "
                        f"(classes: {', '.join(self.classes)})"
                    )
        self.default_train = "train"
        if "test" in self.split_files:
            self.default_eval = "test"
        elif "val" in self.split_files:
            self.default_eval = "val"
        else:
            raise DataError(f"{root}: no test/ or val/ folder to evaluate on")

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "train").is_dir()

    def count_classes(self) -> tuple[int, str]:
        return len(self.classes), "class folders of train/"

    def read(self, split: str) -> list[Sample]:
        samples = []
        folder = self.split_files[split]
        for label, name in enumerate(self.classes):
            class_folder = folder / name
            if not class_folder.is_dir():
                continue
            images = images_in(class_folder)
            if not images and split == "train":
                raise DataError(f"{class_folder}: no images (extensions {', '.join(IMG_EXTENSIONS)})")
            samples += [Sample(path, label, str(class_folder)) for path in images]
        return samples

    def extra(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}
