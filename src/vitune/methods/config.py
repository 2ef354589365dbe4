"""Method configs: dataclasses whose fields are the method's options, checked on the way in.

Each field carries ``metadata={"help": ...}``, the text that documents the option. Values coming from JSON
or the command line are checked against the field's annotation, and every error names the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Mapping, Union, get_args, get_origin

from ..errors import ConfigError


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check(value: Any, hint: Any, where: str) -> Any:
    """Return `value` converted to `hint` (lists become tuples), or raise ConfigError naming `where`."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _check(value, option, where)
            except ConfigError:
                pass  # the message below names every accepted type
        raise ConfigError(f"{where} must be {' or '.join(_describe(a) for a in args)}, got {value!r}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where} must be None, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            items = [_check(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        elif origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where} must have {len(args)} items, got {value!r}")
            items = [_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            inner = args[0] if args else Any
            items = [_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else list(items)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


@dataclasses.dataclass
class MethodConfig:
    """Base class of every method's config."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, method: str, source: str = "") -> "MethodConfig":
        """Build a config from user input; `source` (a file, a flag) prefixes every error message."""
        prefix = f"{source}: " if source else ""
        hints = typing.get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in known]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{prefix}unknown config key {key!r} for method {method!r}{hint}; "
                f"valid keys: {', '.join(known) or '(none)'}"
            )
        checked = {k: _check(v, hints[k], f"{prefix}{method}.{k}") for k, v in values.items()}
        try:
            return cls(**checked)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists)."""

        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def require(self, condition: bool, key: str, message: str) -> None:
        """For __post_init__ checks: raise ConfigError naming `key` when `condition` is false."""
        if not condition:
            raise ConfigError(f"{type(self).__name__}.{key}: {message}")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its help text."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)
