"""The registry of methods: ``@register_method`` on each method class, looked up by name."""

from __future__ import annotations

import difflib

from ..errors import UnknownMethodError
from .base import Method

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if cls.name in _METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    try:
        return _METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), _METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownMethodError(
            f"unknown method {name!r}{hint}; registered methods: {', '.join(sorted(_METHODS))}"
        ) from None


def list_methods() -> list[str]:
    return sorted(_METHODS)
