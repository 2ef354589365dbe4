"""The merged export: a timm local-dir folder that plain timm rebuilds, biases added by the merge included."""

import json
import subprocess
import sys

import pytest
import torch

import vitune
from helpers import image_batch, make_backbone, perturb_trainable


@pytest.mark.parametrize("kind,method", [("vit", "lora"), ("noqkvbias", "repadapter"), ("dinov2_reg", "ssf")])
def test_merged_folder_loads_in_plain_timm(tmp_path, kind, method):
    import timm

    model = vitune.apply(make_backbone(kind), method)
    perturb_trainable(model)
    model.eval()
    x = image_batch(model)
    with torch.no_grad():
        expected = model(x)
    vitune.save_merged(vitune.merge(model), tmp_path / "merged")
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    if kind == "noqkvbias":
        assert config["model_args"]["qkv_bias"] is True  # the merge gave qkv a bias the stock model lacks
    plain = timm.create_model(f"local-dir:{tmp_path / 'merged'}", pretrained=True).eval()
    assert type(plain).__module__.startswith("timm.")
    with torch.no_grad():
        assert (plain(x) - expected).abs().max() <= 1e-4


def test_merged_folder_loads_without_vitune(tmp_path):
    """In a fresh interpreter that never imports vitune."""
    model = vitune.apply(make_backbone("noqkvbias"), "kadaptation", n=8)
    perturb_trainable(model)
    model.eval()
    x = image_batch(model)
    with torch.no_grad():
        expected = model(x)
    vitune.save_merged(vitune.merge(model), tmp_path / "m")
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, timm, torch\n"
        f"m = timm.create_model('local-dir:{tmp_path / 'm'}', pretrained=True).eval()\n"
        f"x = torch.load('{tmp_path / 'x.pt'}')\n"
        "with torch.no_grad(): torch.save(m(x), sys.argv[1])\n"
        "assert 'vitune' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.pt")], check=True)
    assert (torch.load(tmp_path / "y.pt") - expected).abs().max() <= 1e-4


def test_save_merged_refuses_an_unmerged_model(tmp_path):
    with pytest.raises(vitune.VituneError, match="still applied; call vitune.merge"):
        vitune.save_merged(vitune.apply(make_backbone(), "lora"), tmp_path)


def test_merged_folder_records_the_training_preprocessing(tmp_path):
    import timm
    from timm.data import resolve_data_config

    model = vitune.merge(vitune.apply(make_backbone(), "lora"))
    vitune.save_merged(model, tmp_path / "m", data_config={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})
    plain = timm.create_model(f"local-dir:{tmp_path / 'm'}", pretrained=True)
    config = resolve_data_config(model=plain)
    assert tuple(config["mean"]) == (0.5, 0.5, 0.5) and tuple(config["std"]) == (0.5, 0.5, 0.5)
