"""The on-disk layouts a task folder can be in, tried in this order by :func:`vitune.data.open_task`."""

from .base import Layout
from .few_shot import FewShotLayout
from .fgvc import FgvcLayout
from .image_folder import ImageFolderLayout
from .vtab import VtabLayout

# Few-shot lists are never detected on their own: they need open_task(few_shot=(shots, seed)).
DETECTED_LAYOUTS: tuple[type[Layout], ...] = (VtabLayout, FgvcLayout, ImageFolderLayout)

__all__ = ["DETECTED_LAYOUTS", "FewShotLayout", "FgvcLayout", "ImageFolderLayout", "Layout", "VtabLayout"]
