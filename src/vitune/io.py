"""Adapter artifacts (``adapter_config.json`` + ``adapter_model.safetensors``) and merged-model export.

An adapter holds only the tensors training changes (see ``api.trainable_names``) and records the backbone it
was trained on (``backbones/identity.py``); loading refuses another backbone unless told otherwise. Saving
builds the new folder beside the old one and swaps it in atomically (``atomic.py``), so a reader, or a
process killed mid-save, sees the previous adapter or the new one, never new weights beside an old config.
Loading checks everything before it touches the model, and puts the model back if anything fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from . import __version__
from .api import _require_method, apply, applied_method, merged_model_args, trainable_state, unwrap
from .atomic import atomic_folder, recover_folder
from .backbones import find_places
from .backbones.identity import backbone_identity, identity_mismatch
from .methods import get_method
from .errors import AdapterFileError, ConfigError, UnknownMethodError, VituneError
from .surgery import ModelSnapshot

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "vitune-adapter"
# 1: backbone recorded as family/depth/embed_dim/num_classes. 2: full identity (architecture, pretrained tag,
# shapes, weights fingerprint) and the caller's `source`; version-1 files still load.
FORMAT_VERSION = 2


def save_adapter(model: nn.Module, folder: str | os.PathLike, *, source: dict[str, Any] | None = None) -> Path:
    """Write the applied method's config and trained tensors to `folder`; returns the folder.

    Args:
        model: a model with a vitune method applied (a compiled/DDP/DataParallel wrapper is fine).
        folder: the adapter folder; created if needed. A previous adapter there is replaced atomically.
        source: JSON-ready facts about how the backbone was built (timm name, model kwargs, weights file),
            recorded under ``backbone.source`` so tools can re-create the backbone from the folder alone.
    """
    model = unwrap(model)
    method = _require_method(model, "save an adapter")
    folder = Path(folder).resolve()
    if folder.is_dir() and any(entry.is_dir() for entry in folder.iterdir()):
        raise AdapterFileError(f"{folder}: holds sub-folders; save an adapter into a folder of its own")
    state = method.to_storage(model, dict(trainable_state(model)))
    tensors = {n: t.detach().to("cpu", copy=True).contiguous() for n, t in state.items()}
    backbone = dict(method.backbone_identity)  # taken by apply, before the method changed the model
    if source is not None:
        try:
            json.dumps(source)
        except (TypeError, ValueError) as e:
            raise VituneError(f"save_adapter: source must be JSON-ready ({e})") from None
        backbone["source"] = source
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vitune_version": __version__,
        "method": method.name,
        "config": method.config.to_dict(),
        "backbone": backbone,
    }
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    # Serialised in memory and written with open(), so the files get the usual permissions (umask applied).
    weights = save(tensors, metadata={"format": "pt", "vitune_method": method.name})
    with atomic_folder(folder) as tmp:
        (tmp / WEIGHTS_NAME).write_bytes(weights)
        (tmp / CONFIG_NAME).write_text(text, encoding="utf-8")
    return folder


def read_adapter_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``adapter_config.json``; errors name the file and the line or key."""
    folder = Path(folder)
    recover_folder(folder)
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise AdapterFileError(f"{folder}: adapter folder not found")
    config = _read_config_json(path)
    if config.get("format") != FORMAT:
        raise AdapterFileError(f"{path}: key 'format' is {config.get('format')!r}, not {FORMAT!r}: not a vitune adapter")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise AdapterFileError(f"{path}: key 'format_version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise AdapterFileError(
            f"{path}: written by a newer vitune (format_version {version}; this one reads up to {FORMAT_VERSION})"
        )
    for key, kind in (("method", str), ("config", dict), ("backbone", dict)):
        if not isinstance(config.get(key), kind):
            raise AdapterFileError(f"{path}: key {key!r} is missing or not a {'string' if kind is str else 'object'}")
    return config


def _read_config_json(path: Path) -> dict[str, Any]:
    """The JSON object of an adapter folder's config file (vitune's or PEFT's: the same file names)."""
    if not path.is_file():
        raise AdapterFileError(f"{path}: missing (an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AdapterFileError(f"{path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise AdapterFileError(f"{path}: not a text file") from None
    if not isinstance(config, dict):
        raise AdapterFileError(f"{path}: expected a JSON object")
    return config


def _check_backbone(path: Path, config: dict[str, Any], model: nn.Module, places) -> None:
    """Refuse a backbone other than the one the adapter was saved from, naming both."""
    saved = config["backbone"]
    if config["format_version"] >= 2:
        here = backbone_identity(model, places)
        problem = identity_mismatch(saved, here)
        if problem is not None:
            raise AdapterFileError(
                f"{path}: adapter was saved on another backbone: {problem}. Saved on "
                f"{saved.get('architecture') or saved.get('class')} (tag {saved.get('pretrained_tag')}), "
                f"this model is {here.get('architecture') or here.get('class')} (tag {here.get('pretrained_tag')}); "
                "pass check_backbone=False to load it anyway"
            )
        return
    here = places.describe()
    for key in ("family", "depth", "embed_dim"):
        if key in saved and saved[key] != here[key]:
            raise AdapterFileError(
                f"{path}: adapter was saved from a backbone with {key}={saved[key]!r}, this model has "
                f"{key}={here[key]!r}; pass check_backbone=False to load it anyway"
            )


def _check_head(path: Path, saved: dict[str, Any], model: nn.Module, places) -> None:
    expected, here = saved.get("num_classes"), places.num_classes(model)
    if expected is not None and expected != here:
        raise AdapterFileError(
            f"{path}: adapter was saved from a backbone with num_classes={expected!r}, this model has "
            f"num_classes={here!r}; create the model with num_classes={expected}"
        )


def _read_weights(path: Path, method: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, each checked to be finite; errors name the file and tensor."""
    if not path.is_file():
        raise AdapterFileError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AdapterFileError(f"{path}: not a readable safetensors file ({e})") from None
    stored_method = metadata.get("vitune_method")
    if stored_method is not None and stored_method != method:
        raise AdapterFileError(
            f"{path}: holds the tensors of method {stored_method!r}, but {CONFIG_NAME} names {method!r}"
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise AdapterFileError(f"{path}: tensor {name!r} has {bad} NaN or infinite values")
    return tensors


def _check_tensors(path: Path, method: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise AdapterFileError(
            f"{path}: tensors do not match method {method!r} on this backbone"
            + (f"; missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + (f"; unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "")
        )
    for name, target in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(target.shape):
            raise AdapterFileError(
                f"{path}: tensor {name!r} has shape {tuple(got.shape)}, this model expects {tuple(target.shape)} "
                "(was it saved from another backbone?)"
            )
        same_kind = got.dtype == target.dtype or (got.is_floating_point() and target.is_floating_point())
        if not same_kind:
            raise AdapterFileError(f"{path}: tensor {name!r} has dtype {got.dtype}, this model expects {target.dtype}")


def load_adapter(model: nn.Module, folder: str | os.PathLike, *, check_backbone: bool = True) -> nn.Module:
    """Re-apply the saved method to a freshly created backbone and load its tensors; returns the model.

    The loaded model trains further exactly as the saved one did. All or nothing: if the folder is bad, the
    backbone is another one, or any tensor does not fit, `model` is left exactly as it was.

    Args:
        model: a plain backbone (no method applied), built as the adapter's backbone was.
        folder: the adapter folder.
        check_backbone: refuse an adapter saved on another architecture or other pretrained weights
            (compared by name, pretrained tag, shapes and a fingerprint of the frozen weights).
    """
    wrapper, model = model, unwrap(model)
    folder = Path(folder)
    config = read_adapter_config(folder)
    config_path = folder / CONFIG_NAME
    if applied_method(model) is not None:
        raise AdapterFileError(f"{folder}: load the adapter into a plain backbone; this one already has a method")
    try:
        get_method(config["method"])
    except UnknownMethodError as e:
        raise AdapterFileError(f"{config_path}: {e}") from None
    places = find_places(model)
    _check_head(config_path, config["backbone"], model, places)
    if check_backbone:
        _check_backbone(config_path, config, model, places)
    weights_path = folder / WEIGHTS_NAME
    stored = _read_weights(weights_path, config["method"])

    snapshot = ModelSnapshot(model)
    try:
        try:
            apply(model, config["method"], **config["config"])
        except (ConfigError, UnknownMethodError) as e:
            raise AdapterFileError(f"{config_path}: {e}") from None
        method = applied_method(model)
        state = method.from_storage(model, stored)
        expected = trainable_state(model)
        _check_tensors(weights_path, config["method"], state, expected)
        with torch.no_grad():
            for name, target in expected.items():
                target.copy_(state[name])
        # Claimed backbone tensors (BitFit's biases) were copied at apply time as the originals to restore
        # in disable_adapter: they still hold the backbone's values here, so the copies stay right.
    except BaseException:
        snapshot.restore()
        raise
    return wrapper


MERGED_CONFIG = "config.json"
MERGED_WEIGHTS = "model.safetensors"


def save_merged(model: nn.Module, folder: str | os.PathLike, *, data_config: dict[str, Any] | None = None,
                processor_config: dict[str, Any] | None = None) -> Path:
    """Write a merged (plain) model as a timm ``local-dir:`` folder: ``config.json`` + ``model.safetensors``.

    ``timm.create_model("local-dir:FOLDER", pretrained=True)`` then rebuilds it without vitune: the config
    records timm's architecture, the model's constructor arguments and the ones the merge made necessary
    (``merged_model_args``). `data_config` (timm's keys: ``mean``, ``std``, ``input_size``, ``interpolation``,
    ``crop_pct``) records the preprocessing the adapter was trained with, so
    ``timm.data.resolve_data_config(model=...)`` gives it back. Returns the folder.

    A Hugging Face transformers model is written with its own ``save_pretrained`` (its config updated with
    ``merged_model_args``, so ``from_pretrained(FOLDER)`` rebuilds it strictly) and `processor_config` (its
    source folder's image processor, with `data_config`'s mean, std and size) as ``preprocessor_config.json``.
    """
    from timm.models._hub import save_config_for_hf

    model = unwrap(model)
    method = applied_method(model)
    if method is not None:
        raise VituneError(
            f"save_merged: method {method.name!r} is still applied; call vitune.merge(model) first"
        )
    if callable(getattr(model, "save_pretrained", None)):
        return _save_merged_pretrained(model, Path(folder).resolve(), data_config, processor_config)
    if not hasattr(model, "pretrained_cfg"):
        raise VituneError("save_merged writes timm models; this model has no timm pretrained_cfg")
    folder = Path(folder).resolve()
    tensors = {n: t.detach().to("cpu").contiguous() for n, t in model.state_dict().items()}
    with atomic_folder(folder, keep=lambda entry: False) as tmp:
        (tmp / MERGED_WEIGHTS).write_bytes(save(tensors, metadata={"format": "pt"}))
        save_config_for_hf(model, str(tmp / MERGED_CONFIG), model_args=merged_model_args(model), data_config=data_config)
    return folder


def _save_merged_pretrained(model: nn.Module, folder: Path, data_config: dict[str, Any] | None,
                            processor_config: dict[str, Any] | None) -> Path:
    from .backbones.hf_create import PROCESSOR, export_processor_config, quiet

    # The merged model's own config says what the merge gave it (a q, k, v bias), so it describes it truly.
    model.config.update(merged_model_args(model))
    processor = export_processor_config(processor_config or {}, data_config)
    with atomic_folder(folder, keep=lambda entry: False) as tmp:
        with quiet():
            model.save_pretrained(tmp)
        if processor:
            (tmp / PROCESSOR).write_text(json.dumps(processor, indent=2) + "\n")
    return folder


def load_hint(folder: str | os.PathLike) -> str:
    """How a user loads a merged export without vitune: timm's ``local-dir:`` or transformers' Auto class."""
    config = json.loads((Path(folder) / MERGED_CONFIG).read_text())
    if "model_type" in config:
        return f'transformers.AutoModelForImageClassification.from_pretrained("{folder}")'
    return f'timm.create_model("local-dir:{folder}", pretrained=True)'


def adapter_bytes(folder: str | os.PathLike) -> int:
    """Size on disk of an adapter folder's two files."""
    folder = Path(folder)
    return sum((folder / name).stat().st_size for name in (CONFIG_NAME, WEIGHTS_NAME) if (folder / name).is_file())
