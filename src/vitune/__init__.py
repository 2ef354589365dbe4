"""vitune: parameter-efficient transfer learning for pretrained vision transformers."""

__version__ = "0.1.0"

from .api import apply, count_parameters, is_mergeable, merge, methods  # noqa: E402
from .errors import (  # noqa: E402
    AdapterFileError,
    BackboneError,
    ConfigError,
    NotMergeableError,
    UnknownMethodError,
    VituneError,
)
from .io import load_adapter, save_adapter  # noqa: E402

__all__ = [
    "AdapterFileError",
    "BackboneError",
    "ConfigError",
    "NotMergeableError",
    "UnknownMethodError",
    "VituneError",
    "apply",
    "count_parameters",
    "is_mergeable",
    "load_adapter",
    "merge",
    "methods",
    "save_adapter",
]
