"""Methods: one file each, all registered on import."""

import importlib
import pkgutil

from .base import Method, VituneModule
from .config import MethodConfig, option
from .registry import get_method, list_methods, register_method

_INFRASTRUCTURE = {"base", "config", "registry"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _INFRASTRUCTURE and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Method", "MethodConfig", "VituneModule", "get_method", "list_methods", "option", "register_method"]
