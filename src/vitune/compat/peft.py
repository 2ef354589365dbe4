"""Hugging Face PEFT's LoRA adapter folders in and out of vitune's ``lora`` method.

A PEFT LoRA folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` with, for each adapted linear
layer ``<path>``, ``base_model.model.<path>.lora_A.weight`` (r, in) and ``...lora_B.weight`` (out, r); the layer
computes ``W x + (lora_alpha / r) B A x``, which is vitune's LoRA on the whole layer. Modules in
``modules_to_save`` (the classifier head) are stored whole under ``base_model.model.<path>.<tensor>``.

Loading refuses, naming the key, what vitune's LoRA cannot compute: DoRA, trained biases, ranks or alphas that
differ between layers, targets that are not linear layers of the backbone, initialisations that change the
backbone's weights. rsLoRA's scale alpha / sqrt(r) is the same number as alpha' / r with alpha' = alpha sqrt(r), so
it is loaded with that alpha. PEFT is not needed at run time: the format is read and written here.

vitune's LoRA on parts of a fused layer (q and v of timm's qkv, the default) is saved as PEFT's LoRA on the whole
layer with rank k r for its k parts: A stacks the parts' A, B holds each part's B in its rows and columns and zeros
elsewhere, and lora_alpha is k alpha, so the scale and the function are unchanged. Training it further in PEFT
would also train the zero blocks.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from ..api import _require_method, applied_method, apply, head_names, unwrap
from ..atomic import atomic_folder
from ..backbones import find_places
from ..backbones.base import LINEAR_ROLES
from ..backbones.targets import linear_targets
from ..errors import AdapterFileError, ConfigError, VituneError
from ..io import CONFIG_NAME, WEIGHTS_NAME, _check_tensors, _read_config_json, _read_weights
from ..layers.lora import LoRALinear
from ..surgery import ModelSnapshot

PREFIX = "base_model.model."  # PEFT's names of the base model's modules in its state dicts

# Keys of PEFT's LoraConfig that do not change what a saved adapter computes, or that are read below.
_HANDLED = {
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
    "inference_mode", "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "modules_to_save",
    "use_rslora", "use_dora", "bias", "fan_in_fan_out", "init_lora_weights", "rank_pattern", "alpha_pattern",
    "megatron_core", "qalora_group_size", "runtime_config", "ensure_weight_tying",
    # initialisation settings, used only when PEFT creates new weights
    "loftq_config", "eva_config", "corda_config", "lora_ga_config",
}
# Initialisations that leave the backbone's weights as they are (the others, PiSSA, OLoRA, CorDA, LoftQ and
# LoRA-GA, subtract the initial update from them, so their adapters belong to a changed backbone).
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal", "mica")


class PeftCompatError(AdapterFileError):
    """A PEFT adapter folder that vitune's LoRA cannot load or a model it cannot save as one; names the key."""


def load_peft_lora(model: nn.Module, folder: str | os.PathLike) -> nn.Module:
    """Apply vitune's ``lora`` to a plain backbone with the LoRA weights of a PEFT adapter folder.

    The folder is one that ``PeftModel.save_pretrained`` wrote for the same timm model (its ``adapter_config.json``
    and ``adapter_model.safetensors``); the head stored there (``modules_to_save``) is loaded too. The result is
    a vitune model like any other: ``vitune.merge``, ``vitune.save_adapter`` ... All or nothing: if anything is
    refused, `model` is left as it was. Returns `model`.
    """
    wrapper, model = model, unwrap(model)
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    current = applied_method(model)
    if current is not None:
        raise PeftCompatError(f"{folder}: load the PEFT adapter into a plain backbone; this one has {current.name!r}")
    config = _read_config(config_path)
    places = find_places(model)
    saved_modules = _modules_to_save(config_path, config, model, places)
    targets = _targets(config_path, config, model, places, saved_modules)
    r, alpha = _rank_and_alpha(config_path, config, targets)
    dropout = config.get("lora_dropout") or 0.0
    if not weights_path.is_file() and (folder / "adapter_model.bin").is_file():
        raise PeftCompatError(
            f"{folder / 'adapter_model.bin'}: a pickle, which vitune does not read; save it with PEFT's default "
            "safe_serialization=True (adapter_model.safetensors)"
        )
    tensors = _read_weights(weights_path, "lora")
    expected = {}  # shapes only, on the meta device
    for path in targets:
        layer = model.get_submodule(path)
        expected[f"{PREFIX}{path}.lora_A.weight"] = torch.empty(r, layer.in_features, device="meta")
        expected[f"{PREFIX}{path}.lora_B.weight"] = torch.empty(layer.out_features, r, device="meta")
    for path in saved_modules:
        expected.update({f"{PREFIX}{path}.{n}": t.to("meta") for n, t in model.get_submodule(path).state_dict().items()})
    _check_tensors(weights_path, "lora", tensors, expected)

    snapshot = ModelSnapshot(model)
    try:
        try:
            apply(model, "lora", r=r, alpha=alpha, dropout=dropout, **_vitune_targets(model, places, set(targets)))
        except ConfigError as e:  # a value vitune's lora refuses (lora_dropout 1.5, say)
            raise PeftCompatError(f"{config_path}: {e}") from None
        with torch.no_grad():
            for path in targets:
                layer = model.get_submodule(path)
                for factor in ("lora_A", "lora_B"):
                    target = getattr(layer, factor)
                    target.copy_(tensors[f"{PREFIX}{path}.{factor}.weight"].reshape(target.shape))
            for path in saved_modules:
                for n, target in model.get_submodule(path).state_dict().items():
                    target.copy_(tensors[f"{PREFIX}{path}.{n}"])
    except BaseException:
        snapshot.restore()
        raise
    return wrapper


def save_peft_lora(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Write `model`'s vitune ``lora`` as a PEFT adapter folder, with the classifier head as ``modules_to_save``.

    ``PeftModel.from_pretrained(timm_model, folder)`` on the same timm backbone then computes what `model` does.
    The folder is replaced atomically; other files in it are kept. Returns the folder.
    """
    model = unwrap(model)
    method = _require_method(model, "save a PEFT LoRA adapter")
    if method.name != "lora":
        raise PeftCompatError(f"save_peft_lora writes vitune's 'lora' method; this model has {method.name!r}")
    places = method.places
    layers = [(path, m) for path, m in model.named_modules() if isinstance(m, LoRALinear)]
    cfg = method.config
    tensors: dict[str, torch.Tensor] = {}
    parts = {}
    for path, layer in layers:
        a, b = _whole_layer_factors(layer)
        tensors[f"{PREFIX}{path}.lora_A.weight"], tensors[f"{PREFIX}{path}.lora_B.weight"] = a, b
        parts[path] = len(layer.parts or (None,))
    for head in places.heads:
        for n, t in model.get_submodule(head).state_dict().items():
            tensors[f"{PREFIX}{head}.{n}"] = t
    tensors = {n: t.detach().to("cpu", copy=True).contiguous() for n, t in tensors.items()}

    # Every layer the same number of parts: one rank for all; otherwise PEFT's per-layer patterns.
    uniform = len(set(parts.values())) == 1
    k = next(iter(parts.values())) if uniform else 1
    patterns = {} if uniform else {re.escape(p): n for p, n in parts.items() if n != 1}
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "inference_mode": True,
        "auto_mapping": {"base_model_class": type(model).__name__, "parent_library": type(model).__module__},
        "r": k * cfg.r,
        "lora_alpha": _number(k * cfg.alpha),
        "lora_dropout": cfg.dropout,
        "target_modules": sorted(parts),
        "modules_to_save": list(places.heads),
        "rank_pattern": {key: n * cfg.r for key, n in patterns.items()},
        "alpha_pattern": {key: _number(n * cfg.alpha) for key, n in patterns.items()},
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
    }
    folder = Path(folder).resolve()
    weights = save(tensors, metadata={"format": "pt"})
    with atomic_folder(folder) as tmp:
        (tmp / WEIGHTS_NAME).write_bytes(weights)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def _whole_layer_factors(layer: LoRALinear) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's (A, B) for the whole layer: A (k r, in) stacks the k parts' A; B (out, k r) has part j's B in its
    rows and in columns j r ... (j + 1) r, zeros elsewhere (for one part over the whole output: plain A, B)."""
    r, parts = layer.r, layer.parts or (slice(None),)
    a = layer.lora_A.detach().reshape(len(parts) * r, -1)
    part_b = layer.lora_B.detach().reshape(len(parts), -1, r)
    b = a.new_zeros(layer.base_layer.out_features, len(parts) * r)
    for j, part in enumerate(parts):
        b[part, j * r:(j + 1) * r] = part_b[j]
    return a, b


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _read_config(path: Path) -> dict[str, Any]:
    config = _read_config_json(path)
    if config.get("peft_type") != "LORA":
        raise PeftCompatError(f"{path}: key 'peft_type' is {config.get('peft_type')!r}; vitune loads PEFT's 'LORA'")
    _refuse_options(path, config)
    return config


def _refuse_options(path: Path, config: dict[str, Any]) -> None:
    """Refuse, by key, every PEFT option that changes what the adapter computes and that vitune's LoRA lacks."""
    if config.get("use_dora"):
        raise PeftCompatError(f"{path}: key 'use_dora' is true: DoRA rescales every column of the adapted weight "
                              "by a trained magnitude, which vitune's lora does not have; merge it in PEFT "
                              "(merge_and_unload) and use the merged weights as the backbone, or train without DoRA")
    if config.get("bias", "none") != "none":
        raise PeftCompatError(f"{path}: key 'bias' is {config['bias']!r}: PEFT trained the backbone's biases too; "
                              "vitune's lora loads adapters saved with bias='none'")
    if config.get("fan_in_fan_out"):
        raise PeftCompatError(f"{path}: key 'fan_in_fan_out' is true: stored transposed for GPT-2's Conv1D layers, "
                              "not the nn.Linear layers of a vision transformer")
    init = config.get("init_lora_weights", True)
    if init not in _PLAIN_INITS:
        raise PeftCompatError(
            f"{path}: key 'init_lora_weights' is {init!r}: that initialisation subtracts the initial update from the "
            "backbone's weights, so the adapter belongs to a changed backbone; convert it with PEFT's "
            "save_pretrained(path_initial_model_for_weight_conversion=...) first"
        )
    for key, value in config.items():
        if key not in _HANDLED and value not in (None, False, "", [], {}):
            raise PeftCompatError(f"{path}: key {key!r} is {value!r}: a PEFT option vitune's lora cannot express")
    if config.get("r") is None or config.get("lora_alpha") is None or config.get("target_modules") is None:
        missing = [k for k in ("r", "lora_alpha", "target_modules") if config.get(k) is None]
        raise AdapterFileError(f"{path}: key {missing[0]!r} is missing")


def _matches(spec: str | list[str] | None, name: str) -> bool:
    """PEFT's rule for target_modules and exclude_modules: a string is a regular expression the whole name must
    match; a list matches a name equal to an entry or ending in '.' + an entry."""
    if not spec:
        return False
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return name in spec or any(name.endswith(f".{key}") for key in spec)


def _modules_to_save(path: Path, config: dict[str, Any], model: nn.Module, places) -> list[str]:
    """The modules PEFT stored whole (``modules_to_save``, matched as PEFT does: names ending in an entry); only
    the classifier head can be, as it is the only other module vitune's lora trains."""
    names = config.get("modules_to_save") or []
    found = [n for n, _ in model.named_modules() if n and any(n.endswith(key) for key in names)]
    found = [n for n in found if not any(n.startswith(f"{other}.") for other in found)]  # outermost
    heads = set(head_names(model))
    for name in found:
        params = [f"{name}.{p}" for p, _ in model.get_submodule(name).named_parameters()]
        if not all(p in heads for p in params):
            raise PeftCompatError(f"{path}: key 'modules_to_save' names {name!r}, which is not the classifier head "
                                  f"({', '.join(places.heads)}); vitune's lora trains only the head beside the LoRA")
    return found


def _targets(path: Path, config: dict[str, Any], model: nn.Module, places, saved: list[str]) -> list[str]:
    """The modules PEFT adapted, found by its own matching rules; each must be a linear layer of the backbone."""
    spec = config["target_modules"]
    if isinstance(spec, str) and spec.lower() == "all-linear":
        spec = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not isinstance(spec, (str, list)):
        raise AdapterFileError(f"{path}: key 'target_modules' must be a string or a list, got {spec!r}")
    try:
        found = [
            name for name, _ in model.named_modules()
            if name and _matches(spec, name) and not _matches(config.get("exclude_modules"), name)
            and not any(re.match(rf"(^|.*\.){key}($|\..*)", name) for key in config.get("modules_to_save") or [])
        ]
    except re.error as e:
        raise AdapterFileError(f"{path}: key 'target_modules' or 'exclude_modules': not a regular expression ({e})") \
            from None
    for name in found:
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise PeftCompatError(f"{path}: key 'target_modules' {spec!r} matches {name!r}, a "
                                  f"{type(module).__name__}: vitune's lora adapts nn.Linear layers only")
        if places.in_head(name):
            raise PeftCompatError(f"{path}: key 'target_modules' {spec!r} matches the classifier head {name!r}; "
                                  "vitune trains the head whole, put it in modules_to_save instead")
    if not found:
        raise PeftCompatError(f"{path}: key 'target_modules' {spec!r} matches no module of this model")
    return found


def _rank_and_alpha(path: Path, config: dict[str, Any], targets: list[str]) -> tuple[int, float]:
    """The one rank and alpha of every target (PEFT's rank_pattern and alpha_pattern resolved per layer as PEFT
    does: the first key matching the end of the name); rsLoRA folded into alpha."""
    def per_layer(key: str, default):
        pattern = config.get(key) or {}
        values = {}
        for name in targets:
            match = next((k for k in pattern if re.match(rf"(.*\.)?({k})$", name)), None)
            values[name] = pattern[match] if match is not None else default
        if len(set(values.values())) > 1:
            counts = Counter(values.values())
            example = ", ".join(f"{n}: {v}" for n, v in list(values.items())[:4])
            raise PeftCompatError(f"{path}: key {key!r} gives the adapted layers different values ({dict(counts)} "
                                  f"layers; {example} ...): vitune's lora has one for all layers")
        return next(iter(values.values()))

    r, alpha = per_layer("rank_pattern", config["r"]), per_layer("alpha_pattern", config["lora_alpha"])
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise AdapterFileError(f"{path}: key 'r' must be a positive integer, got {r!r}")
    if config.get("use_rslora"):
        alpha = alpha * math.sqrt(r)  # rsLoRA scales by alpha / sqrt(r), which is (alpha sqrt(r)) / r
    return r, float(alpha)


def _vitune_targets(model: nn.Module, places, paths: set[str]) -> dict[str, Any]:
    """vitune's lora config for exactly these whole layers: the roles when they are whole roles of every block
    (``targets=("qkv", "fc1")``), otherwise a regular expression naming each layer."""
    roles, covered = [], set()
    for role in LINEAR_ROLES:
        try:
            found = linear_targets(model, places, (role,))
        except VituneError:  # a role this family lacks (one fused qkv where q, k and v are separate layers)
            continue
        layers = set(found)
        if all(part is None for part in found.values()) and layers <= paths and not layers & covered:
            roles.append(role)
            covered |= layers
    if covered == paths:
        return {"targets": tuple(roles)}
    return {"pattern": "^(?:" + "|".join(re.escape(p) for p in sorted(paths)) + ")$"}
