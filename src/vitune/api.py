"""The public API: apply a method, count, merge. Saving and loading live in io.py."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .backbones import find_places
from .errors import NotMergeableError, VituneError
from .methods import Method, get_method, list_methods
from .methods.base import method_buffers, method_parameters, vitune_modules
from .surgery import remove_module, replace_module

# The applied method lives on the model as a plain attribute: not a module, so not in the state_dict.
_ATTR = "vitune_method"


def methods() -> list[str]:
    """Names of all registered methods."""
    return list_methods()


def is_mergeable(name: str) -> bool:
    """Whether the method's update folds into the backbone's weights (with its default config)."""
    cls = get_method(name)
    return cls(cls.Config()).is_mergeable()


def _reject_wrapped(model: nn.Module) -> None:
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise VituneError("pass the bare model, not its DistributedDataParallel/DataParallel wrapper")


def applied_method(model: nn.Module) -> Method | None:
    """The method applied to `model`, or None for a plain backbone."""
    return getattr(model, _ATTR, None)


def _require_method(model: nn.Module, what: str) -> Method:
    method = applied_method(model)
    if method is None:
        raise VituneError(f"cannot {what}: no vitune method is applied to this model (call vitune.apply first)")
    return method


def apply(model: nn.Module, name: str, **config: Any) -> nn.Module:
    """Insert method `name` into `model` in place and return it.

    The backbone is frozen; the method's parameters and the classifier head are left trainable.
    """
    _reject_wrapped(model)
    current = applied_method(model)
    if current is not None:
        raise VituneError(f"this model already has method {current.name!r}; vitune applies one method per model")
    cls = get_method(name)
    method = cls(cls.Config.from_dict(config, method=name))
    places = find_places(model)
    method.places = places
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        method.inject(model, places)  # methods check everything before their first replacement
    except Exception:
        for p, flag in flags:
            p.requires_grad_(flag)
        raise
    model.train(model.training)  # inserted modules start in training mode; give them the model's mode
    object.__setattr__(model, _ATTR, method)
    params = dict(model.named_parameters())
    for tensor_name in trainable_names(model):
        if tensor_name in params:
            params[tensor_name].requires_grad_(True)
    return model


def head_names(model: nn.Module) -> list[str]:
    method = applied_method(model)
    if method is not None:
        return method.head_parameter_names(model)
    places = find_places(model)
    return [f"{h}.{n}" for h in places.heads for n, _ in model.get_submodule(h).named_parameters()]


def trainable_names(model: nn.Module) -> list[str]:
    """Names of everything training changes: method, claimed and extra parameters, the head, and
    the buffers of the method's modules and the head (a BatchNorm head's running statistics)."""
    method = _require_method(model, "list trainable tensors")
    names = [n for n, _ in method_parameters(model)]
    names += list(method.claimed_parameters(model))
    names += list(method.extra_parameters(model))
    names += head_names(model)
    names += [n for n, _ in method_buffers(model)]
    for head in method.places.heads:
        names += [f"{head}.{n}" for n, _ in model.get_submodule(head).named_buffers()]
    return list(dict.fromkeys(names))  # unique, in order


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {n: tensors[n] for n in trainable_names(model)}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``method`` (added or claimed by the method, head excluded), ``head``,
    ``trainable`` (everything that requires grad) and ``total``."""
    _reject_wrapped(model)
    method = applied_method(model)
    params = dict(model.named_parameters())  # shared parameters appear once
    n_method = 0
    if method is not None:
        names = [n for n, _ in method_parameters(model)] + list(method.claimed_parameters(model))
        n_method = sum(params[n].numel() for n in dict.fromkeys(names))
    return {
        "method": n_method,
        "head": sum(params[n].numel() for n in head_names(model)),
        "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
        "total": sum(p.numel() for p in params.values()),
    }


def merge(model: nn.Module) -> nn.Module:
    """Fold the method into the backbone's weights, in place; no vitune module is left.

    Afterwards every module is the backbone's own class and ``state_dict()`` has the stock model's keys.
    """
    _reject_wrapped(model)
    method = _require_method(model, "merge")
    if not method.is_mergeable():
        raise NotMergeableError(f"method {method.name!r} cannot be merged: {method.not_mergeable_reason}")
    # Innermost first, so a wrapper merges around already-merged children; shared holders (shallow) last.
    found = sorted(vitune_modules(model), key=lambda item: item[0].count("."), reverse=True)
    with torch.no_grad():
        for path, module in found:
            replacement = module.merged()
            if replacement is None:
                remove_module(model, path)
            else:
                replace_module(model, path, replacement)
    object.__delattr__(model, _ATTR)
    return model
