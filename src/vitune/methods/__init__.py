"""Methods: one file each, all registered on import.

``vitune.methods`` is this package, and calling it lists the registered method names (``vitune.methods()``),
so both the documented call and ``vitune.methods.adaptformer.select_adapter(...)`` work.
"""

import importlib
import pkgutil
import sys
import types

from .base import Method, VituneModule
from .config import MethodConfig, option
from .registry import get_method, list_methods, register_method

_INFRASTRUCTURE = {"base", "config", "registry"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _INFRASTRUCTURE and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


class _CallablePackage(types.ModuleType):
    """The methods package, callable: ``vitune.methods()`` returns the registered method names."""

    def __call__(self) -> list[str]:
        return list_methods()


sys.modules[__name__].__class__ = _CallablePackage

__all__ = ["Method", "MethodConfig", "VituneModule", "get_method", "list_methods", "option", "register_method"]
