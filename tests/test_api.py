"""The public API's names and its errors on bad input."""

import pytest
import torch

import vitune
from helpers import image_batch, make_backbone, perturb_trainable


def test_public_names():
    for name in ("apply", "methods", "is_mergeable", "count_parameters", "save_adapter", "load_adapter", "merge"):
        assert callable(getattr(vitune, name))
    assert {"lora", "bitfit", "linear", "full"} <= set(vitune.methods())
    assert vitune.methods() == sorted(vitune.methods())


def test_mergeable_flags():
    for name in ("lora", "bitfit", "linear", "full"):
        assert vitune.is_mergeable(name)


def test_unknown_method_names_it_and_suggests():
    with pytest.raises(vitune.UnknownMethodError, match=r"'lorra'.*did you mean 'lora'"):
        vitune.apply(make_backbone(), "lorra")
    with pytest.raises(vitune.UnknownMethodError, match="registered methods: .*lora"):
        vitune.is_mergeable("nope")


def test_unknown_config_key_names_it():
    with pytest.raises(vitune.ConfigError, match=r"unknown config key 'rank' for method 'lora'; valid keys: r, "):
        vitune.apply(make_backbone(), "lora", rank=4)
    with pytest.raises(vitune.ConfigError, match=r"'alhpa' for method 'lora' \(did you mean 'alpha'\?\)"):
        vitune.apply(make_backbone(), "lora", alhpa=4)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"r": "8"}, r"lora\.r must be an integer"),
        ({"r": 0}, r"r: must be positive"),
        ({"dropout": 1.5}, r"dropout: must be in \[0, 1\)"),
        ({"targets": ["q", "x"]}, r"unknown target role 'x'"),
        ({"pattern": "("}, r"not a valid regular expression"),
        ({"pattern": "nothing_here"}, r"matches no linear layer"),
    ],
)
def test_bad_config_values_name_the_key(config, message):
    with pytest.raises(vitune.ConfigError, match=message):
        vitune.apply(make_backbone(), "lora", **config)


def test_a_failed_apply_leaves_the_model_untouched():
    model = make_backbone()
    with pytest.raises(vitune.ConfigError):
        vitune.apply(model, "lora", pattern="nothing_here")
    assert all(p.requires_grad for p in model.parameters())
    assert vitune.count_parameters(model)["method"] == 0


def test_one_method_per_model():
    model = vitune.apply(make_backbone(), "lora")
    with pytest.raises(vitune.VituneError, match="already has method 'lora'"):
        vitune.apply(model, "bitfit")


def test_merge_without_method_is_an_error():
    with pytest.raises(vitune.VituneError, match="no vitune method is applied"):
        vitune.merge(make_backbone())


def test_unsupported_backbone():
    with pytest.raises(vitune.BackboneError, match="does not know where to attach in a .*Sequential"):
        vitune.apply(torch.nn.Sequential(torch.nn.Linear(4, 4)), "lora")


def test_count_parameters_plain_and_applied():
    model = make_backbone()
    total = sum(p.numel() for p in model.parameters())
    assert vitune.count_parameters(model) == {
        "method": 0, "extra": 0, "head": 64 * 5 + 5, "trainable": total, "total": total
    }
    vitune.apply(model, "linear")
    assert vitune.count_parameters(model) == {"method": 0, "extra": 0, "head": 325, "trainable": 325, "total": total}


@pytest.mark.parametrize("method", vitune.methods())
def test_method_extra_and_head_add_up_to_trainable(method):
    from cases import TINY_CONFIGS

    model = vitune.apply(make_backbone("dinov2_reg"), method, **TINY_CONFIGS.get(method, {}))
    counts = vitune.count_parameters(model)
    assert counts["method"] + counts["extra"] + counts["head"] == counts["trainable"]
    assert counts["trainable"] == sum(p.numel() for _, p in vitune.trainable_parameters(model))


def test_consolidator_counts_its_biases_and_norms_as_extra():
    model = vitune.apply(make_backbone(), "consolidator", fc_groups=[16])
    counts = vitune.count_parameters(model)
    dim, hidden, depth = 64, 256, 2
    biases = 3 * dim + dim + hidden + dim  # qkv, proj, fc1, fc2
    norms = 2 * 2 * dim  # norm1, norm2: weight and bias
    assert counts["extra"] == depth * (biases + norms) + 2 * dim  # the final norm too


def test_full_and_bitfit_counts_on_vit_b16():
    from helpers import vit_b16

    model = vitune.apply(vit_b16(num_classes=100), "full")
    counts = vitune.count_parameters(model)
    assert counts["method"] == 85_798_656  # ViT-B/16 without its head: the papers' 85.8M
    assert counts["trainable"] == counts["total"] == 85_798_656 + 76_900
    bitfit = vitune.count_parameters(vitune.apply(vit_b16(num_classes=0), "bitfit"))
    assert bitfit["method"] == 12 * (2304 + 768 + 3072 + 768) + 768  # linear + patch-embedding biases
    with_norms = vitune.count_parameters(vitune.apply(vit_b16(num_classes=0), "bitfit", norms=True))
    assert with_norms["method"] == bitfit["method"] + 12 * 2 * 768 + 768


def test_inserted_modules_follow_the_model_mode():
    """Dropout acts in train mode and not in eval mode; B is non-zero, so dropout changes the output."""
    model = vitune.apply(make_backbone().eval(), "lora", dropout=0.5)
    perturb_trainable(model)
    assert not any(m.training for m in model.modules())
    x = image_batch(model)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(0)
        first = model(x)
        second = model(x)
    assert (first - second).abs().max() > 1e-4, "dropout had no effect in train mode"


def _structure(model):
    """Everything apply may change: module classes, tensor names and values, requires_grad, modes."""
    return (
        [(n, type(m).__name__, m.training) for n, m in model.named_modules()],
        {n: t.detach().clone() for n, t in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        sorted(vars(model)),
    )


def _assert_same_structure(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert a[2] == b[2] and a[3] == b[3]


@pytest.mark.parametrize("method", vitune.methods())
def test_apply_failing_after_its_surgery_leaves_the_model_as_it_was(method, monkeypatch):
    """A failure at the last moment (every module already replaced) is undone completely, for every method."""
    from cases import TINY_CONFIGS

    model = make_backbone("dinov2_reg")
    model.head.requires_grad_(False)  # a non-default flag, to see that flags come back as they were
    before = _structure(model)
    from vitune.methods import get_method

    cls = get_method(method)
    original = cls.inject

    def inject_then_fail(self, model, places):
        original(self, model, places)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cls, "inject", inject_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        vitune.apply(model, method, **TINY_CONFIGS.get(method, {}))
    _assert_same_structure(_structure(model), before)
    assert vitune.applied_method(model) is None
    monkeypatch.setattr(cls, "inject", original)
    vitune.apply(model, method, **TINY_CONFIGS.get(method, {}))  # a second attempt works
    assert vitune.applied_method(model).name == method


def test_compiled_and_data_parallel_models_are_unwrapped():
    model = torch.compile(make_backbone(), backend="eager")
    assert vitune.apply(model, "lora") is model
    assert vitune.applied_method(model).name == "lora"
    assert vitune.count_parameters(model)["method"] == vitune.count_parameters(model._orig_mod)["method"] > 0
    perturb_trainable(model._orig_mod)
    x = image_batch(model._orig_mod)
    with torch.no_grad():
        before = model(x)
    vitune.merge(model)
    with torch.no_grad():
        assert (model(x) - before).abs().max() <= 1e-4
    parallel = torch.nn.DataParallel(make_backbone())
    vitune.apply(parallel, "bitfit")
    assert vitune.applied_method(parallel.module).name == "bitfit"


def test_ddp_wrapper_is_refused_by_apply():
    model = make_backbone()

    class FakeDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self, module):  # no process group needed to test the refusal
            torch.nn.Module.__init__(self)
            self.module = module

    with pytest.raises(vitune.VituneError, match="before wrapping the model in DistributedDataParallel"):
        vitune.apply(FakeDDP(model), "lora")
    wrapped = FakeDDP(vitune.apply(model, "lora"))
    assert vitune.count_parameters(wrapped) == vitune.count_parameters(model)
    assert [n for n, _ in vitune.trainable_parameters(wrapped)] == [
        n for n, p in model.named_parameters() if p.requires_grad
    ]


def test_is_mergeable_accepts_a_model():
    assert vitune.is_mergeable(vitune.apply(make_backbone(), "lora"))
    assert not vitune.is_mergeable(vitune.apply(make_backbone(), "adaptformer"))
    with pytest.raises(vitune.VituneError, match="no vitune method is applied"):
        vitune.is_mergeable(make_backbone())


def _grouped_names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    decay = [names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    no_decay = [names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    return decay, no_decay


@pytest.mark.parametrize("method", vitune.methods())
def test_parameter_groups_partition_the_trainable_parameters(method):
    from cases import TINY_CONFIGS

    model = vitune.apply(make_backbone("dinov2_reg"), method, **TINY_CONFIGS.get(method, {}))
    decay, no_decay = _grouped_names(model, vitune.parameter_groups(model, weight_decay=0.05))
    assert sorted(decay + no_decay) == sorted(n for n, _ in vitune.trainable_parameters(model))
    assert "head.weight" in decay and "head.bias" in no_decay


@pytest.mark.parametrize(
    "method,config,no_decay_expected,decay_expected",
    [
        ("lora", {}, [], ["blocks.0.attn.qkv.lora_A", "blocks.1.attn.qkv.lora_B"]),
        ("vpt_deep", {"num_tokens": 3}, ["blocks.0.prompts", "blocks.1.prompts"], []),
        ("vpt_shallow", {"num_tokens": 3}, ["blocks.0.prompts"], []),
        ("ssf", {}, ["blocks.0.attn.qkv.scale", "blocks.0.attn.qkv.shift", "blocks.1.norm2.scale"], []),
        ("bitfit", {}, ["patch_embed.proj.bias", "blocks.0.attn.qkv.bias", "blocks.1.mlp.fc2.bias"], []),
        ("consolidator", {"fc_groups": [16]},
         ["blocks.0.norm1.weight", "blocks.0.attn.qkv.base_layer.bias", "blocks.1.mlp.fc2.branches.0.bias", "norm.weight"],
         ["blocks.0.attn.qkv.branches.0.weight", "blocks.1.mlp.fc2.branches.0.weight"]),
        ("full", {}, ["pos_embed", "cls_token", "reg_token", "blocks.0.norm1.weight"], ["blocks.0.attn.qkv.weight"]),
    ],
)
def test_parameter_groups_spare_biases_norms_prompts_scales_and_tokens(method, config, no_decay_expected,
                                                                        decay_expected):
    model = vitune.apply(make_backbone("dinov2_reg"), method, **config)
    decay, no_decay = _grouped_names(model, vitune.parameter_groups(model, weight_decay=0.05))
    assert set(no_decay_expected) <= set(no_decay), sorted(set(no_decay_expected) - set(no_decay))
    assert set(decay_expected) <= set(decay), sorted(set(decay_expected) - set(decay))
    assert all(p.ndim > 1 for n, p in model.named_parameters() if n in decay), "a 1-D tensor is decayed"


def test_parameter_groups_without_filter_decay_every_trainable_tensor():
    model = vitune.apply(make_backbone(), "vpt_deep", num_tokens=3)
    groups = vitune.parameter_groups(model, 0.05, filter_bias_and_bn=False)
    decay, no_decay = _grouped_names(model, groups)
    assert no_decay == [] and decay == [n for n, _ in vitune.trainable_parameters(model)]


def test_no_weight_decay_names_in_the_stock_model_reach_wrapped_parameters(monkeypatch):
    """timm's no_weight_decay() names the stock model's tensors; inside a vitune wrapper they have longer names."""
    model = vitune.apply(make_backbone(), "vpt_deep", num_tokens=3)
    for name in ("blocks.0.block.attn.qkv.weight", "blocks.1.block.attn.qkv.weight"):
        model.get_parameter(name).requires_grad_(True)  # a backbone weight trained inside VPT's block wrapper
    monkeypatch.setattr(type(model), "no_weight_decay", lambda self: {"blocks.0.attn.qkv.weight"}, raising=True)
    decay, no_decay = _grouped_names(model, vitune.parameter_groups(model, 0.05))
    assert "blocks.0.block.attn.qkv.weight" in no_decay and "blocks.1.block.attn.qkv.weight" in decay


def test_adamw_takes_the_groups_and_training_builds_its_optimizer_from_them():
    from vitune.train.config import RunConfig
    from vitune.train.optim import build_optimizer

    model = vitune.apply(make_backbone(), "vpt_deep", num_tokens=3)
    groups = vitune.parameter_groups(model, weight_decay=0.05)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    torch.nn.functional.cross_entropy(model(image_batch(model)), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    built = build_optimizer(model, RunConfig(opt="adamw", weight_decay=0.05))
    assert [(g["weight_decay"], [id(p) for p in g["params"]]) for g in built.param_groups] == [
        (g["weight_decay"], [id(p) for p in g["params"]]) for g in groups
    ]


def _recipes():
    from vitune.train.recipes import recipe_rows

    return [(row.name, row.method, row.name.rsplit("_", 1)[-1]) for row in recipe_rows()]


@pytest.mark.parametrize("recipe,method,benchmark", _recipes())
def test_recommended_config_is_what_vitune_train_uses(recipe, method, benchmark, tmp_path):
    """The same values as `vitune train --recipe` resolves, on a task with its own values where there is one."""
    from vitune.methods import get_method
    from vitune.train.config import resolve_config

    recommended = vitune.recommended_config(method, benchmark)
    assert recommended["recipe"] == recipe
    assert {"opt", "weight_decay", "batch_size", "epochs", "warmup_epochs", "sched"} <= set(recommended)
    assert "lr" in recommended or "lr" in recommended["search"]["grid"], "no lr, and no published search for it"
    dataset = next(iter(recommended.get("datasets", {})), "any_task")
    for_task = vitune.recommended_config(method, benchmark, dataset=dataset)
    assert "datasets" not in for_task
    resolved = resolve_config({"recipe": recipe, "model": "vit_tiny_patch16_224", "data": str(tmp_path / dataset)})
    for key, value in for_task.items():
        if key not in ("recipe", "search"):
            expected = getattr(resolved, key)
            assert (list(expected) if isinstance(expected, tuple) else expected) == value, key
    cls = get_method(method)
    cls.Config.from_dict(for_task.get("method_config", {}), method=method)  # keyword arguments apply() takes


def test_recommended_config_gives_the_published_values():
    assert vitune.recommended_config("arc")["lr"] == 0.01  # ARC's official 1e-2 (vtab_ARC_train.py)
    assert vitune.recommended_config("repadapter", dataset="svhn")["method_config"]["scale"] == 10
    svhn = vitune.recommended_config("consolidator", dataset="svhn")
    assert (svhn["lr"], svhn["weight_decay"], svhn["method_config"]) == (0.01, 0.001, {"fc_groups": [384], "rep_drop": 0.5})
    fgvc = vitune.recommended_config("arc_att", "fgvc", dataset="StanfordCars")
    assert (fgvc["lr"], fgvc["method_config"]["dropout"]) == (0.005, 0.0)


def test_recommended_config_errors_name_what_exists():
    with pytest.raises(vitune.UnknownMethodError, match="did you mean 'lora'"):
        vitune.recommended_config("lorra")
    with pytest.raises(vitune.ConfigError, match=r"no published 'vtab' recipe; its recipes: adaptformer_image "
                                                 r"\(benchmark='image'\)"):
        vitune.recommended_config("adaptformer")
    with pytest.raises(vitune.ConfigError, match=r"no values for dataset 'svhm'; its datasets: cifar, .*svhn"):
        vitune.recommended_config("repadapter", dataset="svhm")
    with_recipes = {method for _, method, _ in _recipes()}
    without = [m for m in vitune.methods() if m not in with_recipes]
    if without:
        with pytest.raises(vitune.ConfigError, match=rf"'{without[0]}' has no published recipe in vitune; "
                                                     r"methods with one: .*repadapter \(vtab\)"):
            vitune.recommended_config(without[0])
