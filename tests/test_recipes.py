"""The built-in recipes: every one resolves, `vitune recipes` lists them, per-dataset keys are real task names."""

from __future__ import annotations

import pytest

from test_train_support import run_cli
from vitune.data import KNOWN_VTAB_CLASSES
from vitune.train import builtin_recipes, load_recipe, resolve_config
from vitune.train.recipes import recipe_rows

FGVC_TASKS = {"CUB_200_2011", "NABirds", "OxfordFlowers", "StanfordDogs", "StanfordCars"}


@pytest.mark.parametrize("name", builtin_recipes())
def test_recipe_resolves_and_names_real_tasks(name, tmp_path):
    recipe = load_recipe(name)
    config = resolve_config({"recipe": name, "model": "vit_tiny_patch16_224", "data": str(tmp_path)})
    assert config.method == recipe.values["method"] and config.recipe == name
    known = set(KNOWN_VTAB_CLASSES) if name.endswith("_vtab") else FGVC_TASKS if name.endswith("_fgvc") else set()
    assert set(recipe.datasets) <= known
    for task in recipe.datasets:  # a dataset entry resolves too, on a folder of that name
        resolve_config({"recipe": name, "model": "vit_tiny_patch16_224", "data": str(tmp_path / task)})


def test_repadapter_scales_lie_in_the_published_grid():
    for name in ("repadapter_vtab", "repadapter_attn_vtab"):
        scales = {entry["method_config"]["scale"] for entry in load_recipe(name).datasets.values()}
        assert scales <= {0.1, 0.5, 1, 5, 10} and set(load_recipe(name).datasets) == set(KNOWN_VTAB_CLASSES)


def test_consolidator_folder_names_get_the_same_values():
    for name in ("repadapter_vtab", "repadapter_attn_vtab", "consolidator_vtab"):
        datasets = load_recipe(name).datasets
        assert datasets["cifar100"] == datasets["cifar"] and datasets["oxford_pet"] == datasets["oxford_iiit_pet"]


def test_vitune_recipes_lists_every_recipe(capsys):
    code, out, _ = run_cli(["recipes"], capsys)
    assert code == 0
    for row in recipe_rows():
        assert row.name in out and row.source
    assert {r.name for r in recipe_rows()} == set(builtin_recipes())
    assert any(r.benchmark == "ELEVATER" and r.method == "kadaptation" for r in recipe_rows())
