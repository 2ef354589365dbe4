"""Create a timm backbone from a name, its keyword arguments and a choice of weights, and say what was used.

Three sources of weights, as in timm's train.py:

- none given: timm's random init, drawn after ``torch.manual_seed(init_seed)`` so it can be re-created
  exactly (a warning says the backbone is not pretrained);
- ``pretrained=True``: timm's own weights for the name's tag (from timm's cache or the network);
- ``weights=PATH``: a local file loaded into the randomly initialised model by :func:`load_weights`
  (``weights.py``: Google ``.npz`` through timm's own loader, safetensors, PyTorch files with
  ``weights_only=True``; the seeds' checkpoint wrappers unwrapped, a head of another size dropped).

The embedded backbone's name (``dinov2_small_focus``, embedded.py) works like a timm name with its weights:
it resolves to the cached ``local-dir:`` folder. The weights file of a ``local-dir:`` folder is hashed like a
``--weights`` file.

A local Hugging Face folder, ``hf:PATH``, is built by ``hf_create.py`` (transformers' Auto classes); its
files are hashed together like a ``--weights`` file.

The returned ``source`` dict is JSON-ready and holds everything :func:`recreate_backbone` needs, including the
weights file's sha256, so an adapter folder that records it can rebuild its backbone on its own.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from torch import nn

from ..errors import RunError
from .embedded import resolve_embedded
from .hf_create import CONFIG as HF_CONFIG
from .hf_create import HF_PREFIX, create_hf_backbone, folder_sha256, hf_folder, read_processor_config, rebuild_on_meta
from .weights import WeightsFileError, load_weights


class RandomBackboneWarning(UserWarning):
    """The backbone starts from a random init: accuracy will be far below a pretrained one's."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


LOCAL_DIR = "local-dir:"


def timm_name(name: str) -> str:
    """The name timm understands: the embedded backbone's becomes its ``local-dir:`` folder."""
    return resolve_embedded(name) or name


def local_dir_weights(name: str) -> Path | None:
    """The weights file of a timm ``local-dir:FOLDER`` model name (a merged export, for instance)."""
    if not name.startswith(LOCAL_DIR):
        return None
    folder = Path(name[len(LOCAL_DIR):])
    for candidate in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _timm_call(name: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise RunError(f"unknown timm model {name!r} (see timm.list_models())") from None
        raise
    except TypeError as e:  # a keyword the architecture does not take
        raise RunError(f"timm model {name!r} does not accept these arguments: {e}") from None


def create_backbone(
    name: str,
    *,
    num_classes: int,
    model_kwargs: dict[str, Any] | None = None,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
    drop_path: float = 0.0,
    init_seed: int = 0,
    warn: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build backbone `name` with a fresh `num_classes` head; returns ``(model, source)``."""
    if pretrained and weights is not None:
        raise RunError("give either --pretrained (timm's weights) or --weights PATH (a local file), not both")
    resolved = timm_name(name)
    if resolved != name and weights is None:
        pretrained = True  # the embedded backbone is its pretrained weights
    kwargs = dict(model_kwargs or {})
    for reserved in ("num_classes", "pretrained", "pretrained_cfg_overlay", "drop_path_rate", "checkpoint_path"):
        if reserved in kwargs:
            raise RunError(f"--model-kwargs {reserved}=... is set by vitune itself; use its own flag instead")
    if hf_folder(name) is not None:
        return _create_hf(name, num_classes=num_classes, model_kwargs=kwargs, weights=weights, drop_path=drop_path,
                          init_seed=init_seed)
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    weights_path = str(Path(weights).resolve()) if weights is not None else None
    source: dict[str, Any] = {
        "model": name,
        "model_kwargs": dict(model_kwargs or {}),
        "num_classes": num_classes,
        "drop_path": drop_path,
        "pretrained": pretrained,
        "weights": weights_path,
        "weights_sha256": None,
        "init_seed": init_seed,
        "pretrained_tag": None,
    }
    # The head (and, for a random backbone, everything) is drawn from this seed, so it can be re-created.
    torch.manual_seed(init_seed)
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise RunError(f"--weights {weights}: no such file")
        source["weights_sha256"] = file_sha256(weights_path)
        model = _timm_call(resolved, pretrained=False, num_classes=num_classes, **kwargs)
        try:
            load_weights(model, weights_path)
        except WeightsFileError as e:
            raise RunError(f"--weights {weights}: {e}") from None
    elif pretrained:
        try:
            model = _timm_call(resolved, pretrained=True, num_classes=num_classes, **kwargs)
        except (RuntimeError, OSError, ValueError) as e:
            raise RunError(
                f"could not load timm's pretrained weights for {name} ({type(e).__name__}: {e}); without a network, "
                "put them in timm's cache or pass a local file with --weights PATH"
            ) from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        source["pretrained_tag"] = cfg.get("tag") or cfg.get("hf_hub_id")
        folder_weights = local_dir_weights(resolved)
        if folder_weights is not None:  # a local folder's weights are a file like --weights: record its hash
            source["weights_sha256"] = file_sha256(folder_weights)
    else:
        model = _timm_call(resolved, pretrained=False, num_classes=num_classes, **kwargs)
        if warn:
            warnings.warn(
                f"backbone {name} starts from a random init (seed {init_seed}): pass --pretrained or --weights PATH "
                "for a pretrained one; accuracy from a random backbone is far below published numbers",
                RandomBackboneWarning,
                stacklevel=2,
            )
    return model, source


def _create_hf(name: str, *, num_classes: int, model_kwargs: dict[str, Any], weights, drop_path: float,
               init_seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """``hf:PATH``: the folder is the pretrained weights; its files' digest is recorded as a weights file's."""
    if weights is not None:
        raise RunError(f"--model {name}: the folder holds the weights; --weights PATH is for timm models")
    model, facts = create_hf_backbone(name, num_classes=num_classes, model_kwargs=model_kwargs, drop_path=drop_path,
                                      init_seed=init_seed)
    source = {
        "model": HF_PREFIX + facts["folder"],  # absolute: eval and merge work from any directory
        "model_kwargs": model_kwargs,
        "num_classes": num_classes,
        "drop_path": drop_path,
        "pretrained": True,
        "weights": None,
        "weights_sha256": facts["sha256"],
        "init_seed": init_seed,
        "pretrained_tag": None,
        "input_size": facts["img_size"],
    }
    return model, source


def recreate_backbone(source: dict[str, Any]) -> nn.Module:
    """The backbone a ``source`` dict (from :func:`create_backbone`) describes, same weights, same head init.

    A local weights file must still exist and have the recorded sha256.
    """
    weights = source.get("weights")
    checked = weights
    if checked is None and source.get("pretrained"):
        checked = local_dir_weights(timm_name(source["model"]))
    folder = hf_folder(source["model"])
    if folder is not None:
        _check_unchanged(f"folder {folder}", (folder / HF_CONFIG).is_file(), lambda: folder_sha256(folder), source)
    elif checked is not None:
        _check_unchanged(f"weights file {checked}", Path(checked).is_file(), lambda: file_sha256(checked), source)
    model, _ = create_backbone(
        source["model"],
        num_classes=source["num_classes"],
        model_kwargs=source.get("model_kwargs") or {},
        pretrained=bool(source.get("pretrained")),
        weights=weights,
        drop_path=source.get("drop_path") or 0.0,
        init_seed=source.get("init_seed", 0),
        warn=False,
    )
    return model


def _check_unchanged(what: str, present: bool, digest: Callable[[], str], source: dict[str, Any]) -> None:
    """The backbone's weights (a file, or an hf: folder's files) are still there, with the recorded sha256."""
    if not present:
        raise RunError(f"the backbone's {what} is gone; the adapter was trained on it")
    found = digest()
    if source.get("weights_sha256") not in (None, found):
        raise RunError(
            f"the backbone's {what} has changed since training "
            f"(sha256 {found[:12]}..., recorded {source['weights_sha256'][:12]}...)"
        )


def source_processor_config(source: dict[str, Any]) -> dict[str, Any] | None:
    """The image processor config of an ``hf:`` backbone's folder (for its merged export); None for timm."""
    folder = hf_folder(source["model"])
    return read_processor_config(folder) if folder is not None else None


def rebuild_merged_on_meta(folder: str | os.PathLike, source: dict[str, Any]) -> nn.Module:
    """The model a merged export's ``config.json`` alone rebuilds, as its user's library rebuilds it (timm's
    ``local-dir:`` or transformers' Auto class), on the meta device: names and shapes, no weights."""
    if hf_folder(source["model"]) is not None:
        return rebuild_on_meta(Path(folder))
    with torch.device("meta"):
        return timm.create_model(f"{LOCAL_DIR}{folder}", pretrained=False)
