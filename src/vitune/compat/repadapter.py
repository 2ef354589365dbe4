"""RepAdapter's README usage API, on vitune's RepAdapter layers.

Change ``from repadapter import set_repadapter, save_repadapter, load_repadapter`` to
``from vitune.compat.repadapter import ...`` and the README's steps run as written. Like the originals these
work on any model made of ``nn.Linear`` layers (not only timm ViTs). Differences, all deliberate:

- files are safetensors whatever their suffix (the original pickles a dict with ``torch.save``);
- ``save_repadapter`` neither moves the model to the CPU nor switches it to eval mode (the original does both);
- loading checks every tensor and names the missing or mis-shaped one (the original raises a bare KeyError).

For new code prefer ``vitune.apply(model, "repadapter", pattern=...)``: it also freezes the backbone, keeps the
head trainable, and saves the head with the adapter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import AdapterFileError
from ..atomic import atomic_write
from ..layers.repadapter import RepAdapterLinear
from ..surgery import replace_module

# The original helpers' adapter: hidden width 8, two groups, dropout 0.1, scale 1.
DEFAULTS = dict(r=8, groups=2, dropout=0.1, scale=1.0)
_KEY = f".{RepAdapterLinear.adapter_name}."


def _wrapped_layers(model: nn.Module) -> list[tuple[str, RepAdapterLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, RepAdapterLinear)]


def set_repadapter(model: nn.Module, pattern: str | None = None) -> int:
    """Put a RepAdapter on the input of every ``nn.Linear`` whose name does not contain ``head`` or, with
    `pattern`, of those whose dotted name matches it (``re.match``). Returns the number of layers wrapped.
    Layers already wrapped are left alone."""
    regex = re.compile(pattern) if pattern is not None else None
    inside = {f"{n}.base_layer" for n, _ in _wrapped_layers(model)}
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and name not in inside
        and (regex.match(name) if regex is not None else "head" not in name)
    ]
    for name in targets:
        replace_module(model, name, RepAdapterLinear(model.get_submodule(name), **DEFAULTS))
    model.train(model.training)  # the new adapters take the model's train/eval mode
    return len(targets)


def save_repadapter(path: str | os.PathLike, model: nn.Module) -> None:
    """Write the RepAdapter tensors (only those) of `model` to `path`, atomically, as safetensors."""
    tensors = {
        n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if _KEY in n
    }
    if not tensors:
        raise ValueError("the model has no RepAdapter layers: call set_repadapter(model) first")
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))


def load_repadapter(load_path: str | os.PathLike, model: nn.Module) -> None:
    """Load the RepAdapter tensors saved by ``save_repadapter`` into a model prepared by ``set_repadapter``."""
    params = {n: p for n, p in model.named_parameters() if _KEY in n}
    if not params:
        raise ValueError("the model has no RepAdapter layers: call set_repadapter(model) before loading")
    try:
        stored = load_file(str(load_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterFileError(f"{load_path}: not a readable RepAdapter file ({e})") from None
    missing = sorted(set(params) - set(stored))
    if missing:
        raise AdapterFileError(f"{load_path}: no tensor for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    with torch.no_grad():
        for name, p in params.items():
            if stored[name].shape != p.shape:
                raise AdapterFileError(
                    f"{load_path}: {name} has shape {tuple(stored[name].shape)}, the model expects {tuple(p.shape)}"
                )
            p.copy_(stored[name])


def merge_repadapter(model: nn.Module, load_path: str | os.PathLike | None = None,
                     has_loaded: bool = False) -> nn.Module:
    """Re-parameterise: fold every RepAdapter into the linear layer it feeds, leaving plain ``nn.Linear``s.

    With `load_path` and ``has_loaded=False`` the adapters are first inserted and loaded from that file.
    Returns the model.
    """
    if load_path is not None and not has_loaded:
        set_repadapter(model)
        load_repadapter(load_path, model)
    with torch.no_grad():
        for name, layer in _wrapped_layers(model):
            replace_module(model, name, layer.merged())
    return model
