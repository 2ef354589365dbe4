"""Data for training and evaluation: task folders in the VTAB-1k, FGVC, image-folder and NOAH few-shot
layouts, and the benchmarks' transform recipes. Nothing here knows of methods, training or the CLI.

    task = open_task("vtab-1k/cifar")                       # layout detected from the folder
    train_tf, eval_tf, info = build_transforms(default_transform_kind(task.layout), img_size=224)
    train_set = task.dataset(task.default_train, train_tf)  # items: (tensor, label)

See docs/data.md.
"""

from .dataset import ImageListDataset
from .images import IMG_EXTENSIONS
from .known import KNOWN_FEW_SHOT_CLASSES, KNOWN_VTAB_CLASSES
from .task import TaskData, open_task
from .transforms import NORMALIZATIONS, TRANSFORM_KINDS, build_transforms, default_transform_kind, normalization

__all__ = [
    "IMG_EXTENSIONS",
    "KNOWN_FEW_SHOT_CLASSES",
    "KNOWN_VTAB_CLASSES",
    "NORMALIZATIONS",
    "TRANSFORM_KINDS",
    "ImageListDataset",
    "TaskData",
    "build_transforms",
    "default_transform_kind",
    "normalization",
    "open_task",
]
