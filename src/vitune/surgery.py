"""Module surgery: find, replace and remove submodules by their dotted path."""

from __future__ import annotations

from torch import nn


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, attr


def replace_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put `new` where `path` is and return the module it replaced."""
    parent, attr = _parent(model, path)
    old = parent.get_submodule(attr)
    setattr(parent, attr, new)  # Sequential/ModuleList children are attributes named "0", "1", ...
    return old


def remove_module(model: nn.Module, path: str) -> None:
    parent, attr = _parent(model, path)
    del parent._modules[attr]


def owner_module(model: nn.Module, tensor_name: str) -> nn.Module:
    """The module that directly holds the parameter or buffer `tensor_name`."""
    path, _, _ = tensor_name.rpartition(".")
    return model.get_submodule(path) if path else model
