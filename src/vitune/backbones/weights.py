"""Load pretrained weights from a local file into a built backbone, offline: ``vitune.load_weights``.

Formats, told apart by the file's suffix:

- ``.npz``: Google's JAX/Flax checkpoints (``ViT-B_16.npz``, big_vision), read by the model's own timm
  loader (``model.load_pretrained``), which maps Google's names and resizes position embeddings;
- ``.safetensors``;
- ``.pth``, ``.pt``, ``.pth.tar``, ``.bin``, ``.ckpt``: PyTorch files, read with ``torch.load(weights_only=True)``
  so a pickle that would run code is refused.

PyTorch and safetensors files go through the same steps: unwrap the training wrappers the seeds' checkpoints
use (a ``model`` or ``state_dict`` key -- MAE, Swin, DeiT --, MoCo v3's ``module.base_encoder.`` prefix, DDP's
``module.``), then the architecture's own timm ``checkpoint_filter_fn`` (OpenAI CLIP and DINOv2 names, patch
and position-embedding resizing, Swin's original layout). Classifier tensors of another shape (another
number of classes, MoCo's projection MLP, CLIP's text projection) are dropped and the model keeps its own
freshly initialised head, as AdaptFormer's fine-tuning code does.

A file that leaves part of the backbone at its random init is refused (``allow_missing=True`` to accept);
tensors the model has no place for (MAE's decoder, CLIP's text tower) are ignored with a warning. Both lists
come in one message.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import VituneError

TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar", ".bin", ".ckpt")
SUPPORTED = (".npz", ".safetensors", *TORCH_SUFFIXES)
# Keys under which training scripts keep the model's state_dict (MAE: model, MoCo v3 / DeiT: state_dict).
WRAPPER_KEYS = ("state_dict", "model", "module")
# MoCo v3 keeps the backbone as `base_encoder` (its momentum encoder and predictor are training-only).
ENCODER_PREFIXES = ("module.base_encoder.", "base_encoder.")
SHOWN = 8  # names listed per kind in a message


class WeightsFileError(VituneError, OSError):
    """A weights file that cannot be read, or does not fit the model it is loaded into."""


class WeightsWarning(UserWarning):
    """A weights file loaded, but with tensors the model has no place for, or part of the model left at init."""


@dataclass
class WeightsReport:
    """What :func:`load_weights` did: counts and names, for logs and tests."""

    path: str
    loaded: int
    missing: list[str] = field(default_factory=list)  # model tensors the file lacks (left at their init)
    unexpected: list[str] = field(default_factory=list)  # file tensors the model has no place for (ignored)
    dropped_head: list[str] = field(default_factory=list)  # file classifier tensors of another shape

    def message(self, model: nn.Module) -> str:
        parts = [f"{self.path}: loaded {self.loaded} tensors into {type(model).__name__}"]
        if self.missing:
            parts.append(f"missing from the file, left at their random init: {_names(self.missing)}")
        if self.unexpected:
            parts.append(f"in the file but not in the model, ignored: {_names(self.unexpected)}")
        if self.dropped_head:
            parts.append(
                f"classifier tensors of another shape dropped, the model's fresh head kept: {_names(self.dropped_head)}"
            )
        return "; ".join(parts)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return f"{shown} (+{len(names) - SHOWN} more)" if len(names) > SHOWN else shown


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED, key=len, reverse=True):  # .pth.tar before .tar
        if name.endswith(suffix):
            return suffix
    raise WeightsFileError(f"{path}: unknown weights format; vitune reads {', '.join(SUPPORTED)}")


def read_torch_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, no code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsFileError(
            f"{path} holds Python objects beyond tensors and plain containers, and unpickling them could run "
            "code, so vitune refuses it (torch.load(weights_only=True) said: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}). If you trust the file, re-save its "
            "state_dict alone: torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth')"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise WeightsFileError(f"{path}: not a readable PyTorch file ({e})") from None


def read_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise WeightsFileError(f"{path}: not a readable safetensors file ({e})") from None


def unwrap_state_dict(checkpoint: Any, path: Path | str = "the file") -> dict[str, torch.Tensor]:
    """The state_dict inside a training checkpoint: a ``state_dict``/``model`` entry, MoCo v3's base encoder,
    DDP's ``module.`` prefix removed."""
    state = checkpoint
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(state)[:SHOWN] if isinstance(state, dict) else type(state).__name__
        raise WeightsFileError(f"{path}: found no tensors (top-level entries: {keys})")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def architecture_filter(model: nn.Module) -> Callable[[dict, nn.Module], dict] | None:
    """timm's ``checkpoint_filter_fn`` of the model's architecture module, if it has one."""
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Where the classifier lives: from vitune's family map, else from timm's pretrained config."""
    from .base import find_places

    try:
        return tuple(find_places(model).heads)
    except VituneError:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        classifier = cfg.get("classifier")
        return tuple(classifier) if isinstance(classifier, (tuple, list)) else ((classifier,) if classifier else ())


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str, allow_missing: bool = False) -> WeightsReport:
    """Load an unwrapped, filtered state_dict; drop mismatched head tensors; refuse gaps and wrong shapes."""
    heads = head_prefixes(model)
    own = model.state_dict()
    dropped = [k for k in state if _in(k, heads) and (k not in own or own[k].shape != state[k].shape)]
    state = {k: v for k, v in state.items() if k not in dropped}
    wrong = [
        f"{k} {tuple(v.shape)} (model {tuple(own[k].shape)})" for k, v in state.items() if k in own and own[k].shape != v.shape
    ]
    if wrong:
        raise WeightsFileError(
            f"{path} does not fit {type(model).__name__}: tensors of another shape: {_names(wrong)}; "
            "is it the checkpoint of another architecture or size?"
        )
    report = WeightsReport(
        path=path,
        loaded=sum(1 for k in state if k in own),
        missing=[k for k in own if k not in state and not _in(k, heads)],
        unexpected=[k for k in state if k not in own],
        dropped_head=dropped,
    )
    if report.missing and not allow_missing:
        hint = "" if report.loaded else " (no name matched: is it another architecture's checkpoint?)"
        raise WeightsFileError(report.message(model) + hint + "; pass allow_missing=True to load it anyway")
    model.load_state_dict(state, strict=False)
    return report


def _load_npz(model: nn.Module, path: Path) -> WeightsReport:
    """Google's .npz through the model's own timm loader (timm VisionTransformer and its relatives)."""
    import numpy as np

    if not hasattr(model, "load_pretrained"):
        raise WeightsFileError(
            f"{path}: {type(model).__name__} has no loader for Google .npz checkpoints (timm's VisionTransformer "
            "has one); convert the file to safetensors for this model"
        )
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name].shape for name in npz.files}
    dropped = []
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, shape in arrays.items():
        # timm's loader copies a Google head only when its size matches, else keeps the model's head.
        if name.endswith("head/bias") and isinstance(head, nn.Linear) and shape[-1] != head.out_features:
            dropped += [name[: -len("bias")] + "kernel", name]
    try:
        model.load_pretrained(str(path))
    except KeyError as e:
        raise WeightsFileError(f"{path} lacks {e} that {type(model).__name__} needs: another architecture's .npz?") from None
    except (RuntimeError, ValueError) as e:
        raise WeightsFileError(f"{path} does not fit {type(model).__name__}: {e}") from None
    return WeightsReport(path=str(path), loaded=len(arrays) - len(dropped), dropped_head=dropped)


def load_weights(model: nn.Module, path: str | os.PathLike, *, allow_missing: bool = False) -> WeightsReport:
    """Load the pretrained weights in file `path` into `model` (in place) and say what was loaded.

    Raises :class:`WeightsFileError` for an unreadable or unsafe file, tensors of another shape, or (unless
    `allow_missing`) a file that leaves part of the backbone at its init. Tensors the model has no place for
    are ignored with a :class:`WeightsWarning` naming them.
    """
    file = Path(path)
    if not file.is_file():
        raise WeightsFileError(f"{file}: no such weights file")
    suffix = _suffix(file)
    if suffix == ".npz":
        return _load_npz(model, file)
    raw = read_safetensors_file(file) if suffix == ".safetensors" else read_torch_file(file)
    state = unwrap_state_dict(raw, file)
    remap = architecture_filter(model)
    if remap is not None:
        try:
            state = remap(state, model)
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            raise WeightsFileError(f"{file}: timm's checkpoint filter for {type(model).__name__} failed: {e}") from None
    report = load_state(model, state, str(file), allow_missing=allow_missing)
    if report.unexpected or report.missing:
        warnings.warn(report.message(model), WeightsWarning, stacklevel=2)
    return report
