"""Small building blocks shared by several methods."""

from .wrapped_linear import WrappedLinear

__all__ = ["WrappedLinear"]
