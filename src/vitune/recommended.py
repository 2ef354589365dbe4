"""A method's published training hyper-parameters, for code that builds its own training loop.

The values are read from the built-in YAML recipes that ``vitune train --recipe`` uses
(``train/recipes/*.yaml``, through the recipe loader in ``train/config.py``), so the two never disagree.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .methods import get_method


def recommended_config(name: str, benchmark: str = "vtab", dataset: str | None = None) -> dict[str, Any]:
    """The published recipe of method `name` on `benchmark`, as a plain dict of ``vitune train`` settings.

    Keys are the recipe's (the ``vitune train`` flags with underscores): ``opt``, ``lr``, ``weight_decay``,
    ``filter_bias_and_bn``, ``batch_size``, ``epochs``, ``warmup_epochs``, ``sched``, ``clip_grad`` ...,
    ``method_config`` (keyword arguments for ``vitune.apply``), ``recipe`` (the recipe's name) and, where values
    were published per task, ``datasets`` (task folder name -> the settings it overrides); ``search`` where the
    authors searched values per task (``vitune search``): VPT's ``lr``, for one, is only there, as a grid. A key
    the recipe leaves out takes ``vitune train``'s default (docs/training.md).

    Args:
        name: a method name (``vitune.methods()``).
        benchmark: the recipe's benchmark, the suffix of its name: ``vtab``, ``fgvc``, ``elevater``, ``image``.
        dataset: a task folder name (``"cifar"``, ``"svhn"``): its per-task values applied (``method_config``
            merged key by key, as ``vitune train`` does) and ``datasets`` left out. A recipe without per-task
            values returns the same values for every dataset.

    Raises:
        UnknownMethodError: `name` is not a registered method.
        ConfigError: the method has no published recipe for `benchmark` (the message lists those there are),
            or its per-task values do not name `dataset` (the message lists the tasks they name).
    """
    from .train.config import MERGED_KEYS, recipe_as_dict
    from .train.recipes import recipe_rows

    get_method(name)  # an unknown name fails here, with a suggestion
    rows = recipe_rows()
    own = [row.name for row in rows if row.method == name]
    recipe = next((r for r in own if _benchmark(r) == benchmark), None)
    if recipe is None:
        if own:
            there = ", ".join(f"{r} (benchmark={_benchmark(r)!r})" for r in own)
            raise ConfigError(f"method {name!r} has no published {benchmark!r} recipe; its recipes: {there}")
        with_recipes = ", ".join(f"{row.method} ({_benchmark(row.name)})" for row in rows)
        raise ConfigError(
            f"method {name!r} has no published recipe in vitune; methods with one: {with_recipes}"
        )
    values = recipe_as_dict(recipe)
    values["recipe"] = recipe
    if dataset is None:
        return values
    datasets = values.pop("datasets", None)
    if datasets is None:  # nothing published per task: the same values for every one
        return values
    if dataset not in datasets:
        raise ConfigError(
            f"recipe {recipe} has no values for dataset {dataset!r}; its datasets: {', '.join(datasets)}"
        )
    for key, value in datasets[dataset].items():
        values[key] = {**values.get(key, {}), **value} if key in MERGED_KEYS else value
    return values


def _benchmark(recipe: str) -> str:
    """A built-in recipe's benchmark: the suffix of its name (``arc_fgvc`` -> ``fgvc``)."""
    return recipe.rsplit("_", 1)[-1]
