"""Linear probe: only the classifier head trains."""

from .base import Method
from .registry import register_method


@register_method
class LinearProbe(Method):
    name = "linear"
