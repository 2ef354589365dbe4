"""Opening images: PIL, converted to RGB (VTAB and FGVC hold grayscale and palette images)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from ..errors import DataError

__all__ = ["IMG_EXTENSIONS", "is_image_file", "load_rgb"]


def is_image_file(path: str | Path) -> bool:
    """True for the extensions torchvision's ImageFolder reads (any case)."""
    return has_file_allowed_extension(str(path), IMG_EXTENSIONS)


def load_rgb(path: Path, where: str) -> Image.Image:
    """Read the whole image now (a truncated file fails here, not later in a transform) as RGB.

    `where` names the split file and line (or the folder) that lists the image, for the error message.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # OSError covers unidentified, truncated and vanished files; PIL raises the others on corrupt headers
        raise DataError(f"cannot read image {path} ({where}): {exc}") from exc
