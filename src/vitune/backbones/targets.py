"""Choosing which linear layers a method adapts: by role in every block, or by regular expression."""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from ..errors import ConfigError
from .base import LINEAR_ROLES, ModelPlaces


def linear_targets(
    model: nn.Module,
    places: ModelPlaces,
    roles: Sequence[str] = (),
    pattern: str | None = None,
) -> dict[str, tuple[slice, ...] | None]:
    """Map each targeted linear layer's path to the output slices to adapt (None: the whole output).

    With `pattern`, every ``nn.Linear`` whose dotted name matches it (``re.search``) is targeted, the
    classifier heads excepted; otherwise the given roles (q, k, v, qkv, proj, fc1, fc2) of every block.
    """
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"pattern {pattern!r} is not a valid regular expression: {e}") from None
        linears = [
            name
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not places.in_head(name)
        ]
        found = {name: None for name in linears if regex.search(name)}
        if not found:
            raise ConfigError(
                f"pattern {pattern!r} matches no linear layer; their names look like {linears[:4]}"
            )
        return found

    unknown = [r for r in roles if r not in LINEAR_ROLES]
    if unknown:
        raise ConfigError(f"unknown target role {unknown[0]!r}; roles are {list(LINEAR_ROLES)}")
    if not roles:
        raise ConfigError("no target roles given")
    targets: dict[str, list[slice] | None] = {}
    for block in places.blocks:
        for role in roles:
            path, part = block.linear(role)
            if part is None:
                if targets.get(path):
                    raise ConfigError(f"targets {list(roles)} name {role!r} and a part of it; pick one")
                targets[path] = None
            else:
                if path in targets and targets[path] is None:
                    raise ConfigError(f"targets {list(roles)} name {role!r} and the layer holding it; pick one")
                targets.setdefault(path, []).append(part)
    return {p: (tuple(s) if s is not None else None) for p, s in targets.items()}
