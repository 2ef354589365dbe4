"""Adapter folders that know their backbone, and merged exports that plain timm loads.

``save_adapter(model, folder, source=...)`` records how the backbone was made (``backbones.create``'s source
dict) under ``adapter_config.json["backbone"]["source"]``, so ``vitune eval`` and ``vitune merge`` need only the
folder. ``save_merged`` writes timm's ``local-dir:`` format (``config.json`` with ``model_args`` +
``model.safetensors``).

Both use the core's functions when it has them; until then this module does the same through the core's
artifact format (a JSON key added to a saved adapter; timm's own exporter).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from torch import nn

from .. import io
from ..atomic import atomic_folder, atomic_write_json
from ..backbones import find_family
from ..errors import AdapterFileError


def save_adapter_with_source(model: nn.Module, folder: str | Path, source: dict[str, Any]) -> Path:
    """Write the adapter to `folder` as one atomic folder swap, recording the backbone's `source`."""
    folder = Path(folder)
    with atomic_folder(folder, keep=lambda entry: False) as tmp:
        if "source" in inspect.signature(io.save_adapter).parameters:
            io.save_adapter(model, tmp, source=source)
        else:
            io.save_adapter(model, tmp)
            config = json.loads((tmp / io.CONFIG_NAME).read_text())
            config["backbone"]["source"] = source
            atomic_write_json(tmp / io.CONFIG_NAME, config)
    return folder


def read_source(folder: str | Path) -> dict[str, Any]:
    """The backbone source an adapter folder records; a clear error for folders saved without one."""
    config = io.read_adapter_config(folder)
    source = config["backbone"].get("source")
    if not isinstance(source, dict) or "model" not in source:
        raise AdapterFileError(
            f"{Path(folder) / io.CONFIG_NAME}: it does not record how its backbone was made (saved outside "
            "`vitune train`); load it in Python with vitune.load_adapter(timm.create_model(...), folder)"
        )
    return source


def save_merged(model: nn.Module, folder: str | Path) -> Path:
    """Write merged `model` as a timm ``local-dir:`` folder: ``timm.create_model("local-dir:FOLDER",
    pretrained=True)`` rebuilds it without vitune."""
    import vitune

    if hasattr(vitune, "save_merged"):
        return vitune.save_merged(model, folder)
    from timm.models._hub import save_for_hf

    folder = Path(folder)
    extra_args = find_family(model).merged_model_args(model)
    with atomic_folder(folder, keep=lambda entry: False) as tmp:
        save_for_hf(model, str(tmp), model_args=extra_args, safe_serialization=True)
    return folder
