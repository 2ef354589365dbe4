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
    with pytest.raises(vitune.AdapterFileError, match="embed_dim=64, this model has embed_dim=96"):
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

    monkeypatch.setattr("vitune.io.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        vitune.save_adapter(model, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file left either


def test_load_into_model_with_method_is_refused(saved):
    _, folder = saved
    with pytest.raises(vitune.AdapterFileError, match="plain backbone"):
        vitune.load_adapter(vitune.apply(make_backbone(), "bitfit"), folder)
