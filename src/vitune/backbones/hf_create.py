"""A Hugging Face image classifier from a local ``save_pretrained`` folder: ``--model hf:PATH``.

The folder holds ``config.json``, the weights (``model.safetensors``) and, for the images,
``preprocessor_config.json``. It is read offline with transformers' Auto classes for image classification
(``ViTForImageClassification``, ``Dinov2ForImageClassification``, ``CLIPForImageClassification`` ...), with a
head of the task's size: a checkpoint head of another size is re-initialised (from the seeded RNG, so it can be
re-created), as timm does. Anything else the weights lack, or any backbone tensor of another shape, is refused.

The image processor's settings are mapped onto timm's data-config keys (``mean``, ``std``, ``input_size``,
``interpolation``, ``crop_pct``) and attached to the model as ``pretrained_cfg``, the attribute a timm model
carries them in: vitune's transforms (``normalize="model"``) and a merged export then read one format for both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import BackboneError, RunError
from .base import find_places

HF_PREFIX = "hf:"
CONFIG = "config.json"
PROCESSOR = "preprocessor_config.json"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# PIL's resampling numbers, as image processors record them
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# what vitune sets itself: the head's size from the task, the weights from the folder
RESERVED = ("num_labels", "id2label", "label2id", "drop_path_rate", "pretrained_model_name_or_path")


def hf_folder(name: str) -> Path | None:
    """The folder of an ``hf:PATH`` model name, or None for any other name."""
    return Path(name[len(HF_PREFIX):]).resolve() if name.startswith(HF_PREFIX) else None


def folder_sha256(folder: Path) -> str:
    """One digest of the files that define the model (config, weights, processor), as a weights file's sha256."""
    digest = hashlib.sha256()
    for name in (CONFIG, *WEIGHTS, PROCESSOR):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers' load report and progress bar say nothing vitune does not check itself."""
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def read_processor_config(folder: Path) -> dict[str, Any]:
    """The folder's ``preprocessor_config.json`` as a dict ({} when the folder has none)."""
    path = folder / PROCESSOR
    if not path.is_file():
        return {}
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not a readable JSON image-processor config ({e})") from None
    if not isinstance(values, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return values


def _side(size: Any) -> int | None:
    """The square side of a processor ``size``/``crop_size`` entry ({height, width}, {shortest_edge} or an int)."""
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        return size.get("height") or size.get("shortest_edge")
    return None


def data_config(processor: dict[str, Any], image_size: int, path: Path) -> dict[str, Any]:
    """timm's data-config keys for an image processor's settings; the model's ``image_size`` when it has none."""
    config: dict[str, Any] = {"input_size": (3, image_size, image_size)}
    if not processor:
        return config  # no processor: timm's default mean and std, the model's own size
    resize, crop = _side(processor.get("size")), _side(processor.get("crop_size"))
    side = crop if processor.get("do_center_crop") and crop else resize
    if side:
        config["input_size"] = (3, int(side), int(side))
    if processor.get("do_center_crop") and crop and resize:
        config["crop_pct"] = crop / resize
    if processor.get("resample") in RESAMPLE:
        config["interpolation"] = RESAMPLE[processor["resample"]]
    if processor.get("do_normalize", True):
        mean, std = processor.get("image_mean"), processor.get("image_std")
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3):
            raise RunError(f"{path}: image_mean and image_std must be lists of 3 numbers")
        config["mean"], config["std"] = tuple(mean), tuple(std)
    else:
        config["mean"], config["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return config


def _load_config(folder: Path, name: str):
    from transformers import AutoConfig

    if not folder.is_dir():
        raise RunError(f"--model {name}: {folder} is not a folder (a Hugging Face save_pretrained folder)")
    if not (folder / CONFIG).is_file():
        raise RunError(f"--model {name}: {folder} has no {CONFIG} (a Hugging Face save_pretrained folder holds "
                       f"{CONFIG}, model.safetensors and {PROCESSOR})")
    try:
        with quiet():
            return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise RunError(f"--model {name}: {folder / CONFIG} is not a config transformers reads ({e})") from None


def _image_size(config) -> int:
    size = getattr(getattr(config, "vision_config", config), "image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def create_hf_backbone(
    name: str, *, num_classes: int, model_kwargs: dict[str, Any], drop_path: float, init_seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``hf:PATH`` with a `num_classes` head; returns ``(model, facts)``: the folder, its digest and the
    input size (``--img-size`` as ``img_size`` in `model_kwargs`, else the processor's, else the config's).

    Other `model_kwargs` override config fields (``hidden_dropout_prob=0.1``); `drop_path` sets
    ``drop_path_rate`` where the config has one (DINOv2)."""
    from transformers import AutoModelForImageClassification

    folder = hf_folder(name)
    config = _load_config(folder, name)
    kwargs = dict(model_kwargs)
    img_size = kwargs.pop("img_size", None)
    for key in kwargs:
        if key in RESERVED:
            raise RunError(f"--model-kwargs {key}=... is set by vitune itself for --model {name}")
        if not hasattr(config, key):
            raise RunError(f"--model-kwargs {key}=...: {folder / CONFIG} ({config.model_type}) has no field {key!r}")
    if drop_path:
        if not hasattr(config, "drop_path_rate"):
            raise RunError(f"--drop-path: {folder / CONFIG} ({config.model_type}) has no drop_path_rate")
        kwargs["drop_path_rate"] = drop_path
    for key, value in kwargs.items():
        setattr(config, key, value)
    config.num_labels = num_classes  # also resets id2label / label2id to num_classes entries
    torch.manual_seed(init_seed)  # the re-initialised head is drawn from this seed: it can be re-created
    try:
        with quiet():
            model, info = AutoModelForImageClassification.from_pretrained(
                folder, config=config, ignore_mismatched_sizes=True, output_loading_info=True, local_files_only=True)
    except ValueError as e:  # no image-classification class for this config's model type
        raise BackboneError(f"--model {name}: transformers has no image classifier for {folder / CONFIG} "
                            f"(model_type {config.model_type!r}): {str(e).splitlines()[0]}") from None
    except OSError as e:  # no weights file
        raise RunError(f"--model {name}: {folder}: {e}") from None
    try:
        places = find_places(model)
    except BackboneError as e:
        raise BackboneError(f"--model {name}: {folder} holds a {type(model).__name__}, which vitune does not "
                            f"map: {e}") from None
    _check_loaded(name, places, info)
    processor = data_config(read_processor_config(folder), _image_size(config), folder / PROCESSOR)
    if img_size is not None:
        processor["input_size"] = (3, int(img_size), int(img_size))
        _check_input_size(name, model, int(img_size))
    model.pretrained_cfg = processor
    return model, {"folder": str(folder), "sha256": folder_sha256(folder), "img_size": processor["input_size"][-1]}


def _check_loaded(name: str, places, info: dict[str, Any]) -> None:
    """Only the head may be missing from the weights or re-initialised for another shape."""
    missing = [k for k in info.get("missing_keys", ()) if not places.in_head(k)]
    mismatched = [f"{k} ({tuple(a)} in the file, {tuple(b)} here)"
                  for k, a, b in info.get("mismatched_keys", ()) if not places.in_head(k)]
    if missing or mismatched:
        listed = sorted(missing) + sorted(mismatched)
        more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
        raise RunError(f"--model {name}: the weights do not fit the backbone built from its config: "
                       f"{', '.join(listed[:5])}{more} (a --model-kwargs field that changes a shape?)")


def _check_input_size(name: str, model: nn.Module, side: int) -> None:
    """--img-size on a model that takes only its config's size (ViT, CLIP) is refused before training."""
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, side, side))
    except ValueError as e:
        raise RunError(f"--img-size {side}: --model {name} does not take {side}x{side} images ({e})") from None
    finally:
        model.train(was)


def rebuild_on_meta(folder: Path) -> nn.Module:
    """The model a merged export's ``config.json`` alone rebuilds (no weights): names and shapes to check."""
    from transformers import AutoConfig, AutoModelForImageClassification

    with quiet(), torch.device("meta"):
        return AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(folder))


def export_processor_config(processor: dict[str, Any], data_config: dict[str, Any] | None) -> dict[str, Any]:
    """An image processor's config (a source folder's, read by :func:`read_processor_config`) with the mean,
    std and size a run trained with (`data_config`, timm's keys), for a merged export that preprocesses as the
    adapter was trained."""
    processor = dict(processor)
    if not processor or not data_config:
        return processor
    if "mean" in data_config:
        processor.update(image_mean=list(data_config["mean"]), image_std=list(data_config["std"]), do_normalize=True)
    side = int(data_config["input_size"][-1]) if "input_size" in data_config else None
    resize, crop = _side(processor.get("size")), _side(processor.get("crop_size"))
    if processor.get("do_center_crop") and crop and resize:
        if side is not None and side != crop:  # the same crop fraction at the new size
            processor["crop_size"] = {"height": side, "width": side}
            processor["size"] = _resized(processor["size"], round(side * resize / crop))
    elif side is not None and side != resize:
        processor["size"] = _resized(processor.get("size"), side)
    return processor


def _resized(size: Any, side: int) -> Any:
    """A processor ``size`` entry of the same form at `side`."""
    if isinstance(size, dict) and "shortest_edge" in size:
        return {"shortest_edge": side}
    return side if isinstance(size, int) else {"height": side, "width": side}
