"""Choosing which linear layers a method adapts: by role in every block, or by regular expression.

Where q, k and v are separate linears (Hugging Face's models), a method that needs one layer for several of them
(the whole ``qkv``, or KAdaptation's q and v) gets them joined into one (``layers/joined_linear.py``): the same
parameters and function as on timm's fused qkv, split back into the family's own layers when merging.
"""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from ..errors import BackboneError, ConfigError
from ..layers.joined_linear import JoinedSlice, join_linears
from ..surgery import replace_module
from .base import LINEAR_ROLES, BlockPlaces, ModelPlaces

QKV_ROLES = ("q", "k", "v")


def linear_targets(
    model: nn.Module,
    places: ModelPlaces,
    roles: Sequence[str] = (),
    pattern: str | None = None,
    *,
    join: bool = False,
) -> dict[str, tuple[slice, ...] | None]:
    """Map each targeted linear layer's path to the output slices to adapt (None: the whole output).

    With `pattern`, every ``nn.Linear`` whose dotted name matches it (``re.search``) is targeted, the
    classifier heads excepted; otherwise the given roles (q, k, v, qkv, proj, fc1, fc2) of every block.
    ``qkv`` of a block with separate q, k, v linears names the three of them, or, with `join`, one layer
    joining them (module surgery: call it only to wrap what it returns; merging splits the join again).
    """
    if pattern is not None:
        return _pattern_targets(model, places, pattern)
    unknown = [r for r in roles if r not in LINEAR_ROLES]
    if unknown:
        raise ConfigError(f"unknown target role {unknown[0]!r}; roles are {list(LINEAR_ROLES)}")
    if not roles:
        raise ConfigError("no target roles given")
    parts = [r for r in roles if r in QKV_ROLES]
    if "qkv" in roles and parts:  # q, k and v are parts of qkv even where they are layers of their own
        raise ConfigError(f"targets {list(roles)} name {parts[0]!r} and the layer holding it; pick one")
    targets: dict[str, list[slice] | None] = {}
    joins: list[BlockPlaces] = []
    for block in places.blocks:
        for role in dict.fromkeys(roles):
            if role == "qkv" and not block.qkv:
                separate = block.linears("qkv")
                if join:
                    joins.append(block)
                found = [(path, None) for path in separate]
            else:
                found = [block.linear(role)]
            for path, part in found:
                _add_target(targets, path, part, role, roles)
    resolved = {p: (tuple(s) if s is not None else None) for p, s in targets.items()}
    for block in joins:  # after every check: the surgery comes last
        for path in block.linears("qkv"):
            del resolved[path]
        resolved[joint_linear(model, block, ("qkv",))[0]] = None
    return resolved


def _add_target(targets: dict, path: str, part: slice | None, role: str, roles: Sequence[str]) -> None:
    if part is None:
        if targets.get(path):
            raise ConfigError(f"targets {list(roles)} name {role!r} and a part of it; pick one")
        targets[path] = None
    else:
        if path in targets and targets[path] is None:
            raise ConfigError(f"targets {list(roles)} name {role!r} and the layer holding it; pick one")
        targets.setdefault(path, []).append(part)


def _pattern_targets(model: nn.Module, places: ModelPlaces, pattern: str) -> dict[str, None]:
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
        raise ConfigError(f"pattern {pattern!r} matches no linear layer; their names look like {linears[:4]}")
    return found


def joint_linear(model: nn.Module, block: BlockPlaces, roles: Sequence[str]) -> tuple[str, dict[str, slice | None]]:
    """The path of one linear layer of `block` that computes every role in `roles`, and each role's slice of
    its output (None: all of it).

    One whole role (``proj``, ``fc1``, ``fc2``, ``qkv``) or several of q, k, v: timm's fused qkv holds them
    already; separate q, k, v linears are joined into one first (module surgery that merging undoes), in the
    order q, k, v, like a fused qkv.
    """
    if all(r in QKV_ROLES for r in roles) or tuple(roles) == ("qkv",):
        if block.qkv:
            return block.qkv, {r: block.linear(r)[1] for r in roles}
        path = _join_qkv(model, block)
        first = model.get_submodule(path.rpartition(".")[0])
        slices = dict(zip(QKV_ROLES, first.slices))
        return path, {r: (None if r == "qkv" else slices[r]) for r in roles}
    if len(roles) != 1:
        raise BackboneError(f"no single linear layer of {block.block} computes {list(roles)}")
    return block.linear(roles[0])[0], {roles[0]: None}


def _join_qkv(model: nn.Module, block: BlockPlaces) -> str:
    """Join `block`'s separate q, k, v linears (once) and return the joined layer's path."""
    paths = block.linears("qkv")
    joined_path = f"{paths[0]}.joined"
    if isinstance(model.get_submodule(paths[0]), JoinedSlice):
        return joined_path
    layers = [model.get_submodule(p) for p in paths]
    for path, layer in zip(paths, layers):
        if not isinstance(layer, nn.Linear):
            raise BackboneError(f"{path} is {type(layer).__name__}, expected the Linear holding q, k or v")
    if len({layer.in_features for layer in layers}) != 1:
        raise BackboneError(f"q, k and v of {block.block} read inputs of different widths; they cannot be joined")
    for path, stand_in in zip(paths, join_linears(layers)):
        replace_module(model, path, stand_in)
    return joined_path
