"""The built-in recipes: every one resolves, its method config and search grid are valid, `vitune recipes` lists
them, per-dataset keys are real task names, the published grids are the sources' values."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import vitune
from test_train_support import run_cli
from vitune.data import KNOWN_VTAB_CLASSES
from vitune.train import builtin_recipes, load_recipe, resolve_config
from vitune.train.config import recipe_as_dict
from vitune.train.recipes import recipe_rows
from vitune.train.search import check_grid_key

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


def test_training_md_recipe_table_lists_every_recipe():
    """docs/training.md's recipe table has one row per built-in recipe, with its method and benchmark."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    section = page[page.index("### Recipes"):].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    assert rows == {r.name: (r.method, r.benchmark) for r in recipe_rows()}


@pytest.mark.parametrize("name", builtin_recipes())
def test_method_config_and_search_are_valid(name):
    recipe = load_recipe(name)
    configs = [recipe.values.get("method_config", {})]
    configs += [{**configs[0], **entry.get("method_config", {})} for entry in recipe.datasets.values()]
    for config in configs:  # the method accepts it on a ViT-B/16-wide block (built on the meta device: no memory)
        with torch.device("meta"):
            vitune.apply(timm.create_model("vit_base_patch16_224", depth=1), recipe.values["method"], **config)
    search = recipe.search
    if "grid" in search:
        for key, values in search["grid"].items():
            check_grid_key(key)
            assert isinstance(values, list) and len(set(map(repr, values))) == len(values)
    assert search.get("strategy", "grid") in ("grid", "pevit")


def test_recipe_as_dict_is_the_plain_recipe():
    plain = recipe_as_dict("repadapter_vtab")
    assert plain["method"] == "repadapter" and plain["lr"] == 0.001 and "description" not in plain
    assert plain["datasets"]["cifar"] == {"method_config": {"scale": 0.1}}
    assert plain["search"] == {"grid": {"method.scale": [0.1, 0.5, 1, 5, 10]}}
    assert "datasets" not in recipe_as_dict("lora_vtab") and "search" not in recipe_as_dict("lora_vtab")
    assert recipe_as_dict("kadaptation_elevater")["search"] == {"strategy": "pevit"}


def test_vpt_protocol_grids_are_the_base_rates_scaled_by_batch():
    # tune_vtab.py scales its base learning rates by batch / 256; the recipes list the scaled values
    base = {"prompt": [50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05],
            "linear": [50.0, 25.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05],
            "finetune": [0.001, 0.0001, 0.0005, 0.005]}
    for name, kind in (("vpt_deep_vtab", "prompt"), ("vpt_shallow_vtab", "prompt"), ("linear_vtab", "linear"),
                       ("full_vtab", "finetune")):
        recipe = load_recipe(name)
        scaled = sorted(lr * recipe.values["batch_size"] / 256 for lr in base[kind])
        assert recipe.search["grid"]["lr"] == pytest.approx(scaled)
