"""Small building blocks shared by several methods."""

from .wrapped_linear import WrappedLinear, WrappedModule

__all__ = ["WrappedLinear", "WrappedModule"]
