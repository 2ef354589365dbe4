"""The resolved run configuration: defaults < recipe < recipe's dataset entry < command line; recipes; flags."""

from __future__ import annotations

import dataclasses

import pytest

from vitune import cli
from vitune.errors import ConfigError, RunError
from vitune.methods import get_method
from vitune.train import RunConfig, builtin_recipes, load_recipe, resolve_config
from vitune.train.config import differences

BASE = {"method": "lora", "model": "vit_tiny_patch16_224", "data": "/data/cifar"}


def write_recipe(tmp_path, text: str):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_then_recipe_then_dataset_entry_then_flags(tmp_path):
    recipe = write_recipe(tmp_path, """
method: lora
lr: 0.5
epochs: 7
weight_decay: 0.25
method_config: {r: 4, alpha: 2.0}
model_kwargs: {depth: 2}
datasets:
  cifar: {lr: 0.05, method_config: {r: 2}}
  svhn: {lr: 9.0}
""")
    config = resolve_config({**BASE, "recipe": recipe, "epochs": 3, "method_config": {"alpha": 1.0},
                             "model_kwargs": {"embed_dim": 32}})
    assert config.epochs == 3                      # flag over recipe
    assert config.lr == 0.05                       # the dataset entry over the recipe
    assert config.weight_decay == 0.25             # recipe over default
    assert config.batch_size == RunConfig().batch_size  # default
    assert config.method_config == {"r": 2, "alpha": 1.0}  # merged key by key
    assert config.model_kwargs == {"depth": 2, "embed_dim": 32}
    assert config.data == "/data/cifar" and config.recipe == recipe


def test_recipe_errors_name_the_file_and_key(tmp_path):
    recipe = write_recipe(tmp_path, "method: lora\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: unknown setting 'learning_rate'"):
        resolve_config({**BASE, "recipe": recipe})
    recipe = write_recipe(tmp_path, "lr: fast\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml: lr must be a number, got 'fast'"):
        resolve_config({**BASE, "recipe": recipe})
    recipe = write_recipe(tmp_path, "lr: [1\n")
    with pytest.raises(ConfigError, match=r"mine\.yaml, line \d+: not valid YAML"):
        resolve_config({**BASE, "recipe": recipe})
    with pytest.raises(ConfigError, match=r"unknown recipe 'repadaptr_vtab' \(did you mean 'repadapter_vtab'\?\)"):
        resolve_config({**BASE, "recipe": "repadaptr_vtab"})
    with pytest.raises(ConfigError, match="recipe repadapter_vtab is for method 'repadapter', not 'lora'"):
        resolve_config({**BASE, "recipe": "repadapter_vtab"})


def test_required_settings_and_bad_values():
    with pytest.raises(RunError, match="vitune train needs --model, --data"):
        resolve_config({"method": "lora"})
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        resolve_config({**BASE, "batch_size": 0})
    with pytest.raises(RunError, match="either --pretrained .* or --weights"):
        resolve_config({**BASE, "pretrained": True, "weights": "/w.safetensors"})


@pytest.mark.parametrize("name", builtin_recipes())
def test_builtin_recipes_resolve_with_valid_method_configs(name):
    recipe = load_recipe(name)
    method = recipe.values["method"]
    cls = get_method(method)
    for dataset in [None, *recipe.datasets]:
        config = resolve_config({"model": "vit_base_patch16_224", "data": f"/vtab/{dataset or 'any'}", "recipe": name})
        cls.Config.from_dict(config.method_config, method=method)  # raises on a bad key or value
        assert config.method == method


def test_repadapter_recipe_picks_the_published_scale_per_dataset():
    flags = {"model": "vit_base_patch16_224", "recipe": "repadapter_vtab"}
    assert resolve_config({**flags, "data": "/vtab/svhn"}).method_config["scale"] == 10
    assert resolve_config({**flags, "data": "/vtab/cifar"}).method_config["scale"] == 0.1
    assert "scale" not in resolve_config({**flags, "data": "/elsewhere/mydata"}).method_config  # method default
    # a flag still wins over the dataset entry
    assert resolve_config({**flags, "data": "/vtab/svhn", "method_config": {"scale": 1}}).method_config["scale"] == 1


def test_layerwise_rounds_default_to_sgd_with_momentum_unless_told():
    multi = {**BASE, "method": "adaptformer", "method_config": {"adpnum_option": "multi", "ffn_num": [4, 4]}}
    config = resolve_config(multi)
    assert (config.opt, config.momentum) == ("sgd", 0.9)
    assert resolve_config({**multi, "opt": "adamw"}).opt == "adamw"
    assert resolve_config(BASE).opt == "adamw"


def test_resume_compares_everything_but_worker_count():
    a = resolve_config(BASE)
    assert differences(a, dataclasses.replace(a, workers=0)) == []
    assert differences(a, dataclasses.replace(a, lr=0.5)) == ["lr: 0.001 in the run, 0.5 now"]


def test_command_line_gives_only_the_flags_set():
    args = cli.build_parser().parse_args([
        "train", "--method", "lora", "--set", "r=4", "targets=[\"q\"]", "--model", "m", "--model-kwargs",
        "depth=2", "global_pool=avg", "--data", "d", "--lr", "0.1", "--amp", "--few-shot", "2", "0", "--out", "o",
    ])
    flags = cli._train_flags(args)
    assert flags == {
        "method": "lora", "method_config": {"r": 4, "targets": ["q"]}, "model": "m",
        "model_kwargs": {"depth": 2, "global_pool": "avg"}, "data": "d", "lr": 0.1, "amp": True, "few_shot": [2, 0],
    }
    assert args.out == "o" and args.resume is False


def test_train_flags_are_the_issue_s_and_timm_s():
    parser = cli.build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    flags = {s for a in train._actions for s in a.option_strings if s.startswith("--")}
    issue = {"--method", "--set", "--model", "--model-kwargs", "--pretrained", "--weights", "--data", "--train-split",
             "--eval-split", "--epochs", "--batch-size", "--lr", "--weight-decay", "--img-size", "--normalize", "--head",
             "--rounds", "--recipe", "--seed", "--device", "--out", "--resume"}
    timm_names = {"--opt", "--sched", "--warmup-epochs", "--smoothing", "--drop-path", "--clip-grad", "--amp",
                  "--workers", "--grad-accum-steps", "--momentum", "--opt-eps", "--warmup-lr", "--min-lr",
                  "--sched-on-updates", "--clip-mode", "--validation-batch-size", "--grad-checkpointing"}
    ours = {"--few-shot", "--k-shot", "--eval-interval", "--selection", "--help"}
    assert flags == issue | timm_names | ours
    # every flag but --out/--resume/--help is a RunConfig key
    keys = {f.name for f in dataclasses.fields(RunConfig)}
    for flag in flags - {"--out", "--resume", "--help"}:
        dest = {"--set": "method_config"}.get(flag, flag[2:].replace("-", "_"))
        assert dest in keys, flag


def test_cli_error_for_bad_pairs(capsys):
    assert cli.main(["train", "--method", "lora", "--model", "m", "--model-kwargs", "depth", "--data", "d",
                     "--out", "o"]) == 2
    assert "--model-kwargs expects KEY=VALUE, got 'depth'" in capsys.readouterr().err
