"""The built-in recipes (the YAML files beside this module) as rows for ``vitune recipes``.

A recipe's benchmark is the suffix of its name (``_vtab``, ``_fgvc``, ``_elevater``, ``_image``); its source is
the first sentence of its ``description``. Loading goes through :func:`vitune.train.config.load_recipe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

BENCHMARK_SUFFIXES = {"vtab": "VTAB-1k", "fgvc": "FGVC", "elevater": "ELEVATER", "image": "images"}


@dataclass(frozen=True)
class RecipeRow:
    name: str
    method: str
    benchmark: str
    datasets: int  # how many datasets have their own values
    source: str


def recipe_rows() -> list[RecipeRow]:
    from ..config import builtin_recipes, load_recipe

    rows = []
    for name in builtin_recipes():
        recipe = load_recipe(name)
        raw = yaml.safe_load(Path(recipe.path).read_text(encoding="utf-8")) or {}
        description = " ".join(str(raw.get("description", "")).split())
        source = description.split(": ")[0].split(". ")[0]
        suffix = name.rsplit("_", 1)[-1]
        rows.append(RecipeRow(name, str(recipe.values.get("method", "?")), BENCHMARK_SUFFIXES.get(suffix, suffix),
                              len(recipe.datasets), source))
    return rows
