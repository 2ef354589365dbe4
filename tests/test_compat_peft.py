"""vitune.compat.peft against Hugging Face PEFT itself: adapter folders saved by one load into the other with the
same logits, unmerged and merged; what vitune's LoRA cannot express is refused by name."""

import json

import pytest
import torch

import vitune
from helpers import image_batch, make_backbone
from vitune.compat.peft import PeftCompatError, load_peft_lora, save_peft_lora

peft = pytest.importorskip("peft")  # a test dependency; skipped only where the test extra is missing


def _randomize(model, names, seed=3):
    """Non-zero values (PEFT and vitune start B at zero, which would prove nothing), the head included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(part in name for part in names):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _peft_folder(tmp_path, kind="vit", **config):
    model = peft.get_peft_model(make_backbone(kind), peft.LoraConfig(**config))
    _randomize(model, ("lora_", "modules_to_save"))
    model.save_pretrained(tmp_path / "peft")
    return model.eval(), tmp_path / "peft"


def _edit_config(folder, **changes):
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _assert_same_logits(ours, theirs, atol=1e-5):
    x = image_batch(ours)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        expected = theirs(x)
        with theirs.disable_adapter():
            assert (theirs(x) - expected).abs().max() > 1e-2, "the adapter changes nothing: the test proves nothing"
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=atol)
    return x, expected


@pytest.mark.parametrize(
    "kind,config,vitune_config",
    [
        ("vit", dict(r=4, lora_alpha=8, target_modules=["qkv", "fc1"], modules_to_save=["head"]),
         dict(r=4, alpha=8.0, targets=("qkv", "fc1"))),
        ("vit", dict(r=2, lora_alpha=3, target_modules=r"blocks\.\d+\.(attn\.proj|mlp\.fc2)", lora_dropout=0.1),
         dict(r=2, alpha=3.0, targets=("proj", "fc2"), dropout=0.1)),
        ("vit", dict(r=4, lora_alpha=16, target_modules="all-linear", modules_to_save=["head"]),
         dict(r=4, targets=("qkv", "proj", "fc1", "fc2"))),
        ("vit", dict(r=3, lora_alpha=4, target_modules=["blocks.1.attn.qkv", "fc2"], modules_to_save=["head"],
                     rank_pattern={"qkv": 3}, alpha_pattern={r"blocks\.\d\.\w+\.\w+": 4}),
         dict(r=3, pattern=r"^(?:blocks\.0\.mlp\.fc2|blocks\.1\.attn\.qkv|blocks\.1\.mlp\.fc2)$")),
        ("swin", dict(r=2, lora_alpha=2, target_modules=["qkv"], modules_to_save=["head.fc"]),
         dict(r=2, targets=("qkv",))),
    ],
    ids=["list+head", "regex+dropout", "all-linear", "patterns-uniform", "swin"],
)
def test_peft_adapter_loads_with_the_same_logits_unmerged_and_merged(tmp_path, kind, config, vitune_config):
    theirs, folder = _peft_folder(tmp_path, kind, **config)
    ours = load_peft_lora(make_backbone(kind), folder)
    loaded = vitune.applied_method(ours).config
    assert {k: getattr(loaded, k) for k in vitune_config} == vitune_config
    x, expected = _assert_same_logits(ours, theirs)
    vitune.merge(ours)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours(x), theirs.merge_and_unload()(x), rtol=0, atol=1e-5)


def test_rslora_is_loaded_with_its_scale_folded_into_alpha(tmp_path):
    theirs, folder = _peft_folder(tmp_path, r=4, lora_alpha=8, target_modules=["qkv"], use_rslora=True,
                                  modules_to_save=["head"])
    ours = load_peft_lora(make_backbone(), folder)
    assert vitune.applied_method(ours).config.alpha == pytest.approx(8 * 2)  # 8 / sqrt(4) == 16 / 4
    _assert_same_logits(ours, theirs)


@pytest.mark.parametrize(
    "config",
    [{}, {"targets": ["q", "v", "fc1"]}, {"targets": ["qkv", "fc2"], "r": 2, "alpha": 3.0, "dropout": 0.1},
     {"pattern": r"blocks\.1\.attn\.proj$", "r": 5}],
    ids=["q,v (default)", "q,v+fc1 (rank_pattern)", "qkv+fc2", "pattern"],
)
def test_saved_folder_loads_in_peft_with_the_same_logits_unmerged_and_merged(tmp_path, config):
    ours = vitune.apply(make_backbone(), "lora", **config)
    _randomize(ours, ("lora_", "head"))
    folder = save_peft_lora(ours, tmp_path / "for_peft")
    theirs = peft.PeftModel.from_pretrained(make_backbone(), folder)
    assert theirs.peft_config["default"].lora_dropout == config.get("dropout", 0.0)
    x, expected = _assert_same_logits(ours, theirs)
    merged = theirs.merge_and_unload()
    vitune.merge(ours)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), expected, rtol=0, atol=1e-5)
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, merged.state_dict()[key], rtol=0, atol=1e-6)


def test_vitune_to_peft_and_back(tmp_path):
    ours = vitune.apply(make_backbone(), "lora", targets=["qkv", "fc1"], r=4, alpha=2.0)
    _randomize(ours, ("lora_", "head"))
    back = load_peft_lora(make_backbone(), save_peft_lora(ours, tmp_path / "peft"))
    assert vitune.applied_method(back).config == vitune.applied_method(ours).config
    for key, value in ours.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key


def _refused(model, folder, message, error=PeftCompatError):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message):
        load_peft_lora(model, folder)
    assert vitune.applied_method(model) is None, "a refused load left a method applied"
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_dora_is_refused_by_name(tmp_path):
    _, folder = _peft_folder(tmp_path, r=2, lora_alpha=2, target_modules=["qkv"], use_dora=True)
    _refused(make_backbone(), folder, r"key 'use_dora' is true: DoRA")


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"bias": "lora_only"}, r"key 'bias' is 'lora_only'"),
        ({"lora_bias": True}, r"key 'lora_bias' is True: a PEFT option vitune's lora cannot express"),
        ({"layers_to_transform": [0]}, r"key 'layers_to_transform' is \[0\]"),
        ({"fan_in_fan_out": True}, r"key 'fan_in_fan_out' is true"),
        ({"init_lora_weights": "pissa"}, r"key 'init_lora_weights' is 'pissa': .* changed backbone"),
        ({"peft_type": "IA3"}, r"key 'peft_type' is 'IA3'"),
        ({"modules_to_save": ["head", "norm"]}, r"key 'modules_to_save' names 'norm', which is not the classifier"),
        ({"target_modules": ["qkv", "proj"]}, r"matches 'patch_embed.proj', a Conv2d: vitune's lora adapts nn.Linear"),
        ({"target_modules": ["qkv", "head"], "modules_to_save": None}, r"matches the classifier head 'head'"),
        ({"target_modules": ["nothing"]}, r"key 'target_modules' \['nothing'\] matches no module"),
        ({"lora_dropout": 1.5}, r"adapter_config.json: LoRAConfig.dropout: must be in \[0, 1\)"),
        ({"rank_pattern": {"blocks.0.attn.qkv": 8}}, r"key 'rank_pattern' gives the adapted layers different values"),
        ({"alpha_pattern": {"blocks.1.attn.qkv": 3}}, r"key 'alpha_pattern' gives the adapted layers different"),
    ],
)
def test_what_vitune_cannot_express_is_refused_by_key_and_the_model_kept(tmp_path, changes, message):
    _, folder = _peft_folder(tmp_path, r=2, lora_alpha=2, target_modules=["qkv"], modules_to_save=["head"])
    _edit_config(folder, **changes)
    _refused(make_backbone(), folder, message)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"r": 3}, r"tensor 'base_model.model.blocks.0.attn.qkv.lora_A.weight' has shape \(2, 64\), .* \(3, 64\)"),
        ({"target_modules": ["qkv", "fc1"]}, r"missing \['base_model.model.blocks.0.mlp.fc1.lora_A.weight'"),
    ],
)
def test_tensors_that_do_not_fit_the_config_are_named(tmp_path, changes, message):
    _, folder = _peft_folder(tmp_path, r=2, lora_alpha=2, target_modules=["qkv"], modules_to_save=["head"])
    _edit_config(folder, **changes)
    _refused(make_backbone(), folder, message, error=vitune.AdapterFileError)


def test_other_head_size_pickles_and_applied_models_are_refused(tmp_path):
    _, folder = _peft_folder(tmp_path, r=2, lora_alpha=2, target_modules=["qkv"], modules_to_save=["head"])
    _refused(make_backbone(num_classes=7), folder, r"tensor 'base_model.model.head.weight' has shape \(5, 64\)",
             error=vitune.AdapterFileError)
    with pytest.raises(PeftCompatError, match="into a plain backbone; this one has 'bitfit'"):
        load_peft_lora(vitune.apply(make_backbone(), "bitfit"), folder)
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    _refused(make_backbone(), folder, r"adapter_model.bin: a pickle, which vitune does not read")
    assert issubclass(PeftCompatError, vitune.AdapterFileError)


def test_save_refuses_another_method(tmp_path):
    with pytest.raises(PeftCompatError, match="writes vitune's 'lora' method; this model has 'repadapter'"):
        save_peft_lora(vitune.apply(make_backbone(), "repadapter"), tmp_path / "x")


def test_a_missing_or_broken_config_is_named(tmp_path):
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_config.json: missing"):
        load_peft_lora(make_backbone(), tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA",\n "r": }')
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_config.json, line 2 column 7: not valid JSON"):
        load_peft_lora(make_backbone(), tmp_path)
