"""The public API: apply a method, count, disable, merge. Saving and loading live in io.py."""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Any, Iterator

import torch
from torch import nn

from .backbones import find_family, find_places
from .backbones.identity import backbone_identity
from .errors import NotMergeableError, VituneError
from .layers.base import VituneModule
from .methods import Method, get_method
from .methods.base import method_buffers, method_parameters, vitune_modules
from .surgery import ModelSnapshot, remove_module, replace_module

# The applied method lives on the model as a plain attribute: not a module, so not in the state_dict.
_ATTR = "vitune_method"


def is_mergeable(name_or_model: str | nn.Module) -> bool:
    """Whether a method folds into the backbone's weights: a method name (its merge rule), or a model
    (the method applied to it, with its config)."""
    if isinstance(name_or_model, nn.Module):
        return _require_method(unwrap(name_or_model), "tell whether it merges").is_mergeable()
    cls = get_method(name_or_model)
    return cls(cls.Config()).is_mergeable()


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel, DataParallel and ``torch.compile`` wrappers.

    Every public function goes through here, so a wrapped model is handled in one place.
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def applied_method(model: nn.Module) -> Method | None:
    """The method applied to `model`, or None for a plain backbone."""
    return getattr(unwrap(model), _ATTR, None)


def _require_method(model: nn.Module, what: str) -> Method:
    method = applied_method(model)
    if method is None:
        raise VituneError(f"cannot {what}: no vitune method is applied to this model (call vitune.apply first)")
    return method


def apply(model: nn.Module, name: str, **config: Any) -> nn.Module:
    """Insert method `name` into `model` in place and return `model`.

    The backbone is frozen; the method's parameters and the classifier head are left trainable. All or
    nothing: if anything fails, the model is left exactly as it was. A ``torch.compile``d or DataParallel
    model is adapted inside its wrapper; a DistributedDataParallel model is refused (its gradient reducer
    was built from the parameters it had: apply the method first, then wrap).
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise VituneError(
            "apply the method before wrapping the model in DistributedDataParallel: DDP builds its gradient "
            "reducer from the parameters the model has when it is wrapped"
        )
    bare = unwrap(model)
    current = applied_method(bare)
    if current is not None:
        raise VituneError(f"this model already has method {current.name!r}; vitune applies one method per model")
    cls = get_method(name)
    method = cls(cls.Config.from_dict(config, method=name))
    places = find_places(bare)
    method.places = places
    method.backbone_identity = backbone_identity(bare, places)
    snapshot = ModelSnapshot(bare)
    try:
        for p in bare.parameters():
            p.requires_grad_(False)
        method.inject(bare, places)
        for _, module in vitune_modules(bare):  # inserted modules start in training mode; give them the model's
            module.train(bare.training)
        object.__setattr__(bare, _ATTR, method)
        params = dict(bare.named_parameters())
        for tensor_name in trainable_names(bare):
            if tensor_name in params:
                params[tensor_name].requires_grad_(True)
        method.original_values = _original_values(bare, method)
    except BaseException:
        snapshot.restore()
        raise
    return model


def _original_values(model: nn.Module, method: Method) -> dict[str, torch.Tensor]:
    """Copies of the backbone parameters the method trains in place (BitFit's biases), for disable_adapter."""
    if not method.can_disable:
        return {}
    params = dict(model.named_parameters())
    names = [*method.claimed_parameters(model), *method.extra_parameters(model)]
    return {n: params[n].detach().clone() for n in dict.fromkeys(names)}


@contextlib.contextmanager
def disable_adapter(model: nn.Module) -> Iterator[nn.Module]:
    """Run the plain backbone, with the trained head, inside a ``with`` block; the adapter is back after it.

    Inserted modules compute only their backbone part, and backbone parameters the method trains in place
    (BitFit's biases, Consolidator's norms) hold their original values meanwhile. Like PEFT's
    ``disable_adapter``: compare with and without the adapter without reloading anything.
    """
    bare = unwrap(model)
    method = _require_method(bare, "disable the adapter")
    if not method.can_disable:
        reason = method.cannot_disable_reason or "it keeps no copy of the weights it changes"
        raise VituneError(f"method {method.name!r} cannot be disabled: {reason}")
    params = dict(bare.named_parameters())
    modules = [m for _, m in vitune_modules(bare)]
    flags = [m.adapter_disabled for m in modules]
    trained = {}
    with torch.no_grad():
        for name, original in method.original_values.items():
            trained[name] = params[name].detach().clone()
            params[name].copy_(original)
    for module in modules:
        module.adapter_disabled = True
    try:
        yield model
    finally:
        for module, flag in zip(modules, flags):
            module.adapter_disabled = flag
        with torch.no_grad():
            for name, value in trained.items():
                params[name].copy_(value)


def head_names(model: nn.Module) -> list[str]:
    """Names of the classifier head's parameters."""
    model = unwrap(model)
    method = applied_method(model)
    places = method.places if method is not None else find_places(model)
    return places.head_parameter_names(model)


def trainable_names(model: nn.Module) -> list[str]:
    """Names of everything training changes: method, claimed and extra parameters, the head, and
    the buffers of the method's modules and the head (a BatchNorm head's running statistics)."""
    model = unwrap(model)
    method = _require_method(model, "list trainable tensors")
    names = [n for n, _ in method_parameters(model)]
    names += list(method.claimed_parameters(model))
    names += list(method.extra_parameters(model))
    names += head_names(model)
    names += [n for n, _ in method_buffers(model)]
    for head in method.places.heads:
        names += [f"{head}.{n}" for n, _ in model.get_submodule(head).named_buffers()]
    return list(dict.fromkeys(names))  # unique, in order


def trainable_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) for everything that trains, the head included: what an optimizer should get."""
    for name, p in unwrap(model).named_parameters():
        if p.requires_grad:
            yield name, p


def parameter_groups(model: nn.Module, weight_decay: float, *, filter_bias_and_bn: bool = True) -> list[dict]:
    """Optimizer parameter groups over the trainable parameters: ``torch.optim.AdamW(groups, lr=...)``.

    As timm's optimizer factory groups them (``timm.optim.param_groups_weight_decay``, which this calls):
    weight decay 0 for 1-D tensors and biases (norms, SSF's scales and shifts, ARC's scales) and for the names
    the model's modules list in ``no_weight_decay()`` (timm's ViT: position embedding, class and register
    tokens; vitune's prompt tokens), `weight_decay` for the rest. A ``no_weight_decay()`` name given in the
    stock model's terms still finds its parameter when a vitune module wraps the module holding it
    (``blocks.0.norm1.weight`` is ``blocks.0.block.norm1.weight`` inside VPT's prompt wrapper).

    ``filter_bias_and_bn=False`` (timm's flag, a recipe key): one group, `weight_decay` on every trainable
    tensor, as the official RepAdapter and VPT codes train.
    """
    from timm.optim import param_groups_weight_decay  # timm.optim imports every optimizer: load it when used

    model = unwrap(model)
    if not filter_bias_and_bn:
        return [{"params": [p for _, p in trainable_parameters(model)], "weight_decay": weight_decay}]
    return param_groups_weight_decay(model, weight_decay=weight_decay,
                                     no_weight_decay_list=_no_weight_decay_names(model))


def _no_weight_decay_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that a module's ``no_weight_decay()`` lists (timm's convention: names
    relative to that module, ``fnmatch`` patterns allowed), matched by their own name or their stock name."""
    model = unwrap(model)
    patterns: set[str] = set()
    for path, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            for prefix in dict.fromkeys((path, _stock_name(model, path))):
                patterns.update(f"{prefix}.{n}" if prefix else n for n in declared())
    return [
        name
        for name, _ in trainable_parameters(model)
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in {name, _stock_name(model, name)}
               for pattern in patterns)
    ]


def _stock_name(model: nn.Module, name: str) -> str:
    """`name` as in the backbone before vitune: without the path parts that step into a wrapped child
    (``blocks.0.block.norm1.weight`` -> ``blocks.0.norm1.weight`` under a prompt wrapper)."""
    kept = []
    module: nn.Module | None = model
    for part in name.split(".") if name else ():
        wrapped = isinstance(module, VituneModule) and part in module.wrapped
        if not wrapped:
            kept.append(part)
        module = module._modules.get(part) if module is not None else None
    return ".".join(kept)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    model = unwrap(model)
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    return {n: tensors[n] for n in trainable_names(model)}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``method`` (added or claimed by the method), ``extra`` (backbone parameters trained
    alongside the method but not its own: Consolidator's biases and LayerNorms, ``Method.extra_parameters``),
    ``head`` (the classifier), ``trainable`` (everything that requires grad) and ``total``.

    On a model as ``apply`` (or ``load_adapter``) leaves it, ``method + extra + head == trainable``. A plain
    backbone counts 0 method and 0 extra parameters, and everything as trainable.
    """
    model = unwrap(model)
    method = applied_method(model)
    params = dict(model.named_parameters())  # shared parameters appear once
    method_names: list[str] = []
    extra_names: list[str] = []
    if method is not None:
        method_names = [n for n, _ in method_parameters(model)] + list(method.claimed_parameters(model))
        own = set(method_names)
        extra_names = [n for n in method.extra_parameters(model) if n not in own]
    return {
        "method": _numel(params, method_names),
        "extra": _numel(params, extra_names),
        "head": _numel(params, head_names(model)),
        "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
        "total": sum(p.numel() for p in params.values()),
    }


def _numel(params: dict[str, nn.Parameter], names: list[str]) -> int:
    return sum(params[n].numel() for n in dict.fromkeys(names))


def merge(model: nn.Module) -> nn.Module:
    """Fold the method into the backbone's weights, in place; no vitune module is left.

    Afterwards every module is the backbone's own class and ``state_dict()`` has the stock model's keys
    (plus any bias the merge had to add to a bias-less layer, and zero biases to the rest of a group one
    constructor flag covers: ``merged_model_args`` names the flags that rebuild such a model). Returns
    `model` (a compiled or DataParallel wrapper stays around it).
    """
    wrapper, model = model, unwrap(model)
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
        find_family(model).complete_merge(model)
    object.__delattr__(model, _ATTR)
    return wrapper


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> None:
    """Activation checkpointing on or off: each block recomputes its activations in backward, for the same
    gradients at a fraction of the memory. timm's ``set_grad_checkpointing`` on timm models, transformers'
    activation checkpointing on Hugging Face ones; before or after :func:`apply`."""
    model = unwrap(model)
    find_family(model).set_grad_checkpointing(model, enable)


def merged_model_args(model: nn.Module) -> dict:
    """Constructor arguments that rebuild this (merged) model with its family's factory: timm's
    ``qkv_bias=True`` after a merge gave bias-less qkv layers a bias. Empty when none are needed."""
    return find_family(unwrap(model)).merged_model_args(unwrap(model))
