"""The resolved configuration of a training run: defaults < recipe < recipe's dataset entry < command line.

A recipe is a YAML file of :class:`RunConfig` keys (PyYAML ``safe_load``): a built-in name (the files in
``recipes/`` beside this module) or a path. Its optional ``datasets:`` mapping holds per-dataset overrides,
picked by the data folder's name (the published recipes tune lr, weight decay or a method's scale per
VTAB task). ``method_config`` and ``model_kwargs`` merge key by key through the layers; every other key is
replaced. The result is what the run folder's ``config.yaml`` records and what ``--resume`` compares.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from ..errors import ConfigError, RunError
from ..methods.config import _check
from .iterative import check_rounds, scheme_defaults

RECIPES_DIR = Path(__file__).with_name("recipes")

# Keys whose value is a dict merged key by key across layers (a recipe's method config, the flags' --set).
MERGED_KEYS = ("method_config", "model_kwargs")
# Keys that do not change what a run computes: a resumed run may give other values.
RESUMABLE_DIFFERENCES = ("workers", "grad_checkpointing")  # checkpointing recomputes, same gradients


def _field(default: Any, help: str) -> Any:
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class RunConfig:
    """Every setting of a training run. Flag ``--batch-size`` sets key ``batch_size``, and so on."""

    # what is trained
    method: str | None = _field(None, "method name (vitune methods)")
    method_config: dict = _field({}, "the method's config (--set KEY=VALUE)")
    model: str | None = _field(None, "timm model name")
    model_kwargs: dict = _field({}, "keyword arguments for timm.create_model")
    pretrained: bool = _field(False, "timm's own pretrained weights")
    weights: str | None = _field(None, "a local weights file for the backbone")
    head: Literal["linear", "bn"] = _field("linear", "bn: BatchNorm1d(affine=False) before the linear head")
    # data
    data: str | None = _field(None, "dataset folder")
    few_shot: tuple[int, int] | None = _field(None, "NOAH few-shot list: [shots, seed]")
    k_shot: tuple[int, int] | None = _field(
        None, "ELEVATER-style K-shot sampling: [K, seed], K images per class drawn from the training split"
    )
    train_split: str | None = _field(None, "training split (None: the layout's default)")
    eval_split: str | None = _field(None, "evaluation split (None: the layout's default)")
    img_size: int | None = _field(None, "input size (None: the model's own)")
    normalize: Literal["imagenet", "inception", "model", "none"] = _field("imagenet", "input normalisation")
    # schedule
    epochs: int = _field(100, "epochs (per adapter and round in layer-wise iterative training)")
    rounds: int = _field(1, "rounds of layer-wise iterative training (adaptformer adpnum_option=multi)")
    batch_size: int = _field(64, "batch size per process")
    validation_batch_size: int | None = _field(None, "evaluation batch size (None: batch_size)")
    grad_accum_steps: int = _field(1, "micro-batches per optimizer step")
    drop_last: bool = _field(True, "drop the last incomplete training batch of every epoch")
    opt: str = _field("adamw", "timm optimizer name")
    lr: float = _field(1e-3, "learning rate")
    weight_decay: float = _field(1e-4, "weight decay")
    momentum: float = _field(0.9, "momentum (SGD-like optimizers)")
    opt_eps: float | None = _field(None, "optimizer epsilon (None: the optimizer's default)")
    filter_bias_and_bn: bool = _field(True, "no weight decay on biases, norms and the model's no_weight_decay()")
    sched: str = _field("cosine", "timm scheduler name ('none': constant lr)")
    warmup_epochs: int = _field(10, "linear warm-up epochs")
    warmup_lr: float = _field(1e-6, "learning rate at the start of the warm-up")
    min_lr: float = _field(1e-5, "lowest learning rate of the schedule")
    sched_on_updates: bool = _field(False, "update the learning rate every optimizer step, not every epoch")
    smoothing: float = _field(0.0, "label smoothing")
    drop_path: float = _field(0.0, "stochastic depth rate of the backbone")
    clip_grad: float | None = _field(None, "gradient clipping threshold (None: off)")
    clip_mode: Literal["norm", "value", "agc"] = _field("norm", "gradient clipping mode")
    amp: bool = _field(False, "mixed precision (float16 on CUDA, bfloat16 on the CPU)")
    grad_checkpointing: bool = _field(False, "activation checkpointing (vitune.set_grad_checkpointing)")
    # evaluation and selection
    eval_interval: int = _field(0, "also evaluate every N epochs (0: only after the last)")
    selection: Literal["final_epoch", "best_eval"] = _field(
        "final_epoch", "best_eval picks the epoch with the best eval-split accuracy (marked in the results)"
    )
    # run
    seed: int = _field(42, "seed of the backbone init, the data order and every epoch's randomness")
    device: Literal["auto", "cpu", "cuda"] = _field("auto", "where to train")
    workers: int = _field(4, "data loading processes")
    recipe: str | None = _field(None, "the recipe the defaults came from")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("few_shot", "k_shot"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @property
    def eval_batch_size(self) -> int:
        return self.validation_batch_size or self.batch_size


_HINTS = typing.get_type_hints(RunConfig)
FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    values: dict[str, Any]
    datasets: dict[str, dict[str, Any]]
    # The published hyper-parameter search (vitune search without --grid): {"grid": {key: values}} or
    # {"strategy": "pevit"}; empty when the recipe's values are fixed.
    search: dict[str, Any] = dataclasses.field(default_factory=dict)


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


# PyYAML's safe loader names a tag it will not construct; 'tag:yaml.org,2002:' is the '!!' shorthand.
_REFUSED_TAG = re.compile(r"could not determine a constructor for the tag '(?P<tag>[^']*)'")
_STANDARD_TAG = "tag:yaml.org,2002:"


def yaml_refusal(error: yaml.YAMLError, document: str) -> str:
    """', line N: why' for a YAML file that ``yaml.safe_load`` refused (`document`: 'a recipe', ...).

    A tag such as ``!!python/object/apply:os.system`` is refused on purpose, and the message says so: the
    file is data, and constructing the tag's object is how a YAML file runs code."""
    mark = getattr(error, "problem_mark", None)
    where = f", line {mark.line + 1}" if mark is not None else ""
    problem = str(getattr(error, "problem", None) or error)
    refused = _REFUSED_TAG.search(problem)
    if refused is None:
        return f"{where}: not valid YAML ({problem})"
    tag = refused["tag"]
    tag = "!!" + tag[len(_STANDARD_TAG):] if tag.startswith(_STANDARD_TAG) else tag
    return (f"{where}: the YAML tag {tag!r} is refused on purpose: {document} is data, read with yaml.safe_load, "
            "and a tag that builds Python objects could run code (nothing was run); write plain values")


def load_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name, or a YAML file by path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = RECIPES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(name_or_path, builtin_recipes(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown recipe {name_or_path!r}{hint}; built-in recipes: {', '.join(builtin_recipes())}, "
                "or give the path of a YAML file"
            )
    if not path.is_file():
        raise ConfigError(f"recipe {path}: no such file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path}{yaml_refusal(e, 'a recipe')}") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of run settings, got {type(loaded).__name__}")
    loaded.pop("description", None)
    datasets = loaded.pop("datasets", None) or {}
    if not isinstance(datasets, dict) or not all(isinstance(v, dict) for v in datasets.values()):
        raise ConfigError(f"recipe {path}: 'datasets' must map dataset names to settings")
    search = loaded.pop("search", None) or {}
    if not isinstance(search, dict) or set(search) - {"grid", "strategy"}:
        raise ConfigError(f"recipe {path}: 'search' must be a mapping with 'grid' (key: [values]) and/or 'strategy'")
    return Recipe(path.stem, path, loaded, {str(k): v for k, v in datasets.items()}, search)


def recipe_as_dict(name_or_path: str) -> dict[str, Any]:
    """A recipe as a plain dict: its run settings (``lr``, ``method_config`` ...), plus ``datasets`` (per-dataset
    overrides, keyed by task folder name) and ``search`` (the published search) when it has them.

    The YAML's ``description`` and comments are not included; ``vitune recipes`` shows the source of each.
    """
    recipe = load_recipe(name_or_path)
    out = dict(recipe.values)
    if recipe.datasets:
        out["datasets"] = {name: dict(values) for name, values in recipe.datasets.items()}
    if recipe.search:
        out["search"] = dict(recipe.search)
    return out


def _check_key(key: str, source: str) -> None:
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{source}: unknown setting {key!r}{hint}")


def _checked(key: str, value: Any, source: str) -> Any:
    if key in MERGED_KEYS:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    value = _check(value, _HINTS[key], f"{source}: {key}")
    if key in ("data", "weights") and value is not None:
        value = str(Path(value).expanduser().resolve())
    return value


def resolve_config(flags: Mapping[str, Any]) -> RunConfig:
    """Layer defaults, the recipe (``flags['recipe']``), its entry for the dataset, then `flags`.

    `flags` holds only the settings given on the command line (absent = not given).
    """
    layers: list[tuple[str, Mapping[str, Any]]] = []
    recipe_name = flags.get("recipe")
    if recipe_name is not None:
        recipe = load_recipe(recipe_name)
        if "method" in flags and "method" in recipe.values and flags["method"] != recipe.values["method"]:
            raise ConfigError(
                f"recipe {recipe.name} is for method {recipe.values['method']!r}, not {flags['method']!r}"
            )
        data = flags.get("data") or recipe.values.get("data")
        dataset = Path(data).expanduser().resolve().name if data else None
        layers.append((f"recipe {recipe.path}", recipe.values))
        if dataset in recipe.datasets:
            layers.append((f"recipe {recipe.path}, dataset {dataset}", recipe.datasets[dataset]))
    layers.append(("command line", flags))

    values: dict[str, Any] = {}
    merged: dict[str, dict] = {key: {} for key in MERGED_KEYS}
    for source, layer in layers:
        for key, value in layer.items():
            _check_key(key, source)
            value = _checked(key, value, source)
            if key in MERGED_KEYS:
                merged[key].update(value)
            else:
                values[key] = value
    # A training scheme's own defaults (layer-wise iterative training's SGD) sit under recipe and flags.
    values = {**scheme_defaults(merged["method_config"]), **values, **merged}
    config = RunConfig(**values)
    _validate(config)
    return config


def _validate(config: RunConfig) -> None:
    missing = [f"--{k}" for k in ("method", "model", "data") if getattr(config, k) is None]
    if missing:
        raise RunError(f"vitune train needs {', '.join(missing)} (from the command line or the recipe)")
    for key in ("epochs", "batch_size", "grad_accum_steps", "rounds"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(config, key)}")
    if config.validation_batch_size is not None and config.validation_batch_size < 1:
        raise ConfigError(f"validation_batch_size must be at least 1, got {config.validation_batch_size}")
    for key in ("eval_interval", "workers", "warmup_epochs"):
        if getattr(config, key) < 0:
            raise ConfigError(f"{key} must not be negative, got {getattr(config, key)}")
    if config.img_size is not None and config.img_size < 1:
        raise ConfigError(f"img_size must be positive, got {config.img_size}")
    if not 0.0 <= config.smoothing < 1.0:
        raise ConfigError(f"smoothing must be in [0, 1), got {config.smoothing}")
    if config.pretrained and config.weights is not None:
        raise RunError("give either --pretrained (timm's weights) or --weights PATH (a local file), not both")
    check_rounds(config.method_config, config.rounds)
    for key in ("few_shot", "k_shot"):
        pair = getattr(config, key)
        if pair is not None and (pair[0] < 1 or pair[1] < 0):
            raise ConfigError(f"{key} needs [shots >= 1, seed >= 0], got {list(pair)}")
    if config.few_shot is not None and config.k_shot is not None:
        raise ConfigError("give --few-shot (NOAH's lists) or --k-shot (K images per class drawn), not both")


def config_from_dict(values: Mapping[str, Any], source: str) -> RunConfig:
    """A RunConfig from a stored ``run`` mapping (config.yaml), checked like a recipe."""
    checked = {}
    for key, value in values.items():
        _check_key(key, source)
        checked[key] = _checked(key, value, source)
    config = RunConfig(**checked)
    _validate(config)
    return config


def differences(stored: RunConfig, given: RunConfig) -> list[str]:
    """Settings in which `given` differs from `stored`, ignoring those that do not change the result."""
    a, b = stored.to_dict(), given.to_dict()
    return [
        f"{k}: {a[k]!r} in the run, {b[k]!r} now"
        for k in FIELDS
        if k not in RESUMABLE_DIFFERENCES and a[k] != b[k]
    ]
