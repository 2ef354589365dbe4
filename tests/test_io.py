"""Adapter files: exactly two files, atomic writes, and clear errors for every kind of bad folder."""

import json

import pytest
import torch

import vitune
from helpers import BACKBONES, image_batch, make_backbone, perturb_trainable


@pytest.fixture
def saved(tmp_path):
    model = vitune.apply(make_backbone(), "lora")
    perturb_trainable(model)
    vitune.save_adapter(model, tmp_path / "ad")
    return model, tmp_path / "ad"


def test_only_trained_tensors_are_saved(saved):
    from safetensors.torch import load_file

    model, folder = saved
    keys = set(load_file(str(folder / "adapter_model.safetensors")))
    assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["method"] == "lora" and config["config"]["r"] == 8
    assert config["backbone"]["family"] == "timm_vit"


def test_loaded_adapter_keeps_training(saved):
    _, folder = saved
    model = vitune.load_adapter(make_backbone(), folder)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is None for p in trainable)
    model(image_batch(model)).sum().backward()
    assert all(p.grad is not None for p in trainable)


def test_missing_folder_and_files(tmp_path, saved):
    _, folder = saved
    with pytest.raises(vitune.AdapterFileError, match="adapter folder not found"):
        vitune.load_adapter(make_backbone(), tmp_path / "nowhere")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_model\.safetensors: missing"):
        vitune.load_adapter(make_backbone(), folder)
    (folder / "adapter_config.json").unlink()
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_config\.json: missing"):
        vitune.load_adapter(make_backbone(), folder)


def test_corrupt_weights(saved):
    _, folder = saved
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_model\.safetensors: not a readable safetensors"):
        vitune.load_adapter(make_backbone(), folder)


def test_corrupt_config_names_the_line(saved):
    _, folder = saved
    path = folder / "adapter_config.json"
    path.write_text('{\n  "method": "lora",\n  "config": {,}\n}\n')
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_config\.json, line 3 column"):
        vitune.load_adapter(make_backbone(), folder)


def test_bad_config_key_in_file_names_file_and_key(saved):
    _, folder = saved
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config["config"]["rank"] = 3
    path.write_text(json.dumps(config))
    with pytest.raises(vitune.AdapterFileError, match=r"adapter_config\.json: .*unknown config key 'rank'"):
        vitune.load_adapter(make_backbone(), folder)


def test_backbone_of_another_shape(saved):
    import timm

    _, folder = saved
    wider = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=96,
                              num_heads=2, num_classes=5)
    with pytest.raises(vitune.AdapterFileError, match=r"embed_dim=64 \(saved\), this model has embed_dim=96"):
        vitune.load_adapter(wider, folder)
    other_head = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=64,
                                   num_heads=2, num_classes=7)
    with pytest.raises(vitune.AdapterFileError, match="num_classes=5"):
        vitune.load_adapter(other_head, folder)


def test_tensor_shape_mismatch_names_the_tensor(saved):
    from safetensors.torch import load_file, save_file

    _, folder = saved
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tensors["blocks.0.attn.qkv.lora_A"] = torch.zeros(16, 32)
    save_file(tensors, str(path))
    with pytest.raises(vitune.AdapterFileError, match=r"'blocks\.0\.attn\.qkv\.lora_A' has shape \(16, 32\)"):
        vitune.load_adapter(make_backbone(), folder)


def test_missing_tensor_is_named(saved):
    from safetensors.torch import load_file, save_file

    _, folder = saved
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    del tensors["head.bias"]
    save_file(tensors, str(path))
    with pytest.raises(vitune.AdapterFileError, match=r"missing \['head\.bias'\]"):
        vitune.load_adapter(make_backbone(), folder)


def test_failed_save_keeps_the_previous_artifact(saved, monkeypatch):
    model, folder = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("vitune.io.save", broken)
    with pytest.raises(OSError, match="disk full"):
        vitune.save_adapter(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file left either


def test_load_into_model_with_method_is_refused(saved):
    _, folder = saved
    with pytest.raises(vitune.AdapterFileError, match="plain backbone"):
        vitune.load_adapter(vitune.apply(make_backbone(), "bitfit"), folder)


# --- the backbone's identity -------------------------------------------------------------------------------


def _config(folder):
    return json.loads((folder / "adapter_config.json").read_text())


def test_adapter_records_its_backbone(saved):
    model, folder = saved
    backbone = _config(folder)["backbone"]
    assert _config(folder)["format_version"] == 2
    assert backbone["architecture"] == "vit_tiny_patch16_224"
    assert backbone["class"] == "timm.models.vision_transformer.VisionTransformer"
    assert backbone["pretrained_tag"] == model.pretrained_cfg["tag"]
    assert (backbone["depth"], backbone["embed_dim"], backbone["num_heads"], backbone["mlp_hidden"]) == (2, 64, 2, 256)
    assert backbone["patch_size"] == [8, 8] and backbone["num_prefix_tokens"] == 1 and backbone["num_classes"] == 5
    assert backbone["fingerprint"].startswith("sha256:")
    # The fingerprint is of the frozen weights: the same for a fresh copy, whatever the adapter's values.
    from vitune.backbones import find_places
    from vitune.backbones.identity import weights_fingerprint

    fresh = make_backbone()
    assert weights_fingerprint(fresh, find_places(fresh)) == backbone["fingerprint"]
    assert weights_fingerprint(fresh.to(torch.bfloat16), find_places(fresh)) == backbone["fingerprint"]


def test_adapter_of_another_architecture_is_refused_naming_both(tmp_path):
    model = vitune.apply(make_backbone("vit"), "lora")
    vitune.save_adapter(model, tmp_path)
    with pytest.raises(vitune.AdapterFileError,
                       match=r"saved on another backbone: .*Saved on vit_tiny_patch16_224 .*this model is "
                             r"vit_small_patch14_reg4_dinov2 .*check_backbone=False"):
        vitune.load_adapter(make_backbone("dinov2_reg"), tmp_path)


def test_adapter_of_other_weights_is_refused_unless_told(saved):
    model, folder = saved
    other = make_backbone(seed=1)  # same architecture and shapes, other weights
    before = {n: t.clone() for n, t in other.state_dict().items()}
    with pytest.raises(vitune.AdapterFileError, match="the frozen weights differ"):
        vitune.load_adapter(other, folder)
    assert vitune.applied_method(other) is None
    assert all(torch.equal(before[n], t) for n, t in other.state_dict().items())
    vitune.load_adapter(other, folder, check_backbone=False)
    assert vitune.applied_method(other).name == "lora"


def test_version_1_files_still_load(saved):
    model, folder = saved
    path = folder / "adapter_config.json"
    config = _config(folder)
    config["format_version"] = 1
    config["backbone"] = {"family": "timm_vit", "depth": 2, "embed_dim": 64, "num_classes": 5,
                          "class": "timm.models.vision_transformer.VisionTransformer",
                          "architecture": "vit_tiny_patch16_224"}
    path.write_text(json.dumps(config))
    x = image_batch(model)
    loaded = vitune.load_adapter(make_backbone(), folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    config["backbone"]["depth"] = 3
    path.write_text(json.dumps(config))
    with pytest.raises(vitune.AdapterFileError, match="depth=3, this model has depth=2"):
        vitune.load_adapter(make_backbone(), folder)


# --- tampered and foreign files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("format", "peft", r"'format' is 'peft', not 'vitune-adapter'"),
        ("format_version", "2", r"'format_version' must be a positive integer, got '2'"),
        ("format_version", True, r"'format_version' must be a positive integer, got True"),
        ("format_version", 0, r"'format_version' must be a positive integer, got 0"),
        ("format_version", 99, r"newer vitune \(format_version 99"),
        ("method", "lorax", r"adapter_config\.json: unknown method 'lorax'"),
        ("method", 3, r"key 'method' is missing or not a string"),
    ],
)
def test_tampered_config_is_refused_naming_the_key(saved, key, value, message):
    _, folder = saved
    config = _config(folder)
    config[key] = value
    (folder / "adapter_config.json").write_text(json.dumps(config))
    model = make_backbone()
    with pytest.raises(vitune.AdapterFileError, match=message):
        vitune.load_adapter(model, folder)
    assert vitune.applied_method(model) is None


def _rewrite_tensor(folder, name, value):
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    tensors[name] = value(tensors[name])
    save_file(tensors, str(path), metadata={"format": "pt", "vitune_method": "lora"})


def test_tensor_of_another_kind_is_refused(saved):
    _, folder = saved
    _rewrite_tensor(folder, "head.weight", lambda t: t.to(torch.int64))
    with pytest.raises(vitune.AdapterFileError, match=r"tensor 'head\.weight' has dtype torch\.int64"):
        vitune.load_adapter(make_backbone(), folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tensor_is_refused(saved, bad):
    _, folder = saved

    def poison(t):
        t = t.double()
        t[0, 0] = bad
        return t

    _rewrite_tensor(folder, "head.weight", poison)
    with pytest.raises(vitune.AdapterFileError, match=r"tensor 'head\.weight' has 1 NaN or infinite values"):
        vitune.load_adapter(make_backbone(), folder)


def test_weights_of_another_method_are_refused(saved, tmp_path):
    _, folder = saved
    other = vitune.apply(make_backbone(), "bitfit")
    vitune.save_adapter(other, tmp_path / "bitfit")
    (folder / "adapter_model.safetensors").write_bytes((tmp_path / "bitfit" / "adapter_model.safetensors").read_bytes())
    with pytest.raises(vitune.AdapterFileError, match="holds the tensors of method 'bitfit'.* names 'lora'"):
        vitune.load_adapter(make_backbone(), folder)


# --- all or nothing ----------------------------------------------------------------------------------------


def test_failed_load_leaves_the_model_as_it_was_and_a_second_attempt_works(saved):
    model, folder = saved
    good = (folder / "adapter_model.safetensors").read_bytes()
    _rewrite_tensor(folder, "blocks.1.attn.qkv.lora_A", lambda t: torch.zeros(3, 3))
    target = make_backbone()
    target.head.requires_grad_(False)
    before = ([(n, type(m)) for n, m in target.named_modules()], {n: t.clone() for n, t in target.state_dict().items()},
              {n: p.requires_grad for n, p in target.named_parameters()})
    with pytest.raises(vitune.AdapterFileError, match="lora_A' has shape"):
        vitune.load_adapter(target, folder)  # fails after the method was applied
    assert [(n, type(m)) for n, m in target.named_modules()] == before[0]
    assert target.state_dict().keys() == before[1].keys()
    assert all(torch.equal(before[1][n], t) for n, t in target.state_dict().items())
    assert {n: p.requires_grad for n, p in target.named_parameters()} == before[2]
    assert vitune.applied_method(target) is None
    (folder / "adapter_model.safetensors").write_bytes(good)
    vitune.load_adapter(target, folder)
    x = image_batch(model)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_saved_files_follow_the_umask(tmp_path):
    import os

    model = vitune.apply(make_backbone(), "lora")
    old = os.umask(0o027)
    try:
        vitune.save_adapter(model, tmp_path / "ad")
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "ad").iterdir()} == {oct(0o640)}


def test_a_folder_with_sub_folders_is_refused(tmp_path):
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    with pytest.raises(vitune.AdapterFileError, match="holds sub-folders"):
        vitune.save_adapter(vitune.apply(make_backbone(), "lora"), tmp_path / "run")


_SAVER = """
import sys, torch
sys.path.insert(0, {tests!r})
import vitune
from helpers import make_backbone, perturb_trainable
models = []
for seed in (10, 11):
    m = vitune.apply(make_backbone(), "lora")
    perturb_trainable(m, seed=seed)
    models.append(m)
vitune.save_adapter(models[0], {folder!r})
print("ready", flush=True)
i = 0
while True:
    vitune.save_adapter(models[i % 2], {folder!r})
    i += 1
"""


def test_save_killed_at_any_moment_leaves_one_whole_adapter(tmp_path):
    """SIGKILL a process that saves two adapters in turn into one folder; each time, one loads whole."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    expected = []
    for seed in (10, 11):
        m = vitune.apply(make_backbone(), "lora")
        perturb_trainable(m, seed=seed)
        expected.append(m.eval())
    x = image_batch(expected[0])
    with torch.no_grad():
        outputs = [m(x) for m in expected]
    folder = tmp_path / "ad"
    script = _SAVER.format(tests=str(Path(__file__).parent), folder=str(folder))
    for delay in (0.05, 0.23, 0.41):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = vitune.load_adapter(make_backbone(), folder).eval()
        with torch.no_grad():
            got = loaded(x)
        assert any(torch.equal(got, out) for out in outputs)
