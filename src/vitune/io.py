"""Adapter artifacts: ``adapter_config.json`` + ``adapter_model.safetensors``, nothing else.

Only the tensors training changes are written (see ``api.trainable_names``). Files are written atomically:
a crash while saving leaves the previous artifact intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import __version__
from .backbones import find_places
from .api import _reject_wrapped, _require_method, apply, applied_method, trainable_state
from .errors import AdapterFileError, ConfigError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "vitune-adapter"
FORMAT_VERSION = 1


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _num_classes(model: nn.Module, heads: tuple[str, ...]) -> int | None:
    for head in heads:
        linears = [m for m in model.get_submodule(head).modules() if isinstance(m, nn.Linear)]
        if linears:
            return linears[-1].out_features
    return None


def save_adapter(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Write the applied method's config and trained tensors to `folder`; returns the folder."""
    _reject_wrapped(model)
    method = _require_method(model, "save an adapter")
    folder = Path(folder)
    state = method.to_storage(model, dict(trainable_state(model)))
    tensors = {n: t.detach().to("cpu", copy=True).contiguous() for n, t in state.items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vitune_version": __version__,
        "method": method.name,
        "config": method.config.to_dict(),
        "backbone": {
            **method.places.describe(),
            "class": f"{type(model).__module__}.{type(model).__name__}",
            "architecture": (getattr(model, "pretrained_cfg", None) or {}).get("architecture"),
            "num_classes": _num_classes(model, method.places.heads),
        },
    }
    atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / CONFIG_NAME, lambda p: p.write_text(text))
    return folder


def read_adapter_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``adapter_config.json``; errors name the file and the line or key."""
    path = Path(folder) / CONFIG_NAME
    if not Path(folder).is_dir():
        raise AdapterFileError(f"{folder}: adapter folder not found")
    if not path.is_file():
        raise AdapterFileError(f"{path}: missing (an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterFileError(f"{path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise AdapterFileError(f"{path}: not a text file") from None
    if not isinstance(config, dict):
        raise AdapterFileError(f"{path}: expected a JSON object")
    for key, kind in (("method", str), ("config", dict), ("backbone", dict)):
        if not isinstance(config.get(key), kind):
            raise AdapterFileError(f"{path}: key {key!r} is missing or not a {kind.__name__}")
    if config.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise AdapterFileError(f"{path}: written by a newer vitune (format {config['format_version']})")
    return config


def _check_backbone(path: Path, saved: dict[str, Any], model: nn.Module, places) -> None:
    here = {**places.describe(), "num_classes": _num_classes(model, places.heads)}
    for key in ("family", "depth", "embed_dim", "num_classes"):
        if key in saved and saved[key] != here[key]:
            hint = (
                f"; create the model with num_classes={saved[key]}" if key == "num_classes" else ""
            )
            raise AdapterFileError(
                f"{path}: adapter was saved from a backbone with {key}={saved[key]!r}, "
                f"this model has {key}={here[key]!r}{hint}"
            )


def load_adapter(model: nn.Module, folder: str | os.PathLike) -> nn.Module:
    """Re-apply the saved method to a freshly created backbone and load its tensors; returns the model.

    The loaded model trains further exactly as the saved one did.
    """
    _reject_wrapped(model)
    folder = Path(folder)
    config = read_adapter_config(folder)
    config_path = folder / CONFIG_NAME
    if applied_method(model) is not None:
        raise AdapterFileError(f"{folder}: load the adapter into a plain backbone; this one already has a method")
    _check_backbone(config_path, config["backbone"], model, find_places(model))

    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise AdapterFileError(f"{weights_path}: missing")
    try:
        stored = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AdapterFileError(f"{weights_path}: not a readable safetensors file ({e})") from None

    try:
        apply(model, config["method"], **config["config"])
    except ConfigError as e:
        raise AdapterFileError(f"{config_path}: {e}") from None
    method = applied_method(model)
    state = method.from_storage(model, stored)
    expected = trainable_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise AdapterFileError(
            f"{weights_path}: tensors do not match method {config['method']!r} on this backbone"
            + (f"; missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + (f"; unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "")
        )
    for name, target in expected.items():
        if tuple(state[name].shape) != tuple(target.shape):
            raise AdapterFileError(
                f"{weights_path}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"this model expects {tuple(target.shape)} (was it saved from another backbone?)"
            )
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(state[name])
    return model
