"""VTAB-1k's task groups, under the NOAH/RepAdapter/ARC folder names and Consolidator's (docs/data.md)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

GROUPS = ("Natural", "Specialized", "Structured")

# Folder name -> (group, the table's column order); both spellings of a task share a position.
_TASKS = (
    ("Natural", ("cifar", "cifar100")), ("Natural", ("caltech101",)), ("Natural", ("dtd",)),
    ("Natural", ("oxford_flowers102",)), ("Natural", ("oxford_iiit_pet", "oxford_pet")), ("Natural", ("svhn",)),
    ("Natural", ("sun397",)),
    ("Specialized", ("patch_camelyon",)), ("Specialized", ("eurosat",)), ("Specialized", ("resisc45",)),
    ("Specialized", ("diabetic_retinopathy",)),
    ("Structured", ("clevr_count",)), ("Structured", ("clevr_dist",)), ("Structured", ("dmlab",)),
    ("Structured", ("kitti",)), ("Structured", ("dsprites_loc",)), ("Structured", ("dsprites_ori",)),
    ("Structured", ("smallnorb_azi",)), ("Structured", ("smallnorb_ele",)),
)
VTAB_TASK_COUNT = len(_TASKS)
GROUP_SIZES: Mapping[str, int] = MappingProxyType(
    {g: sum(1 for group, _ in _TASKS if group == g) for g in GROUPS})
VTAB_GROUP: Mapping[str, str] = MappingProxyType({n: g for g, names in _TASKS for n in names})
_ORDER = {n: i for i, (_, names) in enumerate(_TASKS) for n in names}


def group_of(task: str) -> str | None:
    """The VTAB-1k group of a task folder name, or None for any other task."""
    return VTAB_GROUP.get(task)


def task_order(task: str) -> tuple[int, str]:
    """Sort key: VTAB-1k tasks in the papers' column order, then any other task by name."""
    return (_ORDER.get(task, len(_TASKS)), task)
