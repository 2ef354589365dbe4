"""Building what a run trains on: the adapted model and the task's transforms, the same way for
``vitune train``, ``vitune eval`` and ``vitune merge``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from .. import api, io
from ..backbones import find_places
from ..backbones.create import create_backbone, recreate_backbone
from ..errors import AdapterFileError, BackboneError, RunError
from ..methods import get_method
from .config import RunConfig

# --head bn asks the method for the MAE-style head through its config's `head` option.
BN_HEAD = "bn_linear"


def method_config_for(config: RunConfig) -> dict[str, Any]:
    """The method config the run applies: ``--set`` values, plus the head choice for ``--head bn``."""
    values = dict(config.method_config)
    if config.head == "bn":
        fields = {f.name for f in dataclasses.fields(get_method(config.method).Config)}
        if "head" not in fields:
            raise RunError(
                f"--head bn: method {config.method!r} has no BatchNorm head option (its config has no 'head' "
                "key); it is AdaptFormer's MAE-style head (--method adaptformer)"
            )
        values["head"] = BN_HEAD
    return values


def model_kwargs_for(config: RunConfig) -> dict[str, Any]:
    """timm keyword arguments: ``--model-kwargs``, plus ``img_size`` from ``--img-size`` when they lack it
    (timm then builds the model at that size and resamples a pretrained position embedding)."""
    kwargs = dict(config.model_kwargs)
    if config.img_size is not None and "img_size" not in kwargs:
        kwargs["img_size"] = config.img_size
    return kwargs


def build_model(config: RunConfig, num_classes: int, *, warn: bool = True) -> tuple[nn.Module, dict[str, Any], int]:
    """The backbone (seeded init or loaded weights) with the method applied; returns ``(model, source,
    input size)``."""
    method_config = method_config_for(config)  # its errors come before the backbone is built
    model, source = create_backbone(
        config.model,
        num_classes=num_classes,
        model_kwargs=model_kwargs_for(config),
        pretrained=config.pretrained,
        weights=config.weights,
        drop_path=config.drop_path,
        init_seed=config.seed,
        warn=warn,
    )
    # A Hugging Face folder's size comes from its image processor; otherwise the plain backbone's (the
    # family's map needs its own modules, so it is read before the method is applied).
    size = source.get("input_size") or input_size(model)
    api.apply(model, config.method, **method_config)
    if config.grad_checkpointing:
        try:
            api.set_grad_checkpointing(model)  # blocks recompute their activations in backward: less memory
        except BackboneError as error:
            raise RunError(f"--grad-checkpointing: {error}") from error
    return model, source, size


def input_size(model: nn.Module) -> int:
    """The square input size the plain backbone `model` was built for."""
    size = find_places(model).shapes.get("img_size")
    if size:
        return int(size[-1])
    return int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])


def read_source(adapter_folder: str | Path) -> dict[str, Any]:
    """How the adapter's backbone was made (``backbone.source`` of adapter_config.json, written by
    ``vitune train``); a clear error for adapters saved without it."""
    source = io.read_adapter_config(adapter_folder)["backbone"].get("source")
    if not isinstance(source, dict) or "model" not in source:
        raise AdapterFileError(
            f"{Path(adapter_folder) / io.CONFIG_NAME}: it does not record how its backbone was made (saved "
            "outside `vitune train`); load it in Python: vitune.load_adapter(timm.create_model(...), folder)"
        )
    return source


def load_trained(adapter_folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Re-create the backbone an adapter folder records and load the adapter into it."""
    source = read_source(adapter_folder)
    model = recreate_backbone(source)
    io.load_adapter(model, adapter_folder)
    return model.eval(), source
